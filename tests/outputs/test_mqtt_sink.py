from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from agent.outputs.mqtt_sink import MqttEventSink, events_client_id, events_topic
from tests.fixtures.mosquitto import Broker
from tests.outputs.support import make_settings


def test_topic_and_client_id(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert events_topic(settings, "abc") == "edge-agent/node-1/events/abc"
    assert events_client_id(settings) == "edge-agent-node-1-events"


def test_needs_a_broker(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\[mqtt\]"):
        MqttEventSink(make_settings(tmp_path))


@pytest.mark.integration
def test_publish_is_acked_by_the_broker(tmp_path: Path, mosquitto: Broker, subscriber_factory: Any) -> None:
    settings = make_settings(tmp_path, mosquitto)
    topic = events_topic(settings, "t1")
    subscriber = subscriber_factory(mosquitto.host, mosquitto.port, topic, client_id=f"sub-{tmp_path.name}")
    sink = MqttEventSink(settings)
    sink.start()
    try:
        deadline = time.monotonic() + 10
        while not sink.connected:
            assert time.monotonic() < deadline, "events connection did not come up"
            time.sleep(0.05)
        mids = {sink.publish(topic, b'{"n":%d}' % n) for n in range(10)}
        acked: set[int] = set()
        while not mids <= acked:
            assert time.monotonic() < deadline + 10, "no PUBACK"
            acked |= {ack.mid for ack in sink.take_acks() if ack.failure is None}
            time.sleep(0.02)
        got = subscriber.wait_for(lambda m: len(m) >= 10, timeout=10)
        assert [payload["n"] for _, payload in got] == list(range(10))
    finally:
        sink.stop()
    assert not sink.connected


@pytest.mark.integration
def test_a_broker_that_is_down_is_not_fatal(tmp_path: Path, private_mosquitto: Broker) -> None:
    private_mosquitto.stop()
    sink = MqttEventSink(make_settings(tmp_path, private_mosquitto), reconnect_max_s=1)
    sink.start()
    try:
        time.sleep(0.5)
        assert not sink.connected
        private_mosquitto.start()
        deadline = time.monotonic() + 15
        while not sink.connected:
            assert time.monotonic() < deadline, "did not connect once the broker came up"
            time.sleep(0.05)
    finally:
        sink.stop()
