"""One running task: its input streams, the algorithm worker, and the hand-over of its events.

It runs inside a data-plane worker process (runtime/worker.py). Its inputs are consumers of the worker's
``StreamHub``: a camera another task in the same worker already watches is not opened again
(``sources/hub.py``; placement puts tasks that share a source in one worker). Threads: the streams' (inside
the hub) and one worker that takes the newest sampled frame of every input, runs the algorithm and commits
the events through ``commit``, which returns once the main process has them in the outbox. The worker never
queues frames: a slow algorithm or a slow commit makes its inputs' slots overwrite (and count) frames
instead of building latency.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.algorithms import registry
from agent.algorithms.event import Event
from agent.algorithms.runner import AlgorithmRunner, RunnerStatus
from agent.histogram import LatencyHistogram
from agent.redact import mask_text
from agent.sources.hub import ConsumerRequest, StreamConsumer, StreamHub, Watch
from agent.sources.source_key import source_key
from agent.sources.stream import StreamState, StreamStatus
from agent.sources.target import StreamTarget
from agent.tasks.model import TaskState
from agent.tasks.store import TaskRecord

log = logging.getLogger(__name__)

DOWN_STATES = frozenset({StreamState.RECONNECTING, StreamState.STALLED, StreamState.FAILED})
REPORT_INTERVAL_S = 5.0
INPUT_CHECK_INTERVAL_S = 0.5
# per analysed frame, capture → analysed and its events committed (seconds); /metrics and the capacity bench
CAPTURE_TO_COMMIT_BUCKETS: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class StartFailed(Exception):
    """The task cannot run at all (e.g. its algorithm is no longer installed); the reason is user-facing."""


@dataclass(frozen=True)
class PipelineStatus:
    task_id: str
    service_name: str
    state: TaskState
    status: str  # one line for people: why it is in that state
    inputs: tuple[StreamStatus, ...]
    runner: RunnerStatus
    frames_processed: int
    events: int
    submit_errors: int
    latency_buckets: tuple[tuple[float, int], ...]  # per frame, capture → committed; cumulative, ends with +Inf
    latency_sum: float
    latency_count: int
    worker: int | None = None  # the worker process running it (set by the main process)


def input_summary(status: StreamStatus) -> dict[str, object]:
    """The per-input entry of a task's state (REST show, MQTT retained state)."""
    return {
        "index": status.input_index,
        "state": status.state.name,
        "fps": status.fps_out,
        "fps_in": status.fps_in,
        "reconnects": status.reconnects,
        "last_error": status.last_error,
        "keyframe_only": status.keyframe_only,
        "decode_mode": status.decode_mode,
        "shared_by": status.shared_by,  # tasks' inputs this camera's one connection serves
        "decode_errors": status.decode_errors,
        "dropped": status.dropped,
        "codec": status.codec,
        "resolution": f"{status.width}x{status.height}" if status.width and status.height else None,
    }


Resolve = Callable[[], StreamTarget]


class Pipeline:
    """``resolver_for(index)`` gives the callable input ``index``'s stream resolves its target with on
    every (re)connect, ``watch_for(index)`` the subscription to changes of that input's URL;
    ``commit(events)`` returns once they are durable and raises when they are not."""

    def __init__(self, record: TaskRecord, hub: StreamHub, resolver_for: Callable[[int], Resolve],
                 watch_for: Callable[[int], Watch], commit: Callable[[Sequence[Event]], None],
                 on_report: Callable[[PipelineStatus], None], *, models_roots: Sequence[Path] = (),
                 report_interval_s: float = REPORT_INTERVAL_S) -> None:
        spec = record.spec
        self.task_id = record.id
        self.service_name = record.service_name
        self._commit_events = commit
        self._on_report = on_report
        self._report_interval_s = report_interval_s
        categories: set[str] = set()
        if spec.output.webhook is not None:
            categories |= set(spec.output.webhook.data_category or ())
        try:
            algorithm = registry.create(record.service_name, spec.service_version, spec.config.common,
                                        data_categories=categories, models_roots=models_roots)
        except Exception as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            raise StartFailed(f"cannot load algorithm {record.service_name} {spec.service_version}: "
                              f"{mask_text(detail)}") from None
        self._runner = AlgorithmRunner(algorithm, record.id)
        self._wakeup = threading.Event()
        backend = algorithm.config.backend  # per task, from config.common; None = the agent's stream.backend
        self._streams: list[StreamConsumer] = [
            hub.consumer(ConsumerRequest(
                key=source_key(spec, index), input_index=index, target_fps=algorithm.fps,
                resolve=resolver_for(index), watch=watch_for(index), backend=backend, wakeup=self._wakeup,
                name=f"stream-{record.id[:8]}-{index}"))
            for index in range(len(spec.input.data))]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name=f"worker-{record.id[:8]}", daemon=True)
        self._lock = threading.Lock()
        self._down: set[int] = set()
        self._frames_processed = 0
        self._events = 0
        self._submit_errors = 0
        self._latency = LatencyHistogram(CAPTURE_TO_COMMIT_BUCKETS)

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        for stream in self._streams:
            stream.start()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Leave the streams (the last consumer of one closes it), let the worker commit what it holds."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wakeup.set()
        for stream in self._streams:
            stream.stop(max(0.1, (deadline - time.monotonic()) / 2))
        self._thread.join(max(0.1, deadline - time.monotonic()))


    # the worker ------------------------------------------------------------------------------------
    def _work(self) -> None:
        next_report = next_check = time.monotonic()
        while not self._stop.is_set():
            self._wakeup.wait(0.5)
            self._wakeup.clear()
            frames = {}
            for stream in self._streams:
                frame = stream.take()
                if frame is not None:
                    frames[stream.input_index] = frame
            events: list[Event] = []
            if frames:
                events += self._runner.process(frames)
            if time.monotonic() >= next_check:  # input up/down is news at human scale, not per frame
                next_check = time.monotonic() + INPUT_CHECK_INTERVAL_S
                events += self._input_transitions()
            if events:
                self._commit(events)
            if frames:
                self._count_frames(frame.info.captured_at for frame in frames.values())
            if time.monotonic() >= next_report:
                next_report = time.monotonic() + self._report_interval_s
                self._report()
        self._report()

    def _input_transitions(self) -> list[Event]:
        events: list[Event] = []
        now = time.time()
        for stream in self._streams:
            status = stream.status()
            index = status.input_index
            if status.state in DOWN_STATES and index not in self._down:
                self._down.add(index)
                events += self._runner.input_down(index, status.last_error or status.state.name.lower(), now)
            elif status.state is StreamState.RUNNING and index in self._down:
                self._down.discard(index)
                events += self._runner.input_up(index, now)
        return events

    def _commit(self, events: Sequence[Event]) -> None:
        try:
            self._commit_events(events)
        except Exception as exc:  # e.g. a full disk: count it, say it, keep analysing
            with self._lock:
                self._submit_errors += 1
            log.error("task %s: committing %d events failed: %s", self.task_id, len(events), mask_text(repr(exc)))
            return
        with self._lock:
            self._events += len(events)

    def _count_frames(self, captured: Iterable[float]) -> None:
        """Frames done: analysed and their events (if any) committed. Latency counts from capture."""
        done = time.time()
        with self._lock:
            for captured_at in captured:
                self._frames_processed += 1
                self._latency.observe(max(0.0, done - captured_at))

    def _report(self) -> None:
        try:
            self._on_report(self.status())
        except Exception:  # the report is informational; the worker must go on
            log.exception("task %s: status report failed", self.task_id)

    # status ----------------------------------------------------------------------------------------
    def status(self) -> PipelineStatus:
        inputs = tuple(stream.status() for stream in self._streams)
        runner = self._runner.status()
        state, text = derive_state(inputs, runner)
        with self._lock:
            return PipelineStatus(
                task_id=self.task_id, service_name=self.service_name, state=state, status=text,
                inputs=inputs, runner=runner, frames_processed=self._frames_processed, events=self._events,
                submit_errors=self._submit_errors, latency_buckets=self._latency.cumulative(),
                latency_sum=self._latency.sum, latency_count=self._latency.count,
            )


def derive_state(inputs: Sequence[StreamStatus], runner: RunnerStatus) -> tuple[TaskState, str]:
    """A task's state from its parts, with one line that says why."""
    total = len(inputs)
    if not runner.healthy:
        return TaskState.ABNORMAL, f"algorithm failing: {runner.last_error or 'repeated errors'}"
    if total and all(s.state is StreamState.ENDED for s in inputs):
        return TaskState.SUCCEEDED, f"all {total} file input(s) played to their end"
    down = [s for s in inputs if s.state in DOWN_STATES]
    if total and len(down) == total:
        first = down[0]
        return TaskState.ABNORMAL, (f"all {total} input(s) failing; input {first.input_index}: "
                                    f"{first.last_error or first.state.name.lower()}")
    running = [s for s in inputs if s.state in (StreamState.RUNNING, StreamState.ENDED)]
    if running:
        if down:
            first = down[0]
            return TaskState.RUNNING, (f"{len(running)} of {total} inputs running; input {first.input_index}: "
                                       f"{first.last_error or first.state.name.lower()}")
        return TaskState.RUNNING, f"{total} input(s) running"
    return TaskState.STARTING, "connecting to inputs"
