"""The whole agent as users run it: a real ``edge-agent run`` process, real Mosquitto, a real GStreamer
RTSP camera and a real webhook receiver. Tasks come in over MQTT, events go out to both outputs."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.control.test_mqtt import Peer
from tests.fixtures.agent_process import AgentFactory, AgentProcess
from tests.fixtures.mosquitto import Broker
from tests.fixtures.rtsp import RtspServer
from tests.fixtures.webhook import WebhookReceiver
from tests.runtime.scenes import intrusion_clip, intrusion_task
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

WAIT_S = 60.0  # a loaded 2-core box: generous, never a timing assertion



@pytest.fixture
def peer(mosquitto: Broker) -> Iterator[Peer]:
    client = Peer(mosquitto)
    yield client
    client.close()


def mqtt_agent(agent_factory: AgentFactory, broker: Broker, prefix: str) -> AgentProcess:
    return agent_factory(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\ntopic_prefix = "{prefix}"\nkeepalive_s = 5\n'
        '[stream]\nstall_timeout_s = 4.0\nopen_timeout_s = 3.0\nread_timeout_s = 3.0\n'
    )


def task_state(agent: AgentProcess, task_id: str) -> dict[str, Any]:
    with agent.client() as client:
        shown: dict[str, Any] = client.get(f"/v2/p1/tasks/{task_id}").json()
    return shown


def test_mqtt_task_on_an_rtsp_camera_survives_restarts_and_outages(
        tmp_path: Path, mosquitto: Broker, peer: Peer, agent_factory: AgentFactory,
        rtsp_server: Callable[..., RtspServer], webhook_receiver: WebhookReceiver) -> None:
    # the camera replays a walk into the zone on every connection (the file ends: the agent reconnects)
    camera = rtsp_server(file=intrusion_clip(tmp_path / "walk.mp4", seconds=5.0))
    prefix = f"e2e/{uuid.uuid4().hex[:8]}"
    peer.subscribe(f"{prefix}/#")
    agent = mqtt_agent(agent_factory, mosquitto, prefix)

    body = intrusion_task(camera.url, webhook_receiver.url, event_center=True, name="gate")
    peer.request(prefix, {"request_id": "create-1", "op": "create", "project_id": "p1",
                          "service_name": "intrusion-detection", "body": body})
    answer = peer.answer(f"{prefix}/tasks/response", "create-1")
    assert answer["status"] == 200, answer
    task_id = answer["body"]["tasks"][0]["id"]

    hooks = webhook_receiver.wait_for(1, timeout=WAIT_S)
    assert hooks[0].json["task_id"] == task_id and hooks[0].json["event_type"] == 196609
    event = peer.wait_for(lambda m: m.topic == f"{prefix}/events/{task_id}", what="an event on MQTT")
    assert json.loads(event.payload)["task_id"] == task_id
    state = peer.wait_for(lambda m: m.topic == f"{prefix}/tasks/{task_id}/state" and m.retain is not None
                          and bool(m.payload) and json.loads(m.payload)["state"] == "RUNNING",
                          what="retained RUNNING state")
    assert json.loads(state.payload)["inputs"][0]["index"] == 0

    # restart the agent: the task resumes by itself and analyses again
    agent.stop()
    before = len(webhook_receiver.delivered())
    agent.start()
    wait_until(lambda: task_state(agent, task_id)["state"] == "RUNNING", what="RUNNING after restart")
    wait_until(lambda: len(webhook_receiver.delivered()) > before, what="events after restart")

    # the camera dies: the task says so; it comes back: RUNNING and events again, same task, no new config
    camera.stop()
    shown = wait_until(lambda: (s := task_state(agent, task_id))["state"] == "ABNORMAL" and s,
                       what="ABNORMAL while the camera is down")
    assert shown["inputs"][0]["state"] in ("RECONNECTING", "STALLED")
    assert "input 0" in shown["status"]
    camera.start()
    wait_until(lambda: task_state(agent, task_id)["state"] == "RUNNING", what="RUNNING after the outage")
    before = len(webhook_receiver.delivered())
    wait_until(lambda: len(webhook_receiver.delivered()) > before, what="events after the outage")
    assert task_state(agent, task_id)["inputs"][0]["reconnects"] >= 1


def _noon_offset(now: datetime) -> tuple[str, datetime]:
    """A UTC offset at which ``now`` is mid-day, so a window a few seconds ahead never crosses midnight."""
    hours = (12 - now.hour) % 24
    if hours > 14:
        hours -= 24
    local = now + timedelta(hours=hours)
    sign = "+" if hours >= 0 else "-"
    return f"{sign}{abs(hours):02d}:00", local


def test_scheduled_task_starts_and_stops_on_time(
        tmp_path: Path, mosquitto: Broker, agent_factory: AgentFactory, rtsp_h264: RtspServer,
        webhook_receiver: WebhookReceiver) -> None:
    agent = agent_factory()
    now = datetime.now(UTC)
    timezone, local = _noon_offset(now)
    begin, end = local + timedelta(seconds=12), local + timedelta(seconds=30)
    body = intrusion_task(rtsp_h264.url, webhook_receiver.url, name="scheduled")
    periods: list[list[dict[str, str]]] = [[] for _ in range(7)]
    periods[local.isoweekday() - 1] = [{"begin_at": begin.strftime("%H:%M:%S"), "end_at": end.strftime("%H:%M:%S")}]
    body["schedule"] = {"type": "weekly", "timezone": timezone, "days_of_week": [local.isoweekday()],
                        "periods": periods}
    with agent.client() as client:
        response = client.post("/v2/p1/services/intrusion-detection/tasks", json=body)
        assert response.status_code == 200, response.text
        task_id = response.json()["tasks"][0]["id"]
    shown = wait_until(lambda: (s := task_state(agent, task_id))["schedule_status"] and s, what="WAITING")
    assert shown["state"] == "STOPPED" and shown["schedule_status"]["status"] == "WAITING"
    start_at = datetime.fromisoformat(shown["schedule_status"]["next_start"])
    assert abs((start_at - (now + timedelta(seconds=12))).total_seconds()) < 1.5
    wait_until(lambda: task_state(agent, task_id)["state"] == "RUNNING", what="RUNNING inside the window")
    assert datetime.now(UTC) >= start_at - timedelta(seconds=1)
    wait_until(lambda: task_state(agent, task_id)["state"] == "STOPPED", what="STOPPED after the window")
    assert datetime.now(UTC) >= now + timedelta(seconds=29)
    assert task_state(agent, task_id)["schedule_status"]["status"] == "WAITING"


def test_sigterm_stops_a_busy_agent_cleanly_within_systemds_window(
        agent_factory: AgentFactory, rtsp_h264: RtspServer, webhook_receiver: WebhookReceiver) -> None:
    agent = agent_factory()
    with agent.client() as client:
        for index in range(3):
            body = intrusion_task(rtsp_h264.url, webhook_receiver.url, name=f"busy-{index}")
            assert client.post("/v2/p1/services/intrusion-detection/tasks", json=body).status_code == 200
        wait_until(lambda: all(t["state"] == "RUNNING" for t in client.get("/v2/p1/tasks").json()["tasks"]),
                   what="three RUNNING tasks")
    assert agent.process is not None
    started = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - started < 10.0  # systemd's default stop timeout; the unit allows 15 s
    log = agent.log.read_text()
    assert "edge-agent stopped" in log and "Traceback" not in log
