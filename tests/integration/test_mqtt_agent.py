"""A real ``edge-agent run`` process driven end to end through the real Mosquitto."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control.test_mqtt import WAIT_S, Peer, create_request, retained, rid
from tests.fixtures.mosquitto import Broker
from tests.fixtures.ports import free_port, wait_for_port
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

API_TOKEN = "agent-api-token-for-tests"
BROKER_PASSWORD_FILE = "broker-password"


class AgentProcess:
    """``python -m agent run`` with its own state dir, REST port and topic prefix."""

    def __init__(self, tmp_path: Path, broker: Broker) -> None:
        self.node_id = f"node-{uuid.uuid4().hex[:10]}"
        self.prefix = f"it/{self.node_id}"
        self.port = free_port()
        self.config = tmp_path / "agent.toml"
        self.log = tmp_path / "agent.log"
        self.config.write_text(
            f'node_id = "{self.node_id}"\n'
            f'state_dir = "{tmp_path / "state"}"\n'
            "[api]\n"
            f'listen = "127.0.0.1:{self.port}"\n'
            f'token = "{API_TOKEN}"\n'
            "[log]\n"
            'level = "INFO"\nformat = "json"\n'
            "[mqtt]\n"
            f'host = "{broker.host}"\nport = {broker.port}\ntopic_prefix = "{self.prefix}"\n'
            "keepalive_s = 5\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(self.config), "run"],
                                            stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for_port(self.port, timeout=WAIT_S)

    def rest(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"http://127.0.0.1:{self.port}/v2/proj{path}",
                             headers={"X-Auth-Token": API_TOKEN}, timeout=WAIT_S, **kwargs)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(WAIT_S)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(WAIT_S)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(WAIT_S)


@pytest.fixture
def agent(tmp_path: Path, mosquitto: Broker) -> Iterator[AgentProcess]:
    process = AgentProcess(tmp_path, mosquitto)
    yield process
    process.close()


@pytest.fixture
def peer(mosquitto: Broker, agent: AgentProcess) -> Iterator[Peer]:
    made = Peer(mosquitto)
    made.subscribe(f"{agent.prefix}/#")
    made.subscribe(f"reply/{agent.prefix}")
    yield made
    made.close()


def local_request(request_id: str, **changes: Any) -> dict[str, Any]:
    """A create request the real agent accepts, whose input and webhook point at closed loopback ports:
    the task runs (and fails to connect, harmlessly) without anything leaving 127.0.0.1."""
    changes = {"service_version": "1.0", "config__common": {},
               "input__data": [{"url": f"rtsp://127.0.0.1:{free_port()}/none", "index": 0}],
               "output__webhook__url": f"http://127.0.0.1:{free_port()}/hook", **changes}
    return create_request(request_id, **changes)


def presence(broker: Broker, agent: AgentProcess) -> str | None:
    raw = retained(broker, f"{agent.prefix}/status")
    return json.loads(raw)["state"] if raw else None


def call(peer: Peer, agent: AgentProcess, request: dict[str, Any] | bytes) -> dict[str, Any]:
    request_id = request["request_id"] if isinstance(request, dict) else None
    peer.request(agent.prefix, request)
    return peer.answer(f"{agent.prefix}/tasks/response", request_id)


def test_every_op_through_the_broker(mosquitto: Broker, agent: AgentProcess, peer: Peer) -> None:
    agent.start()
    wait_until(lambda: presence(mosquitto, agent) == "online", what="the agent to say online")

    request_id = rid()
    request = local_request(request_id)
    created = call(peer, agent, request)
    assert created["status"] == 200, created
    task_id = created["body"]["tasks"][0]["id"]
    # a redelivered request: the first answer again, and still one task (REST agrees)
    assert call(peer, agent, request) == created
    assert agent.rest("GET", "/tasks").json()["count"] == 1

    state_topic = f"{agent.prefix}/tasks/{task_id}/state"
    state = json.loads(retained(mosquitto, state_topic) or b"null")
    assert state["id"] == task_id and state["service_name"] == "intrusion-detection"

    bad = call(peer, agent, local_request(rid(), input__type="carrier-pigeon"))
    assert bad["status"] == 400 and bad["body"]["params"][0].startswith("input")
    assert bad["body"]["error_code"] in ("VIAS.00010001", "VIAS.00010004")

    shown = call(peer, agent, {"request_id": rid(), "op": "show", "project_id": "proj", "task_id": task_id})
    rest_view = agent.rest("GET", f"/tasks/{task_id}").json()
    stable = ("id", "name", "project_id", "service_name", "created_at", "input", "output", "config")
    assert shown["status"] == 200 and set(shown["body"]) == set(rest_view)  # the running task moves on
    assert {k: shown["body"][k] for k in stable} == {k: rest_view[k] for k in stable}
    listed = call(peer, agent, {"request_id": rid(), "op": "list", "project_id": "proj"})
    rest_list = agent.rest("GET", "/tasks").json()
    assert [t["id"] for t in listed["body"]["tasks"]] == [t["id"] for t in rest_list["tasks"]] == [task_id]
    for op, body in (("stop", None), ("start", None), ("update", {"description": "via mqtt"})):
        request = {"request_id": rid(), "op": op, "project_id": "proj", "task_id": task_id}
        if body is not None:
            request["body"] = body
        assert call(peer, agent, request) == {"request_id": request["request_id"], "status": 200, "body": {}}
    assert agent.rest("GET", f"/tasks/{task_id}").json()["description"] == "via mqtt"

    deleted = call(peer, agent, {"request_id": rid(), "op": "delete", "project_id": "proj", "task_id": task_id})
    assert deleted["status"] == 200
    assert retained(mosquitto, state_topic) is None
    assert agent.rest("GET", f"/tasks/{task_id}").status_code == 404

    assert agent.terminate() == 0  # a clean stop says offline itself
    assert presence(mosquitto, agent) == "offline"


def test_killed_agent_goes_offline_and_applies_what_came_while_it_was_down(
        mosquitto: Broker, agent: AgentProcess, peer: Peer) -> None:
    agent.start()
    wait_until(lambda: presence(mosquitto, agent) == "online", what="the agent to say online")
    agent.kill()
    wait_until(lambda: presence(mosquitto, agent) == "offline", what="the Last Will")

    request_id = rid()  # QoS 1, queued by the broker in the agent's persistent session
    peer.request(agent.prefix, local_request(request_id, name="pushed-while-down"))
    agent.start()
    answer = peer.answer(f"{agent.prefix}/tasks/response", request_id)
    assert answer["status"] == 200
    task_id = answer["body"]["tasks"][0]["id"]
    assert agent.rest("GET", f"/tasks/{task_id}").json()["name"] == "pushed-while-down"
    wait_until(lambda: presence(mosquitto, agent) == "online", what="the agent to say online again")
    assert retained(mosquitto, f"{agent.prefix}/tasks/{task_id}/state") is not None


def test_rest_keeps_working_while_the_broker_is_away(tmp_path: Path, private_mosquitto: Broker) -> None:
    agent = AgentProcess(tmp_path, private_mosquitto)
    try:
        private_mosquitto.stop()
        agent.start()  # no broker at all: the agent still comes up
        created = agent.rest("POST", "/services/intrusion-detection/tasks", json=local_request("x")["body"])
        assert created.status_code == 200, created.text
        task_id = created.json()["tasks"][0]["id"]
        private_mosquitto.start()  # within the first backoff steps (1, 2, 4 s ±20 %)
        wait_until(lambda: retained(private_mosquitto, f"{agent.prefix}/tasks/{task_id}/state"),
                   what="the task state published once the broker is back")
        assert presence(private_mosquitto, agent) == "online"
        assert agent.terminate() == 0
    finally:
        agent.close()
    log = agent.log.read_text()
    assert "cannot reach the broker" in log and API_TOKEN not in log
