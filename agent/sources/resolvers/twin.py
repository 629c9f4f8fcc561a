"""The agent's own MQTT connection to the node's broker for KubeEdge/IEF device-twin traffic.

EdgeCore answers requests on ``$hw/events/...`` topics: publish ``{"event_id"}`` to a ``.../get``
topic, read the answer from ``.../get/result``. This client keeps the result topics subscribed, matches
answers to requests by event_id (or takes the next answer when EdgeCore leaves event_id empty), and lets
callers subscribe to change notifications. It is separate from the control-plane client so a slow
twin lookup never holds up task requests, and it connects only when an edgecamera input needs it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt

from agent.mqtt_client import new_client
from agent.redact import mask_text
from agent.settings import MqttSettings

log = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], None]


class TwinTimeout(TimeoutError):
    """EdgeCore (or the broker) did not answer in time; the message says what was asked."""


def membership_get(node_id: str) -> str:
    return f"$hw/events/node/{node_id}/membership/get"


def twin_get(device_id: str) -> str:
    return f"$hw/events/device/{device_id}/twin/get"


def device_updated(device_id: str) -> str:
    return f"$hw/events/device/{device_id}/updated"


def twin_update_document(device_id: str) -> str:
    return f"$hw/events/device/{device_id}/twin/update/document"


class _Pending:
    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.answered = threading.Event()
        self.answer: dict[str, Any] = {}


class DeviceTwinClient:
    """Requests to and notifications from EdgeCore over the node's broker."""

    def __init__(self, settings: MqttSettings, node_id: str) -> None:
        self._settings = settings
        self._node_id = node_id
        self.where = f"MQTT broker {settings.host}:{settings.port}"
        self._lock = threading.Lock()
        self._started = False
        self._connected = threading.Event()
        self._results_ready = threading.Event()  # the result topics are subscribed (SUBACK seen)
        self._result_mid: int | None = None
        self._pending: dict[str, _Pending] = {}
        self._handlers: dict[str, list[Handler]] = {}
        self._result_topics = (f"{membership_get(node_id)}/result", f"{twin_get('+')}/result")
        self._client = new_client(settings, f"edge-agent-{node_id}-twin")
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def request(self, topic: str, timeout_s: float) -> dict[str, Any]:
        """Publish ``{"event_id"}`` to ``topic`` and return EdgeCore's answer on ``topic/result``."""
        deadline = time.monotonic() + timeout_s
        self._start()
        if not self._results_ready.wait(timeout_s):
            raise TwinTimeout(f"{self.where} not reachable within {timeout_s:g} s")
        event_id = uuid.uuid4().hex
        pending = _Pending(f"{topic}/result")
        with self._lock:
            self._pending[event_id] = pending
        try:
            payload = json.dumps({"event_id": event_id, "timestamp": int(time.time() * 1000)})
            self._client.publish(topic, payload, qos=1)
            if not pending.answered.wait(max(0.0, deadline - time.monotonic())):
                raise TwinTimeout(f"EdgeCore did not answer {topic} within {timeout_s:g} s")
            return pending.answer
        finally:
            with self._lock:
                self._pending.pop(event_id, None)

    def subscribe(self, topic: str, handler: Handler) -> Callable[[], None]:
        """Call ``handler(topic, payload)`` for every JSON object published on ``topic``."""
        with self._lock:
            handlers = self._handlers.setdefault(topic, [])
            # decided under the lock that _on_connect snapshots topics under: every topic is subscribed once
            subscribe_now = not handlers and self._connected.is_set()
            handlers.append(handler)
        self._start()
        if subscribe_now:
            self._client.subscribe(topic, qos=1)

        def unsubscribe() -> None:
            with self._lock:
                current = self._handlers.get(topic, [])
                if handler in current:
                    current.remove(handler)
                unsubscribe_now = not current and self._connected.is_set()
                if not current:
                    self._handlers.pop(topic, None)
            if unsubscribe_now:
                self._client.unsubscribe(topic)

        return unsubscribe

    def close(self) -> None:
        with self._lock:
            started, self._started = self._started, False
        if started:
            self._client.disconnect()
            self._client.loop_stop()

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        log.info("device twin client connecting to %s", self.where)
        self._client.connect_async(self._settings.host, self._settings.port, keepalive=self._settings.keepalive_s)
        self._client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.warning("%s refused the device twin client: %s", self.where, mask_text(str(reason_code)))
            return
        with self._lock:
            topics = [*self._result_topics, *self._handlers]
            self._connected.set()
        _, mid = client.subscribe([(topic, 1) for topic in topics])
        with self._lock:
            self._result_mid = mid

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._connected.clear()
        self._results_ready.clear()
        if reason_code.is_failure:
            log.warning("device twin client lost %s: %s; reconnecting", self.where, mask_text(str(reason_code)))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        with self._lock:
            if mid != self._result_mid:
                return
        if any(code.is_failure for code in reason_codes):
            log.warning("%s refused the $hw result topics: %s", self.where, [str(c) for c in reason_codes])
            return
        self._results_ready.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            payload = json.loads(message.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            log.warning("ignoring a payload on %s that is not JSON", message.topic)
            return
        if not isinstance(payload, dict):
            log.warning("ignoring a payload on %s that is not a JSON object", message.topic)
            return
        event_id = payload.get("event_id") or ""
        with self._lock:
            waiting = [p for eid, p in self._pending.items()
                       if p.topic == message.topic and (not event_id or eid == event_id)]
            handlers = list(self._handlers.get(message.topic, ()))
        for pending in waiting:
            pending.answer = payload
            pending.answered.set()
        for handler in handlers:
            try:
                handler(message.topic, payload)
            except Exception as exc:  # one watcher's bug must not kill paho's network thread
                log.error("device twin handler for %s failed: %s", message.topic, mask_text(repr(exc)))
