"""deploy/mosquitto-bridge.conf between two real Mosquitto brokers: a box's local one and a central one.

The bridge section is taken from the example as shipped; only what cannot run in a test changes:
the address points at the central broker's free loopback port, the TLS lines go, NODE_ID is filled.
"""

from __future__ import annotations

import queue
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.fixtures.mosquitto import Broker
from tests.fixtures.ports import free_port

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto-bridge.conf"
TLS_KEYS = ("bridge_cafile", "bridge_certfile", "bridge_keyfile", "bridge_tls_version", "bridge_insecure")
NODE = "box-17"


def bridge_section(central: Broker, node_id: str) -> str:
    """The example's directives with the test's address, no TLS, and the node id filled in."""
    lines = []
    for raw in EXAMPLE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line.startswith(TLS_KEYS):
            continue
        if line.startswith("address "):
            line = f"address {central.host}:{central.port}"
        elif line.startswith("restart_timeout "):
            line = "restart_timeout 1 2"  # reconnect quickly should the first attempt race the listener
        lines.append(line.replace("NODE_ID", node_id))
    return "\n".join(lines) + "\n"


@dataclass
class Subscriber:
    client: mqtt.Client
    messages: queue.Queue[mqtt.MQTTMessage]

    def next(self, timeout: float = 15.0) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=timeout)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(broker: Broker, *topics: str) -> Subscriber:
    messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"test-{uuid.uuid4().hex[:8]}")
    client.on_message = lambda _c, _u, message: messages.put(message)
    client.on_subscribe = lambda *_: subscribed.put(True)
    client.connect(broker.host, broker.port)
    client.loop_start()
    for topic in topics:
        client.subscribe(topic, qos=1)
        subscribed.get(timeout=10)
    return Subscriber(client, messages)


@pytest.fixture
def brokers(private_mosquitto: Broker, tmp_path: Path) -> Iterator[tuple[Broker, Broker]]:
    """(edge, central): the edge broker runs the bridge to the central one."""
    central = private_mosquitto
    port = free_port()
    conf = tmp_path / "edge.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_type none\n\n"
        + bridge_section(central, NODE)
    )
    edge = Broker("127.0.0.1", port, conf)
    edge.start()
    yield edge, central
    edge.stop()


@pytest.fixture
def clients(brokers: tuple[Broker, Broker]) -> Iterator[tuple[Subscriber, Subscriber]]:
    edge, central = brokers
    at_central = connect(central, f"edge-agent/{NODE}/#", "edge-agent/other-box/#")
    # The bridge announces itself on the central broker: from then on both directions are up.
    announced = at_central.next()
    assert (announced.topic, announced.payload) == (f"edge-agent/{NODE}/bridge/state", b"1")
    at_edge = connect(edge, f"edge-agent/{NODE}/tasks/request", "edge-agent/other-box/tasks/request")
    yield at_edge, at_central
    for subscriber in (at_edge, at_central):
        subscriber.close()


def test_example_keeps_tls_and_names_every_agent_topic() -> None:
    directives = [line.strip() for line in EXAMPLE.read_text().splitlines() if line.strip()[:1] not in ("", "#")]
    assert "bridge_insecure false" in directives
    assert any(line.startswith("bridge_cafile ") for line in directives)
    assert [line for line in directives if line.startswith("topic ")] == [
        "topic edge-agent/NODE_ID/events/# out 1",
        "topic edge-agent/NODE_ID/tasks/+/state out 1",
        "topic edge-agent/NODE_ID/tasks/response out 1",
        "topic edge-agent/NODE_ID/status out 1",
        "topic edge-agent/NODE_ID/tasks/request in 1",
    ]


def test_events_state_and_status_reach_the_central_broker(clients: tuple[Subscriber, Subscriber]) -> None:
    at_edge, at_central = clients
    at_edge.publish(f"edge-agent/{NODE}/events/task-1", b'{"event_type": "intrusion"}')
    event = at_central.next()
    assert (event.topic, event.payload) == (f"edge-agent/{NODE}/events/task-1", b'{"event_type": "intrusion"}')

    at_edge.publish(f"edge-agent/{NODE}/tasks/task-1/state", b'{"state": "RUNNING"}', retain=True)
    state = at_central.next()
    assert (state.topic, state.payload) == (f"edge-agent/{NODE}/tasks/task-1/state", b'{"state": "RUNNING"}')


def test_retained_status_is_retained_centrally(
    brokers: tuple[Broker, Broker], clients: tuple[Subscriber, Subscriber]
) -> None:
    _, central = brokers
    at_edge, at_central = clients
    at_edge.publish(f"edge-agent/{NODE}/status", b"online", retain=True)
    assert at_central.next().payload == b"online"
    # A dashboard that connects later still learns the box's presence.
    late = connect(central, f"edge-agent/{NODE}/status")
    try:
        message = late.next()
        assert (message.payload, message.retain) == (b"online", True)
    finally:
        late.close()


def test_requests_for_this_box_come_in_and_no_other_box_s(clients: tuple[Subscriber, Subscriber]) -> None:
    at_edge, at_central = clients
    at_central.publish("edge-agent/other-box/tasks/request", b'{"op": "list", "for": "other"}')
    at_central.publish(f"edge-agent/{NODE}/tasks/request", b'{"op": "list"}')
    request = at_edge.next()
    # The other box's request was sent first on the same path: had it been bridged it would be here.
    assert (request.topic, request.payload) == (f"edge-agent/{NODE}/tasks/request", b'{"op": "list"}')
    assert at_edge.messages.empty()


def test_inbound_requests_do_not_echo_back_out(clients: tuple[Subscriber, Subscriber]) -> None:
    at_edge, at_central = clients
    at_central.publish(f"edge-agent/{NODE}/tasks/request", b"ping")
    assert at_edge.next().payload == b"ping"
    # The central subscriber sees its own publish once; a loop would deliver it a second time.
    assert at_central.next().payload == b"ping"
    at_edge.publish(f"edge-agent/{NODE}/events/marker", b"marker")
    assert at_central.next().topic == f"edge-agent/{NODE}/events/marker"
    assert at_central.messages.empty()
