"""The facade the pipeline calls: envelopes in, durable delivery out.

``submit`` builds one envelope per event and output (filtered by that output's data_category), commits
them to the outbox and returns; two named delivery threads drain it, one per sink kind:

- ``outbox-webhook-0`` … ``-3``: a small fixed pool (``lanes.LanePool``). A worker claims the ready task
  lane served least recently, POSTs its rows in order over keep-alive connections for at most a second,
  and releases it.
  One lane is never held by two workers (order), and no worker holds a lane for long (fairness). A pool
  rather than one thread per destination: tasks come and go, while 4 threads are enough that a few slow
  webhooks (up to 10 s per request) cannot stall the others; a failing destination is backed off and a
  refused connection costs microseconds. (One thread served all lanes at first: a webhook that answers
  after 9 s then held every other task's webhook back for minutes.)
- ``outbox-mqtt`` pipelines up to 1000 QoS 1 publishes on the events connection and deletes rows as
  PUBACKs arrive; during a broker outage it waits, and paho resends the unacknowledged ones on reconnect.
- ``outbox-obs-*`` and ``outbox-dis-*``: the same lane pool for the object store and DIS outputs when
  their settings sections exist (``stores.py``).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.algorithms.event import Event
from agent.backoff import DELIVERY_RETRY, BackoffPolicy
from agent.outputs.envelope import build_envelope, encode_envelope
from agent.outputs.lanes import DeadLetterHook, LanePool
from agent.outputs.mqtt_sink import MAX_INFLIGHT, MqttEventSink, events_topic
from agent.outputs.outbox import NewMessage, Outbox, QueuedMessage, Sink
from agent.outputs.stores import StoreOutputs
from agent.outputs.webhook import DEFAULT_TIMEOUT_S, WebhookSender
from agent.redact import MASK, mask_url
from agent.settings import AgentSettings
from agent.tasks.errors import unsupported
from agent.tasks.model import TaskOutput

log = logging.getLogger(__name__)

WEBHOOK_WORKERS = 4
LANE_BATCH = 64  # rows read per lane turn
ERROR_PAUSE_S = 5.0
IDLE_WAIT_S = 1.0  # the MQTT delivery thread looks again at least this often
ACK_GATHER_S = 0.005


@dataclass(frozen=True)
class SinkStatus:
    sink: str
    backlog: int
    oldest_undelivered_age_s: float | None
    delivered: int
    failed: int  # failed attempts (each retry counts)
    dead_letters: int
    dead_letters_pruned: int
    dropped_at_cap: int


@dataclass(frozen=True)
class RouterStatus:
    sinks: tuple[SinkStatus, ...]
    mqtt_connected: bool | None  # None: no MQTT broker configured
    stored_bytes: int
    max_bytes: int

    def sink(self, name: str) -> SinkStatus:
        for status in self.sinks:
            if status.sink == name:
                return status
        raise KeyError(name)


def check_output(settings: AgentSettings, output: TaskOutput) -> None:
    """Refuse outputs this agent cannot deliver (called by the task service at create/update time)."""
    if output.event_center and settings.mqtt is None:
        raise unsupported(
            "output.event_center",
            "event_center needs an MQTT broker, and this agent has no [mqtt] settings",
            "Configure [mqtt] in the agent's config file, or use a webhook output.",
        )


def _safe_destination(message: QueuedMessage) -> dict[str, Any]:
    """A destination fit for a dead letter or a status: URL masked, header names kept, values not."""
    destination = dict(message.destination)
    if "url" in destination:
        destination["url"] = mask_url(str(destination["url"]))
    if "headers" in destination:
        destination["headers"] = dict.fromkeys(destination["headers"], MASK)
    return destination


class ResultRouter:
    def __init__(
        self,
        settings: AgentSettings,
        *,
        retry: BackoffPolicy = DELIVERY_RETRY,
        webhook_timeout_s: float = DEFAULT_TIMEOUT_S,
        mqtt_reconnect_max_s: int | None = None,
        on_dead_letter: DeadLetterHook | None = None,
    ) -> None:
        """``on_dead_letter(task_id, sink, reason)`` hears each webhook/obs/dis event given up on."""
        self._settings = settings
        self._outbox = Outbox(
            settings.state_dir / "outbox.db",
            max_bytes=settings.outbox.max_bytes,
            synchronous=settings.outbox.synchronous,
        )
        self._stop = threading.Event()
        self._wake = {sink: threading.Event() for sink in Sink}
        self._threads: list[threading.Thread] = []
        self._webhooks = LanePool(self._outbox, Sink.WEBHOOK, lambda: WebhookSender(webhook_timeout_s),
                                  workers=WEBHOOK_WORKERS, batch=LANE_BATCH, wake=self._wake[Sink.WEBHOOK],
                                  on_dead_letter=on_dead_letter, retry=retry, shown_destination=_safe_destination)
        self._mqtt: MqttEventSink | None = None
        if settings.mqtt is not None:
            kwargs = {} if mqtt_reconnect_max_s is None else {"reconnect_max_s": mqtt_reconnect_max_s}
            self._mqtt = MqttEventSink(settings, on_change=self._wake[Sink.MQTT].set, **kwargs)
        self._stores = StoreOutputs(settings, self._outbox, self._wake, on_dead_letter)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self._webhooks.start()
        if self._mqtt is not None:
            self._mqtt.start()
            self._threads.append(threading.Thread(target=self._run_mqtt, name="outbox-mqtt", daemon=True))
        for thread in self._threads:
            thread.start()
        self._stores.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop delivering (what is queued stays queued) and close the outbox."""
        self._stop.set()
        for event in self._wake.values():
            event.set()
        deadline = time.monotonic() + timeout
        stuck = []
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                stuck.append(thread.name)
        stuck += self._webhooks.stop(deadline)
        stuck += self._stores.stop(deadline)
        self._threads = []
        if self._mqtt is not None:
            self._mqtt.stop()
        if stuck:
            # A thread inside a 10 s webhook timeout still holds the database; it exits on its own.
            log.warning("delivery threads still running after %.1f s: %s", timeout, ", ".join(stuck))
            return
        self._outbox.close()

    # -- the pipeline's side ---------------------------------------------------------------------

    def submit(
        self,
        task_id: str,
        service_name: str,
        output: TaskOutput,
        stream_ids: Sequence[str],
        events: Sequence[Event],
    ) -> None:
        """Commit one envelope per event and enabled output; durable when this returns."""
        if not events:
            return
        # check_output ran when the task was created and again when it started; this only keeps rows
        # out of the outbox that no sink would ever take
        if output.event_center and self._mqtt is None:
            raise ValueError("event_center output, but this router has no MQTT sink")
        webhook = output.webhook
        webhook_destination: Mapping[str, Any] | None = None
        if webhook is not None:
            webhook_destination = {"url": webhook.url, "headers": dict(webhook.headers)}
        topic_destination = {"topic": events_topic(self._settings, task_id)} if output.event_center else None
        messages: list[NewMessage] = []
        for event in events:
            if not 0 <= event.input_index < len(stream_ids):
                raise ValueError(f"event input_index {event.input_index} has no stream id "
                                 f"({len(stream_ids)} inputs)")
            message_id = str(uuid.uuid4())
            common = {"task_id": task_id, "service_name": service_name,
                      "stream_id": stream_ids[event.input_index], "message_id": message_id}
            webhook_envelope: dict[str, Any] | None = None
            webhook_payload = b""
            if webhook is not None and webhook_destination is not None:
                webhook_envelope = build_envelope(event, data_category=webhook.data_category, **common)
                webhook_payload = encode_envelope(webhook_envelope)
                messages.append(NewMessage(Sink.WEBHOOK, task_id, message_id, webhook_destination,
                                           webhook_payload))
            if topic_destination is not None:
                # event_center has no data_category in the task body: it never carries images.
                envelope = build_envelope(event, data_category=None, **common)
                # Without images both envelopes are the same: encode once (JSON is a third of submit's cost).
                payload = webhook_payload if envelope == webhook_envelope else encode_envelope(envelope)
                messages.append(NewMessage(Sink.MQTT, task_id, message_id, topic_destination, payload))
            messages += StoreOutputs.messages(output, event, **common)
        self._outbox.add(messages)
        for sink in {message.sink for message in messages}:
            self._wake[sink].set()

    # -- what diag, the API and /metrics read ----------------------------------------------------

    def status(self) -> RouterStatus:
        now = time.time()
        sinks = []
        for sink in Sink:
            stats = self._outbox.stats(sink, now)
            sinks.append(SinkStatus(sink.value, stats.backlog, stats.oldest_undelivered_age_s, stats.delivered,
                                    stats.failed, stats.dead_letters, stats.dead_letters_pruned,
                                    stats.dropped_at_cap))
        return RouterStatus(
            sinks=tuple(sinks),
            mqtt_connected=None if self._mqtt is None else self._mqtt.connected,
            stored_bytes=self._outbox.stored_bytes,
            max_bytes=self._outbox.max_bytes,
        )

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._outbox.dead_letters(limit)

    # -- MQTT delivery ---------------------------------------------------------------------------

    def _run_mqtt(self) -> None:
        sink = self._mqtt
        assert sink is not None
        delivery = _MqttDelivery(sink, self._outbox, self._wake[Sink.MQTT])
        while not self._stop.is_set():
            try:
                delivery.round()
            except Exception:
                log.exception("MQTT delivery failed; retrying in %.0f s", ERROR_PAUSE_S)
                self._stop.wait(ERROR_PAUSE_S)


class _MqttDelivery:
    """Pipelines QoS 1 publishes: up to MAX_INFLIGHT rows handed to paho, each removed on its PUBACK."""

    def __init__(self, sink: MqttEventSink, outbox: Outbox, wake: threading.Event) -> None:
        self._sink = sink
        self._outbox = outbox
        self._wake = wake
        self._inflight: dict[int, QueuedMessage] = {}  # packet id → row, until its PUBACK
        self._cursor = 0  # highest row id handed to paho by this process
        self._disconnects_seen = sink.disconnects

    def round(self) -> None:
        delivered = []
        for ack in self._sink.take_acks():
            message = self._inflight.pop(ack.mid, None)
            if message is None:
                continue
            if ack.failure is None:
                delivered.append(message.row_id)
            else:
                reason = f"broker refused the publish: {ack.failure}"
                log.error("MQTT event %s of task %s dead-lettered: %s", message.message_id, message.task_id,
                          reason)
                self._outbox.dead_letter(message, reason, _safe_destination(message))
        self._outbox.ack(Sink.MQTT, delivered)
        disconnects = self._sink.disconnects
        if disconnects != self._disconnects_seen:
            # Everything in flight is resent by paho after the reconnect: one failed attempt each.
            self._outbox.count_failures(Sink.MQTT, len(self._inflight))
            self._disconnects_seen = disconnects
        if self._sink.connected and len(self._inflight) < MAX_INFLIGHT:
            for message in self._outbox.after(Sink.MQTT, self._cursor, MAX_INFLIGHT - len(self._inflight)):
                mid = self._sink.publish(str(message.destination["topic"]), message.payload)
                if mid is None:
                    break
                self._inflight[mid] = message
                self._cursor = message.row_id
        self._wake.wait(IDLE_WAIT_S)
        self._wake.clear()
        # Let PUBACKs and submits gather for a moment: one delete transaction per batch, not per ack
        # (with synchronous=FULL every transaction is an fsync).
        time.sleep(ACK_GATHER_S)
