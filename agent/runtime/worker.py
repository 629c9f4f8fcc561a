"""A data-plane worker process: runs the pipelines (streams, decoders, algorithm threads) of the tasks the
main process places on it, with a GIL of its own.

The process's main thread applies start and stop commands in order; a receiving thread takes the main
process's answers (an events batch committed, an input resolved) and hands them to the pipeline thread
waiting for them, so a pipeline that is stopping can still commit what it holds. A pipeline commits by
sending its events and waiting for the answer: one batch in flight per task, so a main process that is
slow to commit makes the pipeline's slots overwrite (and count) frames, and an event is committed once
or not at all — never resent.

Inputs are resolved by the main process (one VCN session and one device-twin client for the whole agent,
secrets of the configuration stay there): the stream's resolve call asks it over the pipe, and a change of
an input's URL that the main process hears of arrives as Reconnect. The worker's ``StreamHub`` opens each
camera once for every task on it (placement sends tasks that share a source to the same worker).

The worker ignores SIGINT and SIGTERM: a terminal's Ctrl-C or systemd's stop signal reaches the whole
process group, and the main process stops its workers in order (their events committed). When the main
process goes away the pipe ends, and the worker stops by itself.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection

import cv2

from agent.algorithms.event import Event
from agent.logging_setup import configure_logging
from agent.redact import mask_text, secrets
from agent.runtime.pipeline import Pipeline, PipelineStatus, Resolve, StartFailed
from agent.runtime.worker_protocol import (
    Committed,
    EventsBatch,
    FromWorker,
    Reconnect,
    Resolved,
    ResolveRequest,
    Shutdown,
    Started,
    StartTask,
    StatusReport,
    Stopped,
    StopTask,
    StreamsReport,
    WorkerConfig,
    WorkerReady,
)
from agent.sources.hub import StreamHub, Watch
from agent.sources.resolvers.base import ResolveError
from agent.sources.target import StreamTarget
from agent.tasks.model import spec_secrets

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 4.0  # per pipeline; the main process kills a worker that outlives its bound
STREAMS_REPORT_S = 1.0  # the open streams go to the main process (/metrics) at most this often
RESOLVE_WAIT_S = 60.0  # longer than any resolver's own timeouts (VCN login, RESTful lookup, device twin)
_WAIT_SLICE_S = 0.5


class CommitFailed(Exception):
    """The main process could not commit an events batch (the message says why, masked)."""


def run(conn: Connection, config: WorkerConfig) -> None:
    """The worker process's entry point (the target of ``multiprocessing.Process``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(config.log_level, config.log_format, worker=config.index)  # type: ignore[arg-type]
    # The box's cores are shared out by streams and worker processes, as ONNX Runtime's are (one thread
    # per task): OpenCV's own pool would add a thread per core in every worker, whose spin-waits cost
    # more than the conversions they split (0.16 s a minute of a 5 fps 720p task, docs/benchmarks.md).
    cv2.setNumThreads(1)
    Worker(conn, config).serve()


class _Answer:
    """One answer a pipeline thread waits for (an events batch's or a resolve request's)."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.message: Committed | Resolved | None = None


class Worker:
    def __init__(self, conn: Connection, config: WorkerConfig) -> None:
        self._conn = conn
        self._config = config
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._closing = threading.Event()  # the main process is gone: nobody will answer any more
        self._ids = itertools.count(1)
        self._answers: dict[tuple[str, int], _Answer] = {}
        self._pipelines: dict[int, Pipeline] = {}
        self._hub = StreamHub(config.stream, realtime_files=config.realtime_files)
        # (run, input) → who wants to hear that the main process saw the input's URL change
        self._watchers: dict[tuple[int, int], list[Callable[[str], None]]] = {}
        self._streams_sent_at = 0.0
        self._commands: queue.SimpleQueue[StartTask | StopTask | Shutdown] = queue.SimpleQueue()

    def serve(self) -> None:
        receiver = threading.Thread(target=self._receive, name="worker-receive", daemon=True)
        receiver.start()
        self._send(WorkerReady(os.getpid()))
        while True:
            command = self._commands.get()
            if isinstance(command, Shutdown):
                break
            try:
                if isinstance(command, StartTask):
                    self._start(command)
                else:
                    self._stop(command.run_id)
            except Exception:  # one task's trouble must not end the worker and every other task on it
                log.exception("%s failed", type(command).__name__)
        self._stop_all()
        logging.shutdown()

    # commands ----------------------------------------------------------------------------------------
    def _start(self, command: StartTask) -> None:
        record = command.record
        run_id = command.run_id
        secrets.register(f"task:{record.id}", spec_secrets(record.spec))
        try:
            pipeline = Pipeline(
                record, self._hub, lambda index: self._resolver(run_id, index),
                lambda index: self._watch(run_id, index), lambda events: self._commit(run_id, events),
                lambda status: self._report(run_id, status),
                models_roots=self._config.models_roots, report_interval_s=self._config.report_interval_s)
        except StartFailed as exc:
            secrets.forget(f"task:{record.id}")
            self._send(Started(run_id, error=str(exc)))
            return
        with self._lock:
            self._pipelines[run_id] = pipeline
        pipeline.start()
        self._send(Started(run_id, status=pipeline.status()))

    def _stop(self, run_id: int) -> None:
        with self._lock:
            pipeline = self._pipelines.pop(run_id, None)
        if pipeline is not None:
            pipeline.stop(STOP_TIMEOUT_S)
            if not any(p.task_id == pipeline.task_id for p in self._running()):
                secrets.forget(f"task:{pipeline.task_id}")
        self._send(StreamsReport(tuple(self._hub.streams())))  # a stream may have closed with it
        self._send(Stopped(run_id))

    def _stop_all(self) -> None:
        with self._lock:
            pipelines = list(self._pipelines.values())
            self._pipelines.clear()
        stoppers = [threading.Thread(target=p.stop, args=(STOP_TIMEOUT_S,), name=f"stop-{p.task_id[:8]}")
                    for p in pipelines]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(STOP_TIMEOUT_S + 1.0)

    def _running(self) -> list[Pipeline]:
        with self._lock:
            return list(self._pipelines.values())

    # what the pipelines call --------------------------------------------------------------------------
    def _commit(self, run_id: int, events: Sequence[Event]) -> None:
        batch_id = next(self._ids)
        answer = self._expect("batch", batch_id)
        self._send(EventsBatch(batch_id, run_id, tuple(events)))
        message = self._await("batch", batch_id, answer, None)
        if not isinstance(message, Committed):
            raise CommitFailed("the agent's main process is gone; the events were not committed")
        if message.error is not None:
            raise CommitFailed(message.error)

    def _resolver(self, run_id: int, index: int) -> Resolve:
        def resolve() -> StreamTarget:
            request_id = next(self._ids)
            answer = self._expect("resolve", request_id)
            self._send(ResolveRequest(request_id, run_id, index))
            message = self._await("resolve", request_id, answer, RESOLVE_WAIT_S)
            if not isinstance(message, Resolved):
                raise ResolveError("no answer from the agent's main process")
            if message.target is None:
                raise ResolveError(message.error or "the input could not be resolved", retryable=message.retryable)
            return message.target

        return resolve

    def _watch(self, run_id: int, index: int) -> Watch:
        def watch(on_change: Callable[[str], None]) -> Callable[[], None]:
            with self._lock:
                self._watchers.setdefault((run_id, index), []).append(on_change)

            def unwatch() -> None:
                with self._lock:
                    listeners = self._watchers.get((run_id, index), [])
                    if on_change in listeners:
                        listeners.remove(on_change)
                    if not listeners:
                        self._watchers.pop((run_id, index), None)

            return unwatch

        return watch

    def _report(self, run_id: int, status: PipelineStatus) -> None:
        self._send(StatusReport(run_id, status))
        now = time.monotonic()
        if now - self._streams_sent_at >= STREAMS_REPORT_S:
            self._streams_sent_at = now
            self._send(StreamsReport(tuple(self._hub.streams())))

    # the pipe ------------------------------------------------------------------------------------------
    def _send(self, message: FromWorker) -> None:
        try:
            with self._send_lock:
                self._conn.send(message)
        except (OSError, ValueError) as exc:  # the main process is gone; the receiver ends the worker
            log.debug("send failed: %s", mask_text(repr(exc)))

    def _expect(self, kind: str, key: int) -> _Answer:
        answer = _Answer()
        with self._lock:
            self._answers[(kind, key)] = answer
        return answer

    def _await(self, kind: str, key: int, answer: _Answer, timeout: float | None) -> Committed | Resolved | None:
        waited = 0.0
        try:
            while not answer.arrived.wait(_WAIT_SLICE_S):
                waited += _WAIT_SLICE_S
                if self._closing.is_set() or (timeout is not None and waited >= timeout):
                    return None
            return answer.message
        finally:
            with self._lock:
                self._answers.pop((kind, key), None)

    def _receive(self) -> None:
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                log.info("the main process closed the channel; stopping")
                break
            if isinstance(message, (StartTask, StopTask, Shutdown)):
                self._commands.put(message)
            elif isinstance(message, Committed):
                self._answer(("batch", message.batch_id), message)
            elif isinstance(message, Resolved):
                self._answer(("resolve", message.request_id), message)
            elif isinstance(message, Reconnect):
                with self._lock:
                    listeners = list(self._watchers.get((message.run_id, message.input_index), ()))
                for on_change in listeners:
                    on_change(message.reason)
        self._closing.set()
        self._commands.put(Shutdown())

    def _answer(self, key: tuple[str, int], message: Committed | Resolved) -> None:
        with self._lock:
            answer = self._answers.get(key)
        if answer is not None:
            answer.message = message
            answer.arrived.set()
