"""The MQTT control channel in-process against the real Mosquitto: every op, errors, state, presence."""

from __future__ import annotations

import getpass
import json
import logging
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.backoff import MQTT_RECONNECT, Backoff
from agent.control.mqtt import MqttControl
from agent.settings import AgentSettings, MqttSettings
from agent.tasks.service import TaskService
from agent.tasks.store import TaskStore
from tests.fixtures.mosquitto import Broker
from tests.tasks.examples import DOC_URL, body
from tests.waiting import wait_until

WAIT_S = 15.0  # generous: a loaded 2-core box



class Peer:
    """A management-side MQTT client: sends requests, collects every message it sees."""

    def __init__(self, broker: Broker, *, protocol: str = "5") -> None:
        self.v5 = protocol == "5"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"peer-{uuid.uuid4().hex[:12]}",
                                  protocol=MQTTProtocolVersion.MQTTv5 if self.v5 else MQTTProtocolVersion.MQTTv311)
        self.messages: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subacks: set[int] = set()
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda _c, _u, mid, _r, _p: self._subacks.add(mid)
        self.client.connect(broker.host, broker.port, 30)
        self.client.loop_start()
        wait_until(self.client.is_connected, what="the peer to connect")

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(message)

    def subscribe(self, topic: str, qos: int = 1) -> None:
        _, mid = self.client.subscribe(topic, qos)
        wait_until(lambda: mid in self._subacks, what=f"SUBACK for {topic}")

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                properties: Properties | None = None) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain, properties=properties).wait_for_publish(WAIT_S)

    def request(self, prefix: str, payload: dict[str, Any] | bytes, *, response_topic: str | None = None,
                correlation: bytes | None = None) -> None:
        raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        properties = None
        if response_topic is not None or correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                properties.ResponseTopic = response_topic
            if correlation is not None:
                properties.CorrelationData = correlation
        self.publish(f"{prefix}/tasks/request", raw, properties=properties)

    def wait_for(self, match: Callable[[mqtt.MQTTMessage], bool], what: str = "a message") -> mqtt.MQTTMessage:
        def found() -> mqtt.MQTTMessage | None:
            with self._lock:
                return next((m for m in self.messages if match(m)), None)

        result: mqtt.MQTTMessage = wait_until(found, what=what)
        return result

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def answer(self, topic: str, request_id: str | None) -> dict[str, Any]:
        message = self.wait_for(lambda m: m.topic == topic and bool(m.payload)
                                and json.loads(m.payload).get("request_id") == request_id,
                                what=f"the answer to {request_id} on {topic}")
        answer: dict[str, Any] = json.loads(message.payload)
        return answer

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(broker: Broker, topic: str) -> bytes | None:
    """The retained message a new subscriber of ``topic`` receives now, or None.

    No sleeping: the broker sends retained messages right after the SUBACK, so once a marker
    published afterwards on another topic has come back, any retained message is in."""
    peer = Peer(broker)
    try:
        marker = f"marker/{uuid.uuid4().hex}"
        peer.subscribe(marker)
        peer.subscribe(topic)
        peer.publish(marker, b"m")
        peer.wait_for(lambda m: m.topic == marker, what="the marker")
        found = [m.payload for m in peer.on(topic) if m.retain]
        return found[-1] if found else None
    finally:
        peer.close()


def make_settings(tmp_path: Path, broker: Broker, **mqtt_settings: Any) -> AgentSettings:
    node = uuid.uuid4().hex[:10]
    mqtt_settings.setdefault("topic_prefix", f"test/{node}")
    return AgentSettings(node_id=f"node-{node}", state_dir=tmp_path,
                         mqtt=MqttSettings(host=broker.host, port=broker.port, **mqtt_settings))


class Harness:
    def __init__(self, tmp_path: Path, broker: Broker, **mqtt_settings: Any) -> None:
        self.broker = broker
        self.settings = make_settings(tmp_path, broker, **mqtt_settings)
        self.prefix = self.settings.topic_prefix
        self.store = TaskStore(tmp_path)
        self.service = TaskService(self.store, max_tasks=100, max_inputs=1000)
        self.peer = Peer(broker)
        self.peer.subscribe(f"{self.prefix}/#")
        self.peer.subscribe(f"reply/{self.prefix}")
        self.control = MqttControl(self.settings, self.service, started_at=1234.5)
        self.control.start()
        wait_until(lambda: self.control.connected, what="the control channel to connect")

    def call(self, request: dict[str, Any] | bytes, request_id: str | None = None) -> dict[str, Any]:
        """Send with a v5 Response Topic + Correlation Data; return the answer."""
        correlation = uuid.uuid4().bytes
        topic = f"reply/{self.prefix}"
        self.peer.request(self.prefix, request, response_topic=topic, correlation=correlation)
        message = self.peer.wait_for(lambda m: m.topic == topic and m.properties is not None
                                     and getattr(m.properties, "CorrelationData", None) == correlation,
                                     what=f"the answer to {request_id or request!r:.60}")
        answer: dict[str, Any] = json.loads(message.payload)
        if request_id is not None:
            assert answer["request_id"] == request_id
        return answer

    def close(self) -> None:
        self.control.stop(timeout=5)
        self.peer.close()
        self.store.close()


@pytest.fixture
def harness(tmp_path: Path, mosquitto: Broker) -> Iterator[Harness]:
    made = Harness(tmp_path, mosquitto)
    yield made
    made.close()


def rid() -> str:
    return f"r-{uuid.uuid4().hex}"


def create_request(request_id: str, **changes: Any) -> dict[str, Any]:
    return {"request_id": request_id, "op": "create", "project_id": "proj",
            "service_name": "intrusion-detection", "body": body(DOC_URL, **changes)}


# the ops ------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_every_op_answers_like_rest(harness: Harness) -> None:
    first = rid()
    created = harness.call(create_request(first), first)
    assert created["status"] == 200
    task_id = created["body"]["tasks"][0]["id"]
    assert len(task_id) == 32

    shown = harness.call({"request_id": rid(), "op": "show", "project_id": "proj", "task_id": task_id})
    assert shown["status"] == 200 and shown["body"] == harness.service.show("proj", task_id)
    assert shown["body"]["output"]["webhook"]["headers"] == {"AA": "***"}  # masked, as REST shows it

    listed = harness.call({"request_id": rid(), "op": "list", "project_id": "proj",
                           "body": {"task_name": "alg", "page_size": 5}})
    assert listed["status"] == 200 and listed["body"]["count"] == 1 and listed["body"]["page_size"] == 5

    for op in ("stop", "start"):
        answer = harness.call({"request_id": rid(), "op": op, "project_id": "proj", "task_id": task_id})
        assert (answer["status"], answer["body"]) == (200, {})
    assert harness.service.show("proj", task_id)["desired_state"] == "RUNNING"

    updated = harness.call({"request_id": rid(), "op": "update", "project_id": "proj", "task_id": task_id,
                            "body": {"description": "moved"}})
    assert (updated["status"], updated["body"]) == (200, {})
    assert harness.service.show("proj", task_id)["description"] == "moved"

    deleted = harness.call({"request_id": rid(), "op": "delete", "project_id": "proj", "task_id": task_id})
    assert (deleted["status"], deleted["body"]) == (200, {})
    missing = harness.call({"request_id": rid(), "op": "show", "project_id": "proj", "task_id": task_id})
    assert missing["status"] == 404 and missing["body"]["error_code"] == "VIAS.00010007"


@pytest.mark.integration
def test_retained_state_follows_the_task_and_clears_on_delete(harness: Harness) -> None:
    task_id = harness.call(create_request(rid()))["body"]["tasks"][0]["id"]
    topic = f"{harness.prefix}/tasks/{task_id}/state"
    state = json.loads(retained(harness.broker, topic) or b"null")
    assert state["id"] == task_id and state["state"] == "PENDING" and state["inputs"] == []
    assert {"name", "service_name", "status", "updated_at"} <= set(state)

    harness.service.report(task_id, inputs=[{"index": 0, "state": "RUNNING", "fps": 5.0, "reconnects": 0,
                                             "last_error": None}])
    harness.peer.wait_for(lambda m: m.topic == topic and bool(m.payload)
                          and json.loads(m.payload)["inputs"] != [], what="the runtime state")
    assert json.loads(retained(harness.broker, topic) or b"null")["inputs"][0]["fps"] == 5.0

    harness.call({"request_id": rid(), "op": "delete", "project_id": "proj", "task_id": task_id})
    harness.peer.wait_for(lambda m: m.topic == topic and m.payload == b"", what="the clearing message")
    assert retained(harness.broker, topic) is None


@pytest.mark.integration
def test_duplicate_request_gets_the_first_answer_and_creates_nothing(harness: Harness) -> None:
    request_id = rid()
    first = harness.call(create_request(request_id), request_id)
    again = harness.call(create_request(request_id), request_id)
    assert first == again and first["status"] == 200
    assert harness.service.list_tasks("proj")["count"] == 1
    # refused first answers are remembered too: the id names one request, whatever comes later
    bad_id = rid()
    refused = harness.call(create_request(bad_id, name="bad name!"), bad_id)
    assert refused["status"] == 400 and refused["body"]["params"] == ["name"]
    assert harness.call(create_request(bad_id), bad_id) == refused


@pytest.mark.integration
@pytest.mark.parametrize(("request_body", "field"), [
    ({"op": "create", "project_id": "proj", "service_name": "s", "body": {"name": "x"}}, "input"),
    ({"op": "launch", "project_id": "proj"}, "op"),
    ({"project_id": "proj"}, "op"),
    ({"op": "show", "project_id": 7, "task_id": "a" * 32}, "project_id"),
    ({"op": "show", "project_id": "proj"}, "task_id"),
    ({"op": "create", "project_id": "proj", "body": {}}, "service_name"),
    ({"op": "list", "project_id": "proj", "body": {"page": "1"}}, "body.page"),
    ({"op": "list", "project_id": "proj", "body": [1]}, "body"),
    ({"op": "update", "project_id": "proj", "task_id": "a" * 32, "body": "x"}, "body"),
])
def test_bad_requests_get_400_naming_the_field(harness: Harness, request_body: dict[str, Any],
                                                field: str) -> None:
    request_id = rid()
    answer = harness.call({"request_id": request_id, **request_body}, request_id)
    assert answer["status"] == 400, answer
    assert answer["body"]["params"] == [field]
    assert answer["body"]["error_code"] in ("VIAS.00010001", "VIAS.00010004")


@pytest.mark.integration
def test_malformed_payloads_never_stop_the_channel(harness: Harness) -> None:
    # not JSON, but a request id can be read: 400 for it
    broken_id = rid()
    broken = harness.call(f'{{"request_id": "{broken_id}", "op": '.encode(), broken_id)
    assert broken["status"] == 400 and broken["body"]["params"] == ["body"]
    # oversized: refused before parsing, still answered by request id
    big_id = rid()
    big = harness.call(json.dumps({"request_id": big_id, "pad": "x" * (1 << 20)}).encode(), big_id)
    assert big["status"] == 400 and big["body"]["params"] == ["payload"]
    # no readable request id, but v5 Correlation Data: answered with request_id null
    for payload in (b"\xff\xfe", b"[1, 2]", b'{"request_id": 5}', b'{"op": "list"}'):
        nameless = harness.call(payload)
        assert nameless["status"] == 400 and nameless["request_id"] is None
    # a Response Topic alone (mosquitto_rr sends no Correlation Data) is a reply channel too
    bare = f"reply/{harness.prefix}/bare"
    harness.peer.subscribe(bare)
    harness.peer.request(harness.prefix, b"{", response_topic=bare)
    assert harness.peer.answer(bare, None)["body"]["params"] == ["body"]
    # no request id and no correlation data: logged only, and the next request is still answered
    plain = f"{harness.prefix}/tasks/response"
    harness.peer.request(harness.prefix, b"not json at all")
    after = rid()
    harness.peer.request(harness.prefix, {"request_id": after, "op": "list", "project_id": "proj"})
    assert harness.peer.answer(plain, after)["status"] == 200
    assert [json.loads(m.payload)["request_id"] for m in harness.peer.on(plain)] == [after]


@pytest.mark.integration
def test_answers_go_to_the_response_topic_without_v5_properties(harness: Harness) -> None:
    request_id = rid()
    harness.peer.request(harness.prefix, {"request_id": request_id, "op": "list", "project_id": "proj"})
    answer = harness.peer.answer(f"{harness.prefix}/tasks/response", request_id)
    assert answer == {"request_id": request_id, "status": 200,
                      "body": {"count": 0, "tasks": [], "page": 0, "page_size": 100}}


@pytest.mark.integration
def test_presence_online_then_offline_on_clean_stop(tmp_path: Path, mosquitto: Broker) -> None:
    harness = Harness(tmp_path, mosquitto)
    topic = harness.control.status_topic
    try:
        online = json.loads(retained(mosquitto, topic) or b"null")
        assert online == {"state": "online", "node_id": harness.settings.node_id, "version": online["version"],
                          "started_at": 1234.5}
    finally:
        harness.close()
    assert not harness.control.connected
    assert json.loads(retained(mosquitto, topic) or b"null")["state"] == "offline"


@pytest.mark.integration
def test_control_token_is_required_when_configured(tmp_path: Path, mosquitto: Broker,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    harness = Harness(tmp_path, mosquitto, control_token="tok-very-secret-1")
    try:
        for token in (None, "wrong", 5):
            request_id = rid()
            request: dict[str, Any] = {"request_id": request_id, "op": "list", "project_id": "proj"}
            if token is not None:
                request["token"] = token
            answer = harness.call(request, request_id)
            assert answer["status"] == 401 and answer["body"]["error_code"] == "VIAS.00010005"
        # a refused request id is not burnt: the same id with the token succeeds
        request_id = rid()
        request = create_request(request_id, output__webhook__headers={"Authorization": "Bearer hdr-secret-9"})
        assert harness.call(request, request_id)["status"] == 401
        assert harness.call({**request, "token": "tok-very-secret-1"}, request_id)["status"] == 200
    finally:
        harness.close()
    assert "tok-very-secret-1" not in caplog.text and "hdr-secret-9" not in caplog.text
    assert "answered 200" in caplog.text  # the log was captured at all


@pytest.mark.integration
def test_mqtt_311_with_persistent_session(tmp_path: Path, mosquitto: Broker) -> None:
    harness = Harness(tmp_path, mosquitto, protocol="3.1.1")
    try:
        request_id = rid()
        harness.peer.request(harness.prefix, create_request(request_id))
        answer = harness.peer.answer(f"{harness.prefix}/tasks/response", request_id)
        assert answer["status"] == 200
        task_id = answer["body"]["tasks"][0]["id"]
        assert retained(mosquitto, f"{harness.prefix}/tasks/{task_id}/state") is not None
        harness.control.stop(timeout=5)
        # queued by the broker for the agent's session while it is away
        queued = rid()
        harness.peer.request(harness.prefix, {"request_id": queued, "op": "delete", "project_id": "proj",
                                              "task_id": task_id})
        harness.control = MqttControl(harness.settings, harness.service, started_at=1.0)
        harness.control.start()
        assert harness.peer.answer(f"{harness.prefix}/tasks/response", queued)["status"] == 200
        assert harness.service.list_tasks("proj")["count"] == 0
    finally:
        harness.close()


@pytest.mark.integration
def test_broker_outage_reconnects_and_republishes(tmp_path: Path, private_mosquitto: Broker) -> None:
    harness = Harness(tmp_path, private_mosquitto)
    try:
        task_id = harness.call(create_request(rid()))["body"]["tasks"][0]["id"]
        harness.peer.close()
        private_mosquitto.stop()  # persistence is off: the restarted broker has no retained state
        wait_until(lambda: not harness.control.connected, what="the channel to notice the outage")
        # the service (what REST calls) keeps working without the broker
        other = harness.service.create("proj", "intrusion-detection", body(DOC_URL, name="while-away"))
        harness.service.delete("proj", task_id)
        private_mosquitto.start()
        wait_until(lambda: harness.control.connected, what="the channel to reconnect")
        assert harness.control.status().connects == 2
        harness.peer = Peer(private_mosquitto)
        wait_until(lambda: retained(private_mosquitto, f"{harness.prefix}/tasks/{other}/state"),
                   what="the republished state")
        assert retained(private_mosquitto, f"{harness.prefix}/tasks/{task_id}/state") is None
        assert json.loads(retained(private_mosquitto, harness.control.status_topic) or b"null")["state"] == "online"
    finally:
        harness.close()


@pytest.mark.integration
def test_stale_retained_state_of_a_deleted_task_is_cleared(tmp_path: Path, mosquitto: Broker) -> None:
    settings = make_settings(tmp_path, mosquitto)
    ghost = f"{settings.topic_prefix}/tasks/{'f' * 32}/state"
    publisher = Peer(mosquitto)
    publisher.publish(ghost, b'{"id": "ffff"}', retain=True)
    publisher.close()
    assert retained(mosquitto, ghost) is not None
    store = TaskStore(tmp_path)
    control = MqttControl(settings, TaskService(store), started_at=0.0)
    control.start()
    try:
        wait_until(lambda: retained(mosquitto, ghost) is None, what="the stale state to be cleared")
    finally:
        control.stop(timeout=5)
        store.close()


@pytest.mark.integration
def test_unreachable_broker_does_not_block_start_or_stop(tmp_path: Path) -> None:
    from tests.fixtures.ports import free_port

    broker = Broker("127.0.0.1", free_port(), tmp_path / "unused.conf")
    settings = make_settings(tmp_path, broker)
    store = TaskStore(tmp_path)
    control = MqttControl(settings, TaskService(store), started_at=0.0)
    started = time.monotonic()
    control.start()
    wait_until(lambda: control.status().last_error is not None, what="a failed connect")
    assert not control.connected and "cannot reach the broker" in (control.status().last_error or "")
    control.stop(timeout=5)
    store.close()
    assert time.monotonic() - started < 10


def _tls_broker(tmp: Path) -> Broker:
    """Mosquitto with TLS (client certificates required) and a password file, certificates made here."""
    from tests.fixtures.ports import free_port

    def run(*args: str) -> None:
        subprocess.run(args, cwd=tmp, check=True, capture_output=True)

    key = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("openssl", "req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=test-ca")
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("openssl", "req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("openssl", "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", "san.ext")
    run("mosquitto_passwd", "-b", "-c", "passwd", "agent", "broker-pass-77")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\ncafile {tmp}/ca.crt\ncertfile {tmp}/server.crt\n"
                    f"keyfile {tmp}/server.key\nrequire_certificate true\nallow_anonymous false\n"
                    f"password_file {tmp}/passwd\npersistence false\nlog_type none\n"
                    # as root Mosquitto drops to user "mosquitto", who cannot read pytest's 0700 tmp dir
                    f"user {getpass.getuser()}\n")
    broker = Broker("127.0.0.1", port, conf)
    broker.start()
    return broker


@pytest.mark.integration
def test_tls_with_client_certificate_and_password_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    broker = _tls_broker(tmp_path)
    (tmp_path / "password").write_text("broker-pass-77\n")
    (tmp_path / "wrong").write_text("not-the-pass-88\n")
    tls = {"ca_file": tmp_path / "ca.crt", "cert_file": tmp_path / "client.crt", "key_file": tmp_path / "client.key"}
    controls: list[tuple[MqttControl, TaskStore]] = []
    try:
        for password_file in ("password", "wrong"):
            state = tmp_path / f"state-{password_file}"
            settings = make_settings(state, broker, username="agent", password_file=tmp_path / password_file,
                                     tls=tls)
            store = TaskStore(state)
            control = MqttControl(settings, TaskService(store), started_at=0.0)
            controls.append((control, store))
            control.start()
        good, bad = controls[0][0], controls[1][0]
        wait_until(lambda: good.connected, what="the TLS connection")
        wait_until(lambda: "refused" in (bad.status().last_error or ""), what="the refusal")
        assert not bad.connected and "Not authorized" in (bad.status().last_error or "")
    finally:
        for control, store in controls:
            control.stop(timeout=5)
            store.close()
        broker.stop()
    assert "broker-pass-77" not in caplog.text and "not-the-pass-88" not in caplog.text


# pieces without a broker -----------------------------------------------------------------------
def test_reconnect_backoff_doubles_from_1_s_to_60_s_with_bounded_jitter() -> None:
    middle = Backoff(MQTT_RECONNECT, rng=lambda: 0.5)
    assert [middle.next() for _ in range(8)] == [1, 2, 4, 8, 16, 32, 60, 60]
    middle.reset()
    assert middle.next() == 1
    low, high = Backoff(MQTT_RECONNECT, rng=lambda: 0.0), Backoff(MQTT_RECONNECT, rng=lambda: 1.0)
    assert [round(low.next(), 6) for _ in range(3)] == [0.8, 1.6, 3.2]
    assert [round(high.next(), 6) for _ in range(3)] == [1.2, 2.4, 4.8]
    spread = {round(Backoff(MQTT_RECONNECT).next(), 3) for _ in range(50)}
    assert len(spread) > 1 and all(0.8 <= delay <= 1.2 for delay in spread)
