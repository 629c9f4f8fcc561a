"""Helpers shared by the outputs tests (and the kill -9 child): events, settings, schema validation, an
MQTT subscriber. The ``subscriber_factory`` fixture lives in conftest.py."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.algorithms.event import Event
from agent.outputs.envelope import envelope_schema
from agent.settings import AgentSettings, MqttSettings
from agent.sources.frame import FrameInfo
from agent.tasks.model import TaskOutput

TASK_ID = "0123456789abcdef0123456789abcdef"


def make_event(seq: int = 0, *, input_index: int = 0, images: dict[str, bytes] | None = None,
               item_images: tuple[dict[str, bytes], ...] = (), captured_at: float = 1_750_000_000.25) -> Event:
    frame = FrameInfo(input_index=input_index, pts=9000 + seq, stream_time=0.1 * seq, captured_at=captured_at,
                      width=1280, height=720)
    items = ({"seq": seq, "category": "person", "bounding_box": {"x": 1, "y": 2, "width": 30, "height": 40}},)
    return Event(event_type=196609, input_index=input_index, frame=frame, event_set=items,
                 images=images or {}, item_images=item_images)


def make_settings(state_dir: Path, broker: Any | None = None, **outbox: Any) -> AgentSettings:
    mqtt_settings = None if broker is None else MqttSettings(host=broker.host, port=broker.port,
                                                             topic_prefix=f"test/{state_dir.name}")
    return AgentSettings(node_id="node-1", state_dir=state_dir, mqtt=mqtt_settings, outbox=outbox or {})


def webhook_output(url: str, data_category: list[str] | None = None, *, event_center: bool = False) -> TaskOutput:
    return TaskOutput(webhook={"url": url, "headers": {"X-Token": "s3cret-token-value"},
                               "data_category": data_category}, event_center=event_center)


_validator = jsonschema.Draft202012Validator(envelope_schema(), format_checker=jsonschema.FormatChecker())


def validate_envelope(envelope: Any) -> None:
    """Every produced envelope must satisfy the shipped JSON Schema."""
    _validator.validate(envelope)


class Subscriber:
    """A QoS 1 subscriber on a real broker that records (topic, parsed payload) in arrival order.

    ``persistent`` keeps its session (clean_session=False) so that a broker with persistence queues
    messages for it while it is reconnecting.
    """

    def __init__(self, host: str, port: int, topic: str, *, client_id: str = "test-subscriber",
                 persistent: bool = False) -> None:
        self.messages: list[tuple[str, Any]] = []
        self.events: list[str] = []  # connects and disconnects, for failure messages
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self._topic = topic
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                  clean_session=not persistent)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("subscriber did not connect")

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.events.append(f"{time.monotonic():.1f} connect {reason} session_present={flags.session_present}")
        client.subscribe(self._topic, qos=1)
        self._subscribed.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.events.append(f"{time.monotonic():.1f} disconnect {reason}")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((message.topic, json.loads(message.payload)))
            self._cond.notify_all()

    def wait_for(self, predicate: Any, timeout: float) -> list[tuple[str, Any]]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(self.messages)} messages after {timeout} s")
                self._cond.wait(min(remaining, 0.5))
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
