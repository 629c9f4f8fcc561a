"""A pool of delivery threads draining one sink's task lanes from the outbox (webhook, obs and dis).

A worker claims the ready lane served least
recently, sends its rows in order for at most ``LANE_SLICE_S``, and releases it; a lane is never held by
two workers, so a task's events go out in order. What a row's attempt means is the sender's business
(``LaneSender``); what follows from it is decided here, once for every sink:

- delivered: the row is deleted;
- retry (5xx, timeouts, network): the row waits under ``backoff.DELIVERY_RETRY`` and so does the lane
  behind it, so later events do not overtake it;
- permanent (a 4xx that will not heal): the row becomes a dead letter and ``on_dead_letter`` hears the
  reason, which the composition root shows in the task's state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from agent.backoff import DELIVERY_RETRY, BackoffPolicy
from agent.outputs.outbox import Outbox, QueuedMessage, Sink
from agent.outputs.webhook import DeliveryResult, Outcome

log = logging.getLogger(__name__)

LANE_SLICE_S = 1.0  # a worker moves on to another lane after this long
IDLE_WAIT_S = 1.0
BUSY_POLL_S = 0.2
ERROR_PAUSE_S = 5.0

DeadLetterHook = Callable[[str, str, str], None]  # (task_id, sink name, reason)


class LaneSender(Protocol):
    """Sends the head rows of one lane; one instance per worker thread (no sharing, no locks)."""

    def send(self, messages: Sequence[QueuedMessage]) -> list[DeliveryResult]:
        """Results for a prefix of ``messages``, in order; may stop after the first RETRY (the lane waits)."""

    def close(self) -> None:
        """Release connections."""


class LanePool:
    def __init__(self, outbox: Outbox, sink: Sink, new_sender: Callable[[], LaneSender], *, workers: int,
                 batch: int, wake: threading.Event, on_dead_letter: DeadLetterHook | None = None,
                 retry: BackoffPolicy = DELIVERY_RETRY,
                 shown_destination: Callable[[QueuedMessage], dict[str, Any]] | None = None) -> None:
        """``wake`` is set by whoever commits rows of ``sink`` (the router's submit); ``shown_destination``
        is what a dead letter keeps of a row's destination (the webhook's masks header values)."""
        self._outbox = outbox
        self._sink = sink
        self._new_sender = new_sender
        self._workers = workers
        self._batch = batch
        self._on_dead_letter = on_dead_letter
        self._retry = retry
        self._shown_destination = shown_destination or (lambda message: dict(message.destination))
        self._wake = wake
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._claimed: set[str] = set()
        self._served_at: dict[str, float] = {}

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for number in range(self._workers):
            thread = threading.Thread(target=self._run, name=f"outbox-{self._sink.value}-{number}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, deadline: float) -> list[str]:
        """Stop the workers (queued rows stay queued); the names of those still running at ``deadline``."""
        self._stop.set()
        self._wake.set()
        stuck = []
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                stuck.append(thread.name)
        self._threads = []
        return stuck

    def _run(self) -> None:
        sender = self._new_sender()
        try:
            while not self._stop.is_set():
                try:
                    self._round(sender)
                except Exception:  # e.g. a full disk: keep the thread, the events stay queued
                    log.exception("%s delivery failed; retrying in %.0f s", self._sink.value, ERROR_PAUSE_S)
                    self._stop.wait(ERROR_PAUSE_S)
        finally:
            sender.close()

    def _round(self, sender: LaneSender) -> None:
        now = time.time()
        ready, next_due = self._outbox.ready_lanes(self._sink, now)
        task_id = self._claim(ready)
        if task_id is None and ready:
            self._stop.wait(BUSY_POLL_S)  # every ready lane is being served
            return
        if task_id is None:
            self._wake.wait(IDLE_WAIT_S if next_due is None else min(IDLE_WAIT_S, max(0.01, next_due - now)))
            self._wake.clear()
            return
        try:
            self._drain(sender, task_id)
        finally:
            with self._lock:
                self._claimed.discard(task_id)
                self._served_at[task_id] = time.monotonic()

    def _claim(self, ready: list[str]) -> str | None:
        with self._lock:
            free = [task_id for task_id in ready if task_id not in self._claimed]
            if not free:
                return None
            chosen = min(free, key=lambda task_id: self._served_at.get(task_id, 0.0))
            self._claimed.add(chosen)
            if len(self._served_at) > 4 * len(ready) + 64:  # forget lanes of deleted tasks
                self._served_at = {t: v for t, v in self._served_at.items() if t in ready}
            return chosen

    def _drain(self, sender: LaneSender, task_id: str) -> None:
        turn_ends = time.monotonic() + LANE_SLICE_S
        while not self._stop.is_set() and time.monotonic() < turn_ends:
            messages = self._outbox.lane(self._sink, task_id, self._batch)
            if not messages or messages[0].next_attempt_at > time.time():
                return  # empty, or backed off meanwhile by the worker that served the lane before us
            results = sender.send(messages)
            if not self._settle(task_id, messages, results) or len(results) < len(messages):
                return

    def _settle(self, task_id: str, messages: Sequence[QueuedMessage], results: Sequence[DeliveryResult]) -> bool:
        """Apply the results; False when the lane must wait (a row is to be retried)."""
        delivered: list[int] = []
        flowing = True
        try:
            for message, result in zip(messages, results, strict=False):
                if result.outcome is Outcome.DELIVERED:
                    delivered.append(message.row_id)
                elif result.outcome is Outcome.PERMANENT:
                    log.error("%s event %s of task %s dead-lettered: %s", self._sink.value, message.message_id,
                              task_id, result.reason)
                    self._outbox.dead_letter(message, result.reason, self._shown_destination(message))
                    if self._on_dead_letter is not None:
                        self._on_dead_letter(task_id, self._sink.value, result.reason)
                else:
                    delay = result.retry_after_s or self._retry.delay(message.attempts)
                    log.warning("%s event %s of task %s not delivered (attempt %d), retry in %.1f s: %s",
                                self._sink.value, message.message_id, task_id, message.attempts + 1, delay,
                                result.reason)
                    self._outbox.retry_later(message, delay, result.reason)
                    flowing = False
        finally:
            self._outbox.ack(self._sink, delivered)
        return flowing
