"""Runs one task's algorithm so that its faults stay inside the task.

An exception in the algorithm is counted and logged with the task id and inputs, and that call's
frames are skipped; after ``max_consecutive_failures`` in a row the runner reports itself unhealthy
(the pipeline then marks the task ABNORMAL) until a call succeeds again. A call longer than its budget
is counted and logged; the pipeline's newest-frame slots mean frames arriving meanwhile are dropped,
not queued. Python cannot stop a thread, so a call that never returns is not ended here:
``RunnerStatus.in_call_s`` shows it, for the supervisor to act on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from agent.algorithms.base import Algorithm
from agent.algorithms.event import Event
from agent.histogram import LatencyHistogram
from agent.logging_setup import REPEAT_GROUP
from agent.redact import mask_text
from agent.sources.frame import Frame

# Upper bounds (seconds) of one algorithm call's duration, Prometheus style; +Inf is implied. Finer at
# the low end than the pipeline's capture → commit buckets: a cheap algorithm's call takes a few ms.
CALL_LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunnerStatus:
    task_id: str
    service_name: str
    service_version: str
    healthy: bool
    calls: int  # process / input_down / input_up calls made
    failures: int  # calls that raised or returned something other than a list of Events
    consecutive_failures: int
    slow_calls: int  # calls that took longer than the budget
    last_error: str | None  # "ExceptionType: message", secrets masked
    in_call_s: float  # how long the call now running has taken; 0 when idle
    latency_buckets: tuple[tuple[float, int], ...]  # (upper bound, cumulative count), ending with +Inf
    latency_sum: float
    latency_count: int


class AlgorithmRunner:
    def __init__(self, algorithm: Algorithm, task_id: str, *, max_consecutive_failures: int = 5,
                 budget_s: float = 1.0) -> None:
        if max_consecutive_failures < 1 or budget_s <= 0:
            raise ValueError("max_consecutive_failures must be >= 1 and budget_s > 0")
        self.algorithm = algorithm
        self.task_id = task_id
        self.max_consecutive_failures = max_consecutive_failures
        self.budget_s = budget_s
        self._lock = threading.Lock()  # status() is read from other threads (metrics, task status)
        self._calls = 0
        self._failures = 0
        self._consecutive = 0
        self._slow = 0
        self._last_error: str | None = None
        self._started: float | None = None
        self._latency = LatencyHistogram(CALL_LATENCY_BUCKETS)
        # The log handler's repeat limiter groups these lines per task, not per text: an algorithm failing
        # or slow on every frame, with a new message each time, must not write a line per frame.
        self._failed_group = {REPEAT_GROUP: f"{task_id} failed"}
        self._slow_group = {REPEAT_GROUP: f"{task_id} slow"}

    def process(self, frames: Mapping[int, Frame]) -> list[Event]:
        """The algorithm's events for these frames; [] when it failed (never raises)."""
        if not frames:
            return []
        return self._call("process", sorted(frames), lambda: self.algorithm.process(frames))

    def input_down(self, input_index: int, reason: str, now: float) -> list[Event]:
        return self._call("input_down", [input_index],
                          lambda: self.algorithm.input_down(input_index, mask_text(reason), now))

    def input_up(self, input_index: int, now: float) -> list[Event]:
        return self._call("input_up", [input_index], lambda: self.algorithm.input_up(input_index, now))

    @property
    def healthy(self) -> bool:
        with self._lock:
            return self._consecutive < self.max_consecutive_failures

    def status(self) -> RunnerStatus:
        with self._lock:
            return RunnerStatus(
                task_id=self.task_id, service_name=self.algorithm.service_name,
                service_version=self.algorithm.version,
                healthy=self._consecutive < self.max_consecutive_failures, calls=self._calls,
                failures=self._failures, consecutive_failures=self._consecutive, slow_calls=self._slow,
                last_error=self._last_error,
                in_call_s=0.0 if self._started is None else time.monotonic() - self._started,
                latency_buckets=self._latency.cumulative(), latency_sum=self._latency.sum,
                latency_count=self._calls,
            )

    def _call(self, what: str, inputs: list[int], call: Callable[[], list[Event]]) -> list[Event]:
        started = time.monotonic()
        with self._lock:
            self._started = started
        error: str | None = None
        events: list[Event] = []
        try:
            result = call()
            if not (isinstance(result, list) and all(isinstance(event, Event) for event in result)):
                raise TypeError(f"{what}() must return a list of Event, not {type(result).__name__}")
            events = result
        except Exception as exc:  # the algorithm is foreign code: contain anything it raises
            error = mask_text(f"{type(exc).__name__}: {exc}")
        elapsed = time.monotonic() - started
        with self._lock:
            self._started = None
            self._calls += 1
            self._latency.observe(elapsed)
            slow = elapsed > self.budget_s
            self._slow += slow
            if error is None:
                recovered = self._consecutive >= self.max_consecutive_failures
                self._consecutive = 0
            else:
                recovered = False
                self._failures += 1
                self._consecutive += 1
                self._last_error = error
            consecutive = self._consecutive
        name = self.algorithm.service_name
        if slow:
            log.warning("task %s: %s.%s on inputs %s took %.3f s (budget %.3f s)", self.task_id, name, what,
                        inputs, elapsed, self.budget_s, extra=self._slow_group)
        if error is not None:
            log.warning("task %s: %s.%s failed on inputs %s (%d in a row): %s", self.task_id, name, what,
                        inputs, consecutive, error, extra=self._failed_group)
            if consecutive == self.max_consecutive_failures:
                log.error("task %s: %s failed %d times in a row; the task is unhealthy", self.task_id, name,
                          consecutive)
        elif recovered:
            log.info("task %s: %s succeeded again; the task is healthy", self.task_id, name)
        return events

