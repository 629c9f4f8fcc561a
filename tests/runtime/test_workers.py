"""The data plane's worker processes, for real: a worker SIGKILLed under load is contained (its tasks
ABNORMAL, then running again on a replacement, the other worker's tasks delivering meanwhile, every
committed event delivered exactly once), and a real ``edge-agent run`` with busy workers stops on
SIGTERM within systemd's bound. Live RTSP from the GStreamer server, a real webhook receiver."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.app import AgentRuntime
from agent.settings import AgentSettings
from agent.tasks.service import TaskChange
from tests.fixtures.agent_process import AgentFactory
from tests.fixtures.ports import free_port
from tests.fixtures.rtsp import RtspServer
from tests.fixtures.webhook import WebhookReceiver
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def busy_task(url: str, webhook_url: str, name: str) -> dict[str, Any]:
    """An event on every analysed frame (5 a second): every frame is 'dark' below a threshold of 255."""
    return {
        "name": name,
        "input": {"type": "url", "data": [{"url": url}]},
        "output": {"webhook": {"url": webhook_url, "headers": {"X-Test": "workers"}}},
        "config": {"common": {"fps": 5, "checks": ["dark"], "dark_threshold": 255, "min_duration_s": 0,
                              "repeat_s": 0.1}},
        "service_version": "1.0",
    }


class StateLog:
    """Every state a task went through, as the task service told its listeners."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: list[tuple[float, str, str, str]] = []

    def __call__(self, change: TaskChange) -> None:
        if change.record is not None:
            with self._lock:
                self._seen.append((time.monotonic(), change.task_id, change.record.state.value,
                                   change.record.status))

    def of(self, task_id: str) -> list[tuple[float, str, str]]:
        with self._lock:
            return [(at, state, status) for at, task, state, status in self._seen if task == task_id]


def by_task(receiver: WebhookReceiver) -> Counter[str]:
    return Counter(request.json["task_id"] for request in receiver.delivered())


def test_a_killed_worker_is_replaced_and_no_committed_event_is_lost_or_delivered_twice(
        tmp_path: Path, rtsp_h264: RtspServer, webhook_receiver: WebhookReceiver,
        runtimes: list[AgentRuntime]) -> None:
    settings = AgentSettings(node_id="workers-test", state_dir=tmp_path / "state",
                             api={"listen": f"127.0.0.1:{free_port()}", "token": "t0k3n-workers"},
                             runtime={"workers": 2})
    runtime = AgentRuntime(settings)
    runtimes.append(runtime)
    states = StateLog()
    runtime.service.add_listener(states)
    runtime.start()
    # two sources (the credentials tell them apart; the server ignores them): one task per worker
    doomed = runtime.service.create("p", "video-quality-diagnosis",
                                    busy_task(rtsp_h264.url_with("a", "pw-a"), webhook_receiver.url, "doomed"))
    other = runtime.service.create("p", "video-quality-diagnosis",
                                   busy_task(rtsp_h264.url_with("b", "pw-b"), webhook_receiver.url, "other"))
    wait_until(lambda: all(by_task(webhook_receiver)[t] >= 3 for t in (doomed, other)), timeout=60,
               what="events of both tasks")
    workers = {task: runtime.service.show("p", task)["worker"] for task in (doomed, other)}
    assert sorted(workers.values()) == [0, 1]
    victim = next(w for w in runtime.workers.workers() if w.index == workers[doomed])
    assert victim.pid is not None and victim.tasks == (doomed,)

    killed_at = time.monotonic()
    os.kill(victim.pid, signal.SIGKILL)
    abnormal = wait_until(lambda: next((s for s in states.of(doomed) if s[0] > killed_at and s[1] == "ABNORMAL"),
                                       None), what="the doomed task ABNORMAL")
    assert abnormal[0] - killed_at < 2.0  # noticed within the bound
    assert f"pid {victim.pid}" in abnormal[2] and "SIGKILL" in abnormal[2]
    other_before = by_task(webhook_receiver)[other]
    running_again = wait_until(lambda: next((s for s in states.of(doomed) if s[0] > abnormal[0]
                                             and s[1] == "RUNNING"), None), timeout=60, what="RUNNING again")
    doomed_then = by_task(webhook_receiver)[doomed]
    wait_until(lambda: by_task(webhook_receiver)[doomed] >= doomed_then + 3, timeout=60,
               what="events of the restarted task")
    assert by_task(webhook_receiver)[other] > other_before  # the other worker kept delivering
    replacement = next(w for w in runtime.workers.workers() if w.index == workers[doomed])
    assert replacement.pid != victim.pid and replacement.restarts == 1 and replacement.alive
    assert running_again[0] > abnormal[0]

    runtime.service.stop("p", doomed)
    runtime.service.stop("p", other)
    wait_until(lambda: runtime.supervisor.pipelines() == [], what="both tasks stopped")
    wait_until(lambda: runtime.router.status().sink("webhook").backlog == 0, what="the outbox drained")
    delivered = webhook_receiver.delivered()
    ids = Counter(request.json["message_id"] for request in delivered)
    assert ids.most_common(1)[0][1] == 1  # no message twice
    frames = Counter((r.json["task_id"], r.json["frame"]["captured_at_ms"]) for r in delivered)
    assert frames.most_common(1)[0][1] == 1  # no frame's event committed twice
    sink = runtime.router.status().sink("webhook")
    assert sink.delivered == len(delivered) and sink.dead_letters == 0  # every committed event arrived


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


def test_sigterm_stops_an_agent_with_busy_workers_within_the_bound(
        agent_factory: AgentFactory, rtsp_h264: RtspServer, webhook_receiver: WebhookReceiver) -> None:
    agent = agent_factory("[runtime]\nworkers = 2\n")
    assert agent.process is not None
    with agent.client() as client:
        tasks = []
        for number in range(4):
            body = busy_task(rtsp_h264.url_with(f"u{number}", "pw"), webhook_receiver.url, f"busy-{number}")
            response = client.post("/v2/p/services/video-quality-diagnosis/tasks", json=body)
            assert response.status_code == 200, response.text
            tasks.append(response.json()["tasks"][0]["id"])

        def running() -> bool:
            return all(client.get(f"/v2/p/tasks/{task}").json()["state"] == "RUNNING" for task in tasks)

        wait_until(running, timeout=60, what="four tasks RUNNING")
    webhook_receiver.wait_for(8, timeout=60)
    children = _descendants(agent.process.pid)
    assert len(children) >= 2  # the two workers (and the forkserver they fork from)
    started = time.monotonic()
    assert agent.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10.0  # systemd's TimeoutStopSec
    wait_until(lambda: not any(Path(f"/proc/{child}").exists() for child in children), timeout=5,
               what="every worker process gone")
