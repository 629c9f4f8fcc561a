"""The event_center sink: the agent's own MQTT connection for result events, QoS 1, PUBACK = delivered.

A connection of its own (client id ``edge-agent-{node_id}-events``) so that a flood of events never
delays the control channel's requests and presence. paho keeps every unacknowledged QoS 1 message and
resends it after a reconnect, so the delivery thread publishes each outbox row once per process and
waits for its PUBACK; after a restart the outbox publishes the still-unacknowledged rows again.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from agent.backoff import MQTT_RECONNECT
from agent.mqtt_client import new_client
from agent.redact import mask_text
from agent.settings import AgentSettings, MqttSettings

log = logging.getLogger(__name__)

QOS = 1
MAX_INFLIGHT = 1000


def events_topic(settings: AgentSettings, task_id: str) -> str:
    return f"{settings.topic_prefix}/events/{task_id}"


def events_client_id(settings: AgentSettings) -> str:
    return f"edge-agent-{settings.node_id}-events"


@dataclass(frozen=True)
class Ack:
    mid: int
    failure: str | None  # MQTT v5 PUBACK reason when the broker refused the message


class MqttEventSink:
    """Owns one paho client and its network thread. ``publish`` never blocks on the network."""

    def __init__(self, settings: AgentSettings, *, on_change: Callable[[], None] | None = None,
                 reconnect_max_s: float = MQTT_RECONNECT.max_s) -> None:
        """``reconnect_max_s`` caps paho's reconnect delay; only tests that restart a broker lower it."""
        if settings.mqtt is None:
            raise ValueError("event_center needs [mqtt] in the agent settings")
        self._mqtt: MqttSettings = settings.mqtt
        self._on_change = on_change or (lambda: None)
        self._lock = threading.Lock()
        self._acks: list[Ack] = []
        self._connected = threading.Event()
        self._disconnects = 0
        self._stopping = False
        self._client = new_client(self._mqtt, events_client_id(settings),
                                  reconnect=dataclasses.replace(MQTT_RECONNECT, max_s=reconnect_max_s))
        self._client.max_inflight_messages_set(MAX_INFLIGHT)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_publish = self._handle_publish

    def start(self) -> None:
        """Connect in the background: a broker that is down now is retried, never fatal."""
        self._client.connect_async(self._mqtt.host, self._mqtt.port, keepalive=self._mqtt.keepalive_s)
        self._client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def disconnects(self) -> int:
        with self._lock:
            return self._disconnects

    def publish(self, topic: str, payload: bytes) -> int | None:
        """Queue a QoS 1 publish; returns its packet id, or None when paho refused it (retry later)."""
        info = self._client.publish(topic, payload, qos=QOS)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("MQTT publish to %s refused locally: %s", topic, mqtt.error_string(info.rc))
            return None
        # NO_CONN: paho keeps the message and sends it once the connection is back.
        return int(info.mid)

    def take_acks(self) -> list[Ack]:
        with self._lock:
            acks, self._acks = self._acks, []
        return acks

    def _handle_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                        properties: Any) -> None:
        if reason.is_failure:
            log.warning("MQTT events connection to %s:%d refused: %s", self._mqtt.host, self._mqtt.port, reason)
            return
        log.info("MQTT events connection to %s:%d up", self._mqtt.host, self._mqtt.port)
        self._connected.set()
        self._on_change()

    def _handle_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                           properties: Any) -> None:
        if self._connected.is_set() and not self._stopping:
            log.warning("MQTT events connection to %s:%d lost: %s", self._mqtt.host, self._mqtt.port,
                        mask_text(str(reason)))
        with self._lock:
            self._disconnects += 1
        self._connected.clear()
        self._on_change()

    def _handle_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                        properties: Any) -> None:
        failure = str(reason) if reason.is_failure else None
        with self._lock:
            self._acks.append(Ack(mid, failure))
        self._on_change()
