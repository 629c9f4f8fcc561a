from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from agent.outputs.mqtt_sink import MqttEventSink, events_client_id, events_topic
from tests.fixtures.mosquitto import Broker
from tests.outputs.support import make_settings
from tests.waiting import wait_until


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
        wait_until(lambda: sink.connected, 10, "the events connection")
        mids = {sink.publish(topic, b'{"n":%d}' % n) for n in range(10)}
        acked: set[int] = set()

        def all_acked() -> bool:
            acked.update(ack.mid for ack in sink.take_acks() if ack.failure is None)  # take_acks hands each once
            return mids <= acked

        wait_until(all_acked, 10, "a PUBACK for every publish")
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
        time.sleep(0.5)  # the scene: the broker stays away while the sink makes its first attempts
        assert not sink.connected
        private_mosquitto.start()
        wait_until(lambda: sink.connected, 15, "the connection once the broker came up")
    finally:
        sink.stop()
