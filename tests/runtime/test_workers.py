"""The data plane's worker processes, for real: a worker SIGKILLed under load is contained (its tasks
ABNORMAL, then running again on a replacement, the other worker's tasks delivering meanwhile, every
committed event delivered exactly once); a worker killed again soon after its restart is replaced after a
backoff, its tasks meanwhile on another worker or waiting for it; and a real ``edge-agent run`` with busy
workers stops on SIGTERM within systemd's bound. Live RTSP from the GStreamer server, a real webhook
receiver."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from agent.backoff import BackoffPolicy
from agent.runtime import workers as worker_pool
from agent.runtime.app import AgentRuntime
from agent.settings import AgentSettings
from agent.tasks.errors import ApiError
from agent.tasks.service import TaskChange
from tests.fixtures.agent_process import AgentFactory
from tests.fixtures.ports import free_port
from tests.fixtures.rtsp import RtspServer
from tests.fixtures.webhook import WebhookReceiver
from tests.runtime.test_metrics import scrape, value
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


def start_runtime(tmp_path: Path, runtimes: list[AgentRuntime], workers: int) -> tuple[AgentRuntime, StateLog]:
    settings = AgentSettings(node_id="workers-test", state_dir=tmp_path / "state",
                             api={"listen": f"127.0.0.1:{free_port()}", "token": "t0k3n-workers"},
                             runtime={"workers": workers})
    runtime = AgentRuntime(settings)
    runtimes.append(runtime)
    states = StateLog()
    runtime.service.add_listener(states)
    runtime.start()
    return runtime, states


def idle_task(runtime: AgentRuntime, name: str) -> str:
    """A task whose live input never connects: its pipeline runs (and dies with its worker), decoding nothing."""
    return runtime.service.create("p", "video-quality-diagnosis",
                                  busy_task(f"rtsp://127.0.0.1:9/{name}", "http://127.0.0.1:9/hook", name))


def placed(runtime: AgentRuntime) -> dict[str, int | None]:
    """Task → the worker its running pipeline is on."""
    return {pipeline.task_id: pipeline.worker for pipeline in runtime.supervisor.pipelines()}


def saw(states: StateLog, task_id: str, status: str, after: float = 0.0) -> bool:
    return any(at > after and text == status for at, _, text in states.of(task_id))


def test_a_worker_killed_again_soon_after_its_restart_is_replaced_after_a_backoff_its_tasks_waiting(
        tmp_path: Path, runtimes: list[AgentRuntime], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(worker_pool, "WORKER_RESTART", BackoffPolicy(first_s=6.0, max_s=6.0, jitter=0.0))
    runtime, states = start_runtime(tmp_path, runtimes, workers=1)
    kept, stopped, deleted = (idle_task(runtime, name) for name in ("kept", "stopped", "deleted"))
    wait_until(lambda: placed(runtime) == dict.fromkeys((kept, stopped, deleted), 0), what="three tasks running")
    first = runtime.workers.workers()[0].pid
    assert first is not None

    os.kill(first, signal.SIGKILL)  # a first death: replaced at once, its tasks relaunched at once
    lost = f"worker 0 (pid {first}) was killed by SIGKILL"
    for task in (kept, stopped, deleted):
        wait_until(lambda task=task: saw(states, task, f"{lost}; starting again"), what="the first loss")
    second = wait_until(lambda: (w := runtime.workers.workers()[0]).alive and w.pid != first and len(placed(runtime))
                        == 3 and w.pid, what="the tasks relaunched on the replacement")
    assert runtime.workers.workers()[0].restarts == 1

    killed_at = time.monotonic()
    os.kill(second, signal.SIGKILL)  # dead again within a minute of its start: a crash loop
    lost = f"worker 0 (pid {second}) was killed by SIGKILL"
    for task in (kept, stopped, deleted):  # lost again soon after their relaunch: each waits its own backoff
        wait_until(lambda task=task: saw(states, task, f"{lost}; starting again in 1 s"), what="the second loss")
    # when a task's own wait is over no worker is up: it waits for the replacement, never START_FAILED
    waiting = f"{lost}; no worker process is up; worker 0 starts again in "
    wait_until(lambda: any(text.startswith(waiting) for _, _, text in states.of(kept)), what="kept waiting")
    newcomer = idle_task(runtime, "newcomer")
    wait_until(lambda: any(text.startswith("starting: no worker process is up; worker 0 starts again in ")
                           for _, state, text in states.of(newcomer) if state == "STARTING"),
               what="the new task waiting for a worker")
    runtime.service.stop("p", stopped)
    runtime.service.delete("p", deleted)

    third = wait_until(lambda: (w := runtime.workers.workers()[0]).alive and w.pid != second and w.pid,
                       what="the second replacement")
    assert time.monotonic() - killed_at >= 6.0  # not before its backoff
    assert any("it keeps dying within 60 s of a start: a replacement starts in 6.0 s" in r.getMessage()
               for r in caplog.records)
    wait_until(lambda: set(placed(runtime)) == {kept, newcomer}, what="the waiting tasks running again")
    assert runtime.supervisor.wait_idle()
    assert set(placed(runtime)) == {kept, newcomer}  # what was stopped or deleted while waiting stays so
    assert runtime.service.get("p", stopped).state.value == "STOPPED"
    with pytest.raises(ApiError):
        runtime.service.get("p", deleted)
    assert runtime.workers.workers()[0].pid == third and runtime.workers.workers()[0].restarts == 2


def test_while_a_crash_looping_worker_waits_tasks_go_to_another_and_a_stop_ends_the_wait(
        tmp_path: Path, runtimes: list[AgentRuntime], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_pool, "WORKER_RESTART", BackoffPolicy(first_s=600.0, max_s=600.0, jitter=0.0))
    runtime, states = start_runtime(tmp_path, runtimes, workers=2)
    task = idle_task(runtime, "looping")
    wait_until(lambda: placed(runtime) == {task: 0}, what="the task on worker 0")
    first = runtime.workers.workers()[0].pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    second = wait_until(lambda: placed(runtime) == {task: 0} and (w := runtime.workers.workers()[0]).pid != first
                        and w.alive and w.pid, what="the task relaunched on worker 0's replacement")
    os.kill(second, signal.SIGKILL)
    wait_until(lambda: placed(runtime) == {task: 1}, what="the task on worker 1")  # after its own second of backoff
    slot = runtime.workers.workers()[0]
    assert not slot.alive and slot.restarts == 1 and slot.restart_in is not None and slot.restart_in > 500
    samples, _ = scrape(runtime)
    assert value(samples, "edge_agent_worker_up", worker="0") == 0.0
    assert (value(samples, "edge_agent_worker_restart_backoff_seconds", worker="0") or 0.0) > 500
    assert value(samples, "edge_agent_worker_restart_backoff_seconds", worker="1") == 0.0
    other = idle_task(runtime, "newcomer")  # worker 0 has nothing on it, yet it is not up
    wait_until(lambda: placed(runtime).get(other) == 1, what="the new task on worker 1")

    waiting = [thread for thread in threading.enumerate() if thread.name == "worker-0-receive"]
    assert waiting  # the dead worker's receiving thread waits out the backoff
    runtime.stop()
    wait_until(lambda: not any(thread.is_alive() for thread in waiting), what="the backoff wait ended by the stop")
    assert runtime.workers.workers()[0].restarts == 1  # and no replacement was started
    assert saw(states, task, f"worker 0 (pid {second}) was killed by SIGKILL; starting again in 1 s")


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
    lines = [json.loads(line) for line in agent.log.read_text().splitlines() if line.startswith("{")]
    from_workers = [line for line in lines if line["logger"].startswith("agent.sources.")]
    assert from_workers and all(line["worker"] in (0, 1) for line in from_workers)  # each says which worker
    assert all("worker" not in line for line in lines if line["logger"] == "agent.runtime.workers")
