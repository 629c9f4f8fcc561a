"""MQTT control link: the connection that carries task requests, retained task state, presence (LWT).

What a request means and how it is answered (like the REST API) is ``control/requests.py``'s job; this
module moves payloads between the broker and that handler.

Topics (``{prefix}`` is ``settings.topic_prefix``; docs/mqtt.md is the user-facing contract):

- ``{prefix}/tasks/request``        the agent subscribes (QoS 1, persistent session)
- ``{prefix}/tasks/response``       answers when the request carries no MQTT v5 Response Topic
- ``{prefix}/tasks/{id}/state``     retained task view (QoS 1); an empty retained message on delete
- ``{prefix}/status``               retained presence; the Last Will says offline

Threads: one named network thread drives paho (and reconnects under ``MQTT_RECONNECT``); one named
worker thread handles requests in arrival order, so a slow create never stalls keep-alives and
requests are answered in the order they were sent. Requests are acknowledged (PUBACK) only after
they were handled: a crash in between means the broker redelivers, and the request id makes the
redelivery harmless.
"""

from __future__ import annotations

import enum
import json
import logging
import queue
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent import __version__
from agent.backoff import MQTT_RECONNECT, Backoff
from agent.control.requests import Reply, RequestHandler
from agent.mqtt_client import new_client
from agent.redact import mask_text, secrets
from agent.settings import AgentSettings, MqttSettings
from agent.tasks.service import TaskChange, TaskService

log = logging.getLogger(__name__)

QOS = 1
RECEIVE_MAXIMUM = 20  # unacknowledged requests the broker may push at once (v5; 3.1.1 brokers use their own)
QUEUE_MAX = 1000  # worker backlog; above RECEIVE_MAXIMUM only QoS 0 floods can reach it
OUTGOING_QUEUE_MAX = 1000  # paho's buffer of unsent QoS 1 answers while the link is down
LOOP_TIMEOUT_S = 0.5  # how long one paho loop call may block; bounds stop() latency
WORKER_POLL_S = 0.2  # how often an idle worker looks at its stop event


class LinkState(enum.Enum):
    IDLE = "IDLE"  # not started
    CONNECTING = "CONNECTING"  # TCP/TLS/CONNECT under way
    CONNECTED = "CONNECTED"  # CONNACK accepted and the request topic subscribed: requests are heard
    WAITING = "WAITING"  # link lost or refused; waiting out the backoff
    STOPPED = "STOPPED"


@dataclass(frozen=True)
class MqttStatus:
    state: LinkState
    broker: str
    connects: int
    last_error: str | None


@dataclass(frozen=True)
class _Request:
    payload: bytes
    qos: int
    mid: int
    generation: int  # the connection it came on: an ack belongs to that connection only
    response_topic: str | None
    correlation: bytes | None


@dataclass(frozen=True)
class _Resync:
    """Republish every task's state (after a (re)connect)."""


@dataclass(frozen=True)
class _StaleState:
    """A retained state message the broker holds: clear it if its task no longer exists."""

    task_id: str


_Job = _Request | _Resync | _StaleState



def _valid_publish_topic(topic: str) -> bool:
    return 0 < len(topic.encode()) <= 65535 and not any(c in topic for c in "+#\x00")


class MqttControl:
    """The agent's MQTT control channel; the REST API keeps working whatever the broker does."""

    def __init__(self, settings: AgentSettings, service: TaskService, *, started_at: float) -> None:
        if settings.mqtt is None:
            raise ValueError("the MQTT control plane needs [mqtt] in the agent settings")
        self._mqtt: MqttSettings = settings.mqtt
        self._service = service
        prefix = settings.topic_prefix
        if not prefix or not _valid_publish_topic(prefix):
            raise ValueError("mqtt.topic_prefix must be a topic without + or #")
        self.request_topic = f"{prefix}/tasks/request"
        self.response_topic = f"{prefix}/tasks/response"
        self.status_topic = f"{prefix}/status"
        self._state_prefix = f"{prefix}/tasks/"
        self._v5 = self._mqtt.protocol == "5"
        self._presence = {"node_id": settings.node_id, "version": __version__, "started_at": started_at}
        token = self._mqtt.control_token.get_secret_value() if self._mqtt.control_token else None
        secrets.register("config:mqtt.control_token", [token])
        self._handler = RequestHandler(service, max_bytes=self._mqtt.max_request_bytes, control_token=token)
        self._client = self._build_client(self._mqtt.client_id or f"edge-agent-{settings.node_id}")

        self._lock = threading.Lock()  # link state and generation
        self._state = LinkState.IDLE
        self._generation = 0
        self._connects = 0
        self._last_error: str | None = None
        self._refusal: str | None = None  # the broker's CONNACK reason; network thread only
        self._subscribe_mid: int | None = None  # the SUBSCRIBE whose SUBACK makes the link CONNECTED
        self._publish_lock = threading.Lock()  # store read + state publish, so the newest state is the last sent
        self._jobs: queue.Queue[_Job] = queue.Queue(QUEUE_MAX)
        self._backoff = Backoff(MQTT_RECONNECT)
        self._stop = threading.Event()  # ends the network thread
        self._stop_worker = threading.Event()  # ends the worker after the job in hand
        self._network = threading.Thread(target=self._run_network, name="mqtt-control-network", daemon=True)
        self._worker = threading.Thread(target=self._run_worker, name="mqtt-control-requests", daemon=True)
        service.add_listener(self._on_task_change)

    # public -------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        with self._lock:
            return self._state is LinkState.CONNECTED

    def status(self) -> MqttStatus:
        with self._lock:
            return MqttStatus(self._state, f"{self._mqtt.host}:{self._mqtt.port}", self._connects,
                              self._last_error)

    def start(self) -> None:
        """Start connecting in the background; never waits for the broker."""
        self._worker.start()
        self._network.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the request in hand, say offline, disconnect. Unhandled requests stay with the broker."""
        deadline = time.monotonic() + timeout
        self._stop_worker.set()
        if self._worker.is_alive():
            self._worker.join(max(0.1, deadline - time.monotonic()))
        if self.connected:
            info = self._client.publish(self.status_topic, self._presence_payload("offline"), qos=QOS, retain=True)
            try:
                info.wait_for_publish(max(0.1, min(2.0, deadline - time.monotonic())))
            except (RuntimeError, ValueError):
                log.warning("could not publish offline status before disconnecting")
        self._stop.set()
        if self._network.is_alive():
            self._network.join(max(0.1, deadline - time.monotonic()))
        self._client.disconnect()  # the network thread is gone: paho writes DISCONNECT on this thread
        self._set_state(LinkState.STOPPED)

    # client set-up ------------------------------------------------------------------------------------
    def _build_client(self, client_id: str) -> mqtt.Client:
        settings = self._mqtt
        # The link drives reconnects itself (paho's own delay has no jitter) and acknowledges a request
        # only once it was handled.
        client = new_client(settings, client_id, persistent_session=True, manual_ack=True,
                            reconnect_on_failure=False, log_name="agent.control.mqtt.paho")
        client.suppress_exceptions = True  # a failing callback is logged by paho; the network loop goes on
        client.max_queued_messages_set(OUTGOING_QUEUE_MAX)
        client.will_set(self.status_topic, self._presence_payload("offline"), qos=QOS, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        properties: Properties | None = None
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = settings.session_expiry_s
            properties.ReceiveMaximum = RECEIVE_MAXIMUM
            client.connect_async(settings.host, settings.port, settings.keepalive_s, clean_start=False,
                                 properties=properties)
        else:
            client.connect_async(settings.host, settings.port, settings.keepalive_s)
        return client

    def _presence_payload(self, state: str) -> bytes:
        return json.dumps({"state": state, **self._presence}, separators=(",", ":")).encode()

    def _set_state(self, state: LinkState, error: str | None = None) -> None:
        with self._lock:
            self._state = state
            if error is not None:
                self._last_error = error

    # network thread -------------------------------------------------------------------------------
    def _run_network(self) -> None:
        broker = f"{self._mqtt.host}:{self._mqtt.port}"
        while not self._stop.is_set():
            self._set_state(LinkState.CONNECTING)
            try:
                self._client.reconnect()
            except (OSError, ssl.SSLError) as exc:  # ssl.SSLError is an OSError; named for the reader
                self._wait_before_retry(f"cannot reach the broker {broker}: {mask_text(str(exc))}")
                continue
            except Exception as exc:  # whatever paho raises, the channel retries instead of dying
                log.exception("connecting to the MQTT broker %s failed", broker)
                self._wait_before_retry(f"cannot connect to the broker {broker}: {type(exc).__name__}")
                continue
            rc = MQTTErrorCode.MQTT_ERR_SUCCESS
            try:
                while not self._stop.is_set() and rc is MQTTErrorCode.MQTT_ERR_SUCCESS:
                    rc = self._client.loop(timeout=LOOP_TIMEOUT_S)
            except Exception:
                log.exception("the MQTT network loop failed")
                rc = MQTTErrorCode.MQTT_ERR_UNKNOWN
            if not self._stop.is_set():
                self._wait_before_retry(self._refusal or f"lost the broker {broker} ({mqtt.error_string(rc)})")

    def _wait_before_retry(self, reason: str) -> None:
        delay = self._backoff.next()
        self._set_state(LinkState.WAITING, reason)
        log.warning("%s; retrying in %.1f s", reason, delay)
        self._stop.wait(delay)

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode,
                    _properties: Properties | None) -> None:
        if reason.is_failure:  # e.g. bad credentials: the broker closes the link, the backoff applies
            self._refusal = f"the broker {self._mqtt.host}:{self._mqtt.port} refused the connection: {reason}"
            self._set_state(LinkState.WAITING, self._refusal)
            return
        self._refusal = None
        # A new generation at CONNACK: a persistent session's queued requests may arrive before the SUBACK.
        with self._lock:
            self._generation += 1
            self._connects += 1
        self._backoff.reset()
        if self._v5:
            _, mid = client.subscribe([(self.request_topic, SubscribeOptions(qos=QOS)),
                                       (f"{self._state_prefix}+/state", SubscribeOptions(qos=0, noLocal=True))])
        else:
            _, mid = client.subscribe([(self.request_topic, QOS), (f"{self._state_prefix}+/state", 0)])
        self._subscribe_mid = mid
        # "online" goes out after the SUBSCRIBE: a peer that saw it can send requests and be heard
        client.publish(self.status_topic, self._presence_payload("online"), qos=QOS, retain=True)

    def _on_subscribe(self, _client: mqtt.Client, _userdata: Any, mid: int, _reasons: Any,
                      _properties: Properties | None) -> None:
        # Until the SUBACK a request sent on a first connect (no session yet) would be lost: only now
        # is the link CONNECTED, for the health check, diag and anyone waiting to send requests.
        if mid != self._subscribe_mid:
            return
        self._set_state(LinkState.CONNECTED)
        log.info("connected to the MQTT broker %s:%d; requests on %s", self._mqtt.host, self._mqtt.port,
                 self.request_topic)
        self._enqueue(_Resync())

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode,
                       _properties: Properties | None) -> None:
        with self._lock:
            was_connected = self._state is LinkState.CONNECTED
            if self._state is not LinkState.STOPPED:
                self._state = LinkState.WAITING
        if was_connected and not self._stop.is_set():
            log.warning("disconnected from the MQTT broker: %s", reason)

    def _on_message(self, client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self.request_topic:
            properties = message.properties
            response_topic = getattr(properties, "ResponseTopic", None) if properties is not None else None
            correlation = getattr(properties, "CorrelationData", None) if properties is not None else None
            with self._lock:
                generation = self._generation
            self._enqueue(_Request(bytes(message.payload), message.qos, message.mid, generation,
                                   response_topic, correlation))
            return
        # A retained state from the broker's store (sent on subscribe); live copies carry retain=0.
        if message.retain and message.payload and message.topic.endswith("/state"):
            task_id = message.topic[len(self._state_prefix):-len("/state")]
            if task_id and "/" not in task_id:
                self._enqueue(_StaleState(task_id))

    def _enqueue(self, job: _Job) -> None:
        try:
            self._jobs.put_nowait(job)
        except queue.Full:  # unacknowledged QoS 1 requests come back after the next reconnect
            log.warning("MQTT request backlog full (%d); dropping a message", QUEUE_MAX)

    # worker thread ----------------------------------------------------------------------------------
    def _run_worker(self) -> None:
        # Jobs left in the queue at stop are dropped: their requests were never acknowledged, so the
        # broker hands them over again on the next connect.
        while not self._stop_worker.is_set():
            try:
                job = self._jobs.get(timeout=WORKER_POLL_S)
            except queue.Empty:
                continue
            try:
                if isinstance(job, _Request):
                    self._answer(job)
                elif isinstance(job, _Resync):
                    self._republish_all()
                else:
                    self._clear_if_stale(job.task_id)
            except Exception:  # one bad job must not end the channel
                log.exception("MQTT control job failed")

    def _answer(self, request: _Request) -> None:
        reply = self._handler.handle(request.payload)
        # Without a request id the answer still reaches the sender through its own v5 reply channel.
        addressed = reply.request_id is not None or request.correlation is not None or (
            self._v5 and bool(request.response_topic) and _valid_publish_topic(request.response_topic or ""))
        if not addressed:
            log.warning("unanswerable MQTT request (%d bytes): %s", len(request.payload),
                        mask_text(str(reply.body.get("detail", ""))))
        else:
            self._send(reply, request)
            log.info("mqtt request %s answered %d%s", mask_text(reply.request_id or "(no id)"), reply.status,
                     " (duplicate)" if reply.duplicate else "")
        with self._lock:
            same_connection = request.generation == self._generation and self._state in (
                LinkState.CONNECTING, LinkState.CONNECTED)
        if same_connection:
            self._client.ack(request.mid, request.qos)

    def _send(self, reply: Reply, request: _Request) -> None:
        topic = self.response_topic
        properties: Properties | None = None
        if self._v5:
            if request.response_topic and _valid_publish_topic(request.response_topic):
                topic = request.response_topic
            if request.correlation is not None:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.CorrelationData = request.correlation
        info = self._client.publish(topic, reply.payload(), qos=QOS, retain=False, properties=properties)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("could not queue the answer to request %s: %s", mask_text(reply.request_id or "(no id)"),
                        mqtt.error_string(info.rc))

    # retained task state ---------------------------------------------------------------------------
    def _state_topic(self, task_id: str) -> str:
        return f"{self._state_prefix}{task_id}/state"

    def _on_task_change(self, change: TaskChange) -> None:
        if self.connected:
            self._publish_state(change.task_id)

    def _publish_state(self, task_id: str) -> None:
        with self._publish_lock:
            record = self._service.record(task_id)  # fresh: a late caller must not publish an older view
            payload = b"" if record is None else json.dumps(
                self._service.view(record), ensure_ascii=False, separators=(",", ":")).encode()
            self._client.publish(self._state_topic(task_id), payload, qos=QOS, retain=True)

    def _republish_all(self) -> None:
        for record in self._service.records():
            if not self.connected:
                return  # the next connect republishes everything again
            self._publish_state(record.id)

    def _clear_if_stale(self, task_id: str) -> None:
        with self._publish_lock:
            if self._service.record(task_id) is not None or not _valid_publish_topic(task_id):
                return
            self._client.publish(self._state_topic(task_id), b"", qos=QOS, retain=True)
        log.info("cleared the retained state of deleted task %s", mask_text(task_id))
