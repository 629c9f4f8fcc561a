"""The main process's side of the data plane: a pool of worker processes and the tasks placed on them.

``WorkerPool`` starts ``runtime.workers`` processes with the forkserver context (never ``fork`` from a
process that already has threads: the forkserver is a clean single-threaded process that forks each
worker with the worker's modules already imported, so a replacement is up in a fraction of a second).

One receiving thread per worker applies what the worker sends: an events batch is committed to the
outbox through ``ResultRouter.submit`` and answered (the worker waits for that answer, so an event crosses
once); a status report is kept for status, metrics and the supervisor; a resolve request is answered by
the agent's one ``ResolverSet`` on a small thread pool (lookups may take seconds). Edgecamera URL changes
are watched here too and sent to the worker as a reconnect.

A worker that dies (SIGKILL, a native crash) ends its pipe and its process sentinel fires: its receiving
thread reports the lost tasks to the supervisor through ``on_lost`` at once, starts a replacement in the
same slot, and the supervisor starts the tasks again (placed as new ones). Batches the worker sent before
it died were committed and stay committed; a batch cut off mid-send was never committed. A worker that
dies again soon after it was started (a crash loop: a poison stream, a worker dying at start-up) is
replaced after a backoff (``backoff.WORKER_RESTART``); while its slot waits, tasks go to the other workers.
"""

from __future__ import annotations

import itertools
import logging
import math
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess

from agent.algorithms import registry
from agent.backoff import WORKER_RESTART, RestartBackoff
from agent.outputs.router import ResultRouter
from agent.redact import mask_text
from agent.runtime import placement, procstat
from agent.runtime.pipeline import PipelineStatus, StartFailed
from agent.runtime.worker import run as worker_main
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
    ToWorker,
    WorkerConfig,
    WorkerReady,
)
from agent.settings import AgentSettings
from agent.sources.hub import SharedStreamStatus
from agent.sources.resolvers.base import ResolveError
from agent.sources.resolvers.registry import ResolverSet, source_id_of
from agent.sources.source_key import SourceKey, source_key
from agent.tasks.errors import ApiError
from agent.tasks.model import TaskSpec
from agent.tasks.store import TaskRecord

log = logging.getLogger(__name__)

STATUS_REPORT_S = 1.0  # how fresh a task's status is in the main process (REST, /metrics, the supervisor)
READY_TIMEOUT_S = 30.0  # a worker's start, imports included, on a busy box
START_TIMEOUT_S = 30.0  # loading an algorithm (model files) on a busy box
STOP_TIMEOUT_S = 5.0  # the worker's own bound per pipeline (4 s) plus the round trip
ALIVE_REPORT_AGE_S = 30.0  # a task that has not reported for this long has a stuck worker loop
RESOLVE_THREADS = 4

class WorkerLost(Exception):
    """The worker died while the task was starting on it; the message says how (pid, signal)."""


class WorkerWaiting(Exception):
    """No worker is up: the one the task would go to starts again after its backoff, in ``seconds``."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


OnReport = Callable[[PipelineStatus], None]
OnLost = Callable[[Sequence["TaskRun"], str], None]


@dataclass(frozen=True)
class WorkerInfo:
    """One worker slot, for /metrics and diag."""

    index: int
    pid: int | None
    alive: bool
    restarts: int  # replacements started after the worker died
    restart_in: float | None  # seconds until the replacement starts while the slot waits out its backoff
    cpu_seconds: float | None
    rss_bytes: int | None
    tasks: tuple[str, ...]


def shared_sources(spec: TaskSpec) -> list[SourceKey]:
    """The sources of ``spec``'s inputs that a worker decodes once for every task on them (files are not)."""
    keys = [source_key(spec, index) for index in range(len(spec.input.data))]
    return [key for key in keys if key.shared]


class TaskRun:
    """One run of a task on a worker, as the main process sees it."""

    def __init__(self, run_id: int, record: TaskRecord, worker: int, target_fps: float,
                 on_report: OnReport) -> None:
        spec = record.spec
        self.run_id = run_id
        self.record = record
        self.task_id = record.id
        self.worker = worker
        self.target_fps = target_fps
        self.stream_ids = [source_id_of(spec.input.type, spec, i) for i in range(len(spec.input.data))]
        self.source_keys = shared_sources(spec)
        self._on_report = on_report
        self._lock = threading.Lock()
        self._status: PipelineStatus | None = None
        self._reported_at = time.monotonic()
        # counted here, where the outbox is: exact at once, while the worker's report is up to a second old
        self._events = 0
        self._submit_errors = 0
        self.started = threading.Event()
        self.start_error: str | None = None
        self.lost: str | None = None  # how the worker died, when it died before the task had started
        self.stopped = threading.Event()
        self.unwatch: list[Callable[[], None]] = []
        self.launched_at = time.monotonic()  # how long the run lived, when its worker dies

    def status(self) -> PipelineStatus:
        with self._lock:
            status = self._status
            events, errors = self._events, self._submit_errors
        if status is None:
            raise RuntimeError(f"task {self.task_id} has no status before it started")
        return replace(status, events=events, submit_errors=errors)

    def count_commit(self, events: int, failed: bool) -> None:
        with self._lock:
            if failed:
                self._submit_errors += 1
            else:
                self._events += events

    @property
    def alive(self) -> bool:
        """The task's loop in the worker is turning: it reports every second from that loop, so a report
        this old means a stuck algorithm or worker (the watchdog pings systemd only while every task is)."""
        with self._lock:
            return time.monotonic() - self._reported_at < ALIVE_REPORT_AGE_S

    def cost(self) -> float:
        """Decoded pixels per second: measured once the inputs run, assumed before."""
        with self._lock:
            status = self._status
        measures = [placement.InputMeasure() for _ in self.stream_ids]
        if status is not None:
            measures = [placement.InputMeasure(s.width, s.height, s.fps_in or None, s.keyframe_only)
                        for s in status.inputs]
        return placement.task_cost(self.target_fps, measures)

    def apply_started(self, message: Started) -> None:
        self.start_error = message.error
        if message.status is not None:
            self._update(message.status)
        self.started.set()

    def apply_report(self, status: PipelineStatus) -> None:
        self._update(status)
        try:
            self._on_report(self.status())
        except Exception:  # the report is informational; the worker's channel must go on
            log.exception("task %s: status report failed", self.task_id)

    def _update(self, status: PipelineStatus) -> None:
        with self._lock:
            self._status = replace(status, worker=self.worker)
            self._reported_at = time.monotonic()


class _Worker:
    """One slot of the pool: its current process, the pipe to it and the thread that receives from it."""

    def __init__(self, context: ForkServerContext, config: WorkerConfig,
                 on_message: Callable[[_Worker, FromWorker], None],
                 on_exit: Callable[[_Worker, BaseProcess], None]) -> None:
        self.index = config.index
        self.config = config
        self._context = context
        self._on_message = on_message
        self._on_exit = on_exit
        self._send_lock = threading.Lock()
        self.ready = threading.Event()
        self.process: BaseProcess | None = None
        self._conn: Connection | None = None
        self.restarts = 0
        self.streams: tuple[SharedStreamStatus, ...] = ()  # as the worker last reported them
        self.started_at = time.monotonic()
        self.backoff = RestartBackoff(WORKER_RESTART)
        self.restart_at: float | None = None  # while the slot waits out its backoff: when it starts again

    def start(self) -> None:
        ctx = self._context
        self.ready.clear()
        self.streams = ()
        self.started_at = time.monotonic()
        ours, theirs = ctx.Pipe(duplex=True)
        process = ctx.Process(target=worker_main, args=(theirs, self.config),
                              name=f"edge-agent-worker-{self.index}", daemon=True)
        process.start()
        theirs.close()  # the worker's end lives in the worker only: its death ends the pipe here
        with self._send_lock:
            self.process, self._conn = process, ours
        self.restart_at = None
        threading.Thread(target=self._receive, args=(process, ours), name=f"worker-{self.index}-receive",
                         daemon=True).start()

    def send(self, message: ToWorker) -> bool:
        with self._send_lock:
            conn = self._conn
            if conn is None:
                return False
            try:
                conn.send(message)
                return True
            except (OSError, ValueError):  # the worker died; its receiving thread reports it
                return False

    @property
    def pid(self) -> int | None:
        process = self.process
        return None if process is None else process.pid

    def restart_in(self) -> float | None:
        """Seconds until the replacement starts while the slot waits out its backoff; None when it does not."""
        at = self.restart_at
        return None if at is None else max(0.0, at - time.monotonic())

    def _receive(self, process: BaseProcess, conn: Connection) -> None:
        sentinel = process.sentinel
        while True:
            ready = wait([conn, sentinel])
            if conn in ready:
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    break
                try:
                    self._on_message(self, message)
                except Exception:  # one message's trouble must not cut the worker off from the agent
                    log.exception("worker %d: handling %s failed", self.index, type(message).__name__)
            elif sentinel in ready and not conn.poll():  # what it sent before it died is applied first
                break
        process.join(1.0)
        with self._send_lock:
            if self._conn is conn:
                self._conn = None
        conn.close()
        self._on_exit(self, process)


class WorkerPool:
    def __init__(self, settings: AgentSettings, router: ResultRouter, resolvers: ResolverSet, *,
                 realtime_files: bool = True) -> None:
        self._router = router
        self._resolvers = resolvers
        self._models_roots = tuple(settings.models_roots)
        context = multiprocessing.get_context("forkserver")
        assert isinstance(context, ForkServerContext)
        # every worker forks from a server that has already imported the worker's modules
        context.set_forkserver_preload([worker_main.__module__])
        self._workers = [
            _Worker(context, WorkerConfig(index, settings.stream, realtime_files, settings.log.level,
                                          settings.log.format, STATUS_REPORT_S, self._models_roots),
                    self._handle, self._exited)
            for index in range(settings.runtime.worker_count())
        ]
        self._lock = threading.Lock()
        self._runs: dict[int, TaskRun] = {}
        self._run_ids = itertools.count(1)
        self._stopping = threading.Event()
        self._on_lost: OnLost = lambda runs, reason: None
        self._resolving = ThreadPoolExecutor(RESOLVE_THREADS, thread_name_prefix="resolve")

    # lifecycle -----------------------------------------------------------------------------------
    def set_loss_handler(self, on_lost: OnLost) -> None:
        """``on_lost(runs, reason)`` is called when a worker died with those task runs on it."""
        self._on_lost = on_lost

    def start(self) -> None:
        """Start every worker process; a task's launch waits for its worker to be ready, so the REST API of
        an agent without tasks does not wait for the workers' imports."""
        for worker in self._workers:
            worker.start()

    def stop(self, timeout: float = STOP_TIMEOUT_S + 1.0) -> None:
        """Every worker stops its pipelines (their last events committed here) in parallel; a worker still
        running at the bound is killed."""
        self._stopping.set()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.send(Shutdown())
        for worker in self._workers:
            process = worker.process
            if process is None:
                continue
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker %d did not stop within %.1f s; killing it", worker.index, timeout)
                process.kill()
                process.join(1.0)
        with self._lock:
            runs = list(self._runs.values())
            self._runs.clear()
        for run in runs:
            self._unwatch(run)
        self._resolving.shutdown(wait=False, cancel_futures=True)

    # tasks ---------------------------------------------------------------------------------------
    def launch(self, record: TaskRecord, on_report: OnReport) -> TaskRun:
        """Start ``record`` on the worker placement picks; raises StartFailed (user-facing reason)."""
        spec = record.spec
        try:
            fps = registry.analysis_fps(record.service_name, spec.service_version, spec.config.common,
                                        models_roots=self._models_roots)
        except ApiError as exc:
            raise StartFailed(f"cannot load algorithm {record.service_name} {spec.service_version}: "
                              f"{exc.reason}") from None
        with self._lock:
            loads = {worker.index: 0.0 for worker in self._workers}
            owners: dict[SourceKey, int] = {}
            for placed in self._runs.values():
                loads[placed.worker] += placed.cost()
                owners.update(dict.fromkeys(placed.source_keys, placed.worker))
            up = [worker.index for worker in self._workers if worker.restart_at is None]
            index = placement.choose_worker(loads, shared_sources(spec), owners, up)
            worker = self._workers[index]
            waiting = worker.restart_in()
            if waiting:  # no worker is up: the task waits for this one's start, not READY_TIMEOUT_S of it
                raise WorkerWaiting(f"no worker process is up; worker {index} starts again in "
                                    f"{math.ceil(waiting)} s", waiting)
            run = TaskRun(next(self._run_ids), record, index, fps, on_report)
            self._runs[run.run_id] = run
        if not worker.ready.wait(READY_TIMEOUT_S):
            log.error("worker %d did not come up within %.0f s", index, READY_TIMEOUT_S)
        if not worker.send(StartTask(run.run_id, record)) or not run.started.wait(START_TIMEOUT_S) \
                or run.start_error is not None or run.lost is not None:
            with self._lock:
                self._runs.pop(run.run_id, None)
            if run.lost is not None:
                raise WorkerLost(run.lost)
            raise StartFailed(run.start_error or f"worker {index} did not start the task")
        for input_index in range(len(spec.input.data)):
            run.unwatch.append(self._resolvers.watch(spec, record.id, input_index,
                                                     self._reconnect_on_change(run, input_index)))
        log.info("task %s placed on worker %d (pid %s)", record.id, index, worker.pid)
        return run

    def retire(self, run: TaskRun, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the run; its last events are committed before this returns (or the bound passes)."""
        self._unwatch(run)
        worker = self._workers[run.worker]
        if worker.send(StopTask(run.run_id)) and not run.stopped.wait(timeout):
            log.warning("task %s: worker %d did not confirm the stop within %.1f s", run.task_id, run.worker,
                        timeout)
        with self._lock:
            self._runs.pop(run.run_id, None)

    def runs(self) -> list[TaskRun]:
        with self._lock:
            return list(self._runs.values())

    def streams(self) -> list[SharedStreamStatus]:
        """Every live worker's open streams, as last reported (a dead worker's are gone with it)."""
        return [stream for worker in self._workers for stream in worker.streams]

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            tasks = {worker.index: tuple(r.task_id for r in self._runs.values() if r.worker == worker.index)
                     for worker in self._workers}
        infos = []
        for worker in self._workers:
            process = worker.process
            pid = worker.pid
            used = procstat.usage(pid) if pid is not None else None
            infos.append(WorkerInfo(worker.index, pid, process is not None and process.is_alive(),
                                    worker.restarts, worker.restart_in(), used.cpu_seconds if used else None,
                                    used.rss_bytes if used else None, tasks[worker.index]))
        return infos

    # what the workers send -------------------------------------------------------------------------
    def _handle(self, worker: _Worker, message: FromWorker) -> None:
        if isinstance(message, WorkerReady):
            worker.ready.set()
            log.info("worker %d up (pid %d)", worker.index, message.pid)
            return
        if isinstance(message, StreamsReport):
            worker.streams = message.streams
            return
        with self._lock:
            run = self._runs.get(message.run_id)
        if isinstance(message, EventsBatch):
            worker.send(self._commit(run, message))
        elif isinstance(message, StatusReport):
            if run is not None:
                run.apply_report(message.status)
        elif isinstance(message, Started):
            if run is not None:
                run.apply_started(message)
        elif isinstance(message, Stopped):
            if run is not None:
                run.stopped.set()
        elif isinstance(message, ResolveRequest):
            self._resolving.submit(self._resolve, worker, run, message)

    def _commit(self, run: TaskRun | None, batch: EventsBatch) -> Committed:
        if run is None:
            return Committed(batch.batch_id, error="the task run is no longer known to the agent")
        output = run.record.spec.output
        try:
            self._router.submit(run.task_id, run.record.service_name, output, run.stream_ids, batch.events)
        except Exception as exc:  # e.g. a full disk: the pipeline counts it and goes on analysing
            run.count_commit(len(batch.events), failed=True)
            return Committed(batch.batch_id, error=mask_text(f"{type(exc).__name__}: {exc}"))
        run.count_commit(len(batch.events), failed=False)
        return Committed(batch.batch_id)

    def _resolve(self, worker: _Worker, run: TaskRun | None, request: ResolveRequest) -> None:
        if run is None:
            worker.send(Resolved(request.request_id, None, "the task run is no longer known to the agent", False))
            return
        resolve = self._resolvers.resolver_for(run.record.spec, run.task_id, request.input_index)
        try:
            answer = Resolved(request.request_id, resolve())
        except ResolveError as exc:
            answer = Resolved(request.request_id, None, exc.message, exc.retryable)
        worker.send(answer)

    def _reconnect_on_change(self, run: TaskRun, input_index: int) -> Callable[[str], None]:
        def on_change(reason: str) -> None:
            self._workers[run.worker].send(Reconnect(run.run_id, input_index, reason))

        return on_change

    def _unwatch(self, run: TaskRun) -> None:
        for unwatch in run.unwatch:
            try:
                unwatch()
            except Exception as exc:  # an unsubscribe failing must not stop the task from stopping
                log.warning("task %s: unwatch failed: %s", run.task_id, mask_text(repr(exc)))
        run.unwatch.clear()

    def _exited(self, worker: _Worker, process: BaseProcess) -> None:
        """The worker's process ended: the end of a shutdown, or a death to contain."""
        if self._stopping.is_set():
            return
        reason = _exit_reason(worker.index, process)
        lived = time.monotonic() - worker.started_at
        delay = worker.backoff.died(lived)
        worker.streams = ()  # its connections died with it
        worker.ready.clear()  # the tasks' relaunch waits for the replacement
        if delay:  # before the tasks are relaunched: placement keeps them off this slot
            worker.restart_at = time.monotonic() + delay
        with self._lock:
            lost = [run for run in self._runs.values() if run.worker == worker.index]
            for run in lost:
                self._runs.pop(run.run_id, None)
        for run in lost:
            if not run.started.is_set():
                run.lost = reason
            run.started.set()
            run.stopped.set()
            self._unwatch(run)
        again = f"it keeps dying within {worker.backoff.stable_s:.0f} s of a start: a replacement starts in " \
                f"{delay:.1f} s" if delay else "a replacement starts now"
        log.error("%s after %.1f s up; %s; %d task(s) on it start again", reason, lived, again, len(lost))
        self._on_lost(lost, reason)
        if self._stopping.wait(delay):  # a stop ends the wait, and no replacement outlives the pool
            return
        worker.restarts += 1
        try:
            worker.start()
        except Exception:  # the relaunch then fails START_FAILED, saying the worker did not start the task
            log.exception("worker %d could not be started again", worker.index)


def _exit_reason(index: int, process: BaseProcess) -> str:
    code = process.exitcode
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"worker {index} (pid {process.pid}) was killed by {name}"
    return f"worker {index} (pid {process.pid}) exited with code {code}"
