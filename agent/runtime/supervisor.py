"""Reconciles stored tasks with running pipelines: on start-up, on every change, at schedule boundaries.

One thread does all starting and stopping, so REST and MQTT requests return at once and two changes
to one task can never race. Schedules are followed with a timer to the next boundary (no polling).
The pipelines run in the worker processes of a ``WorkerPool``; when a worker dies its tasks show
ABNORMAL with the reason until they run again on its replacement. A task lost again soon after its
relaunch (a poison stream crashing its worker) waits a backoff (``backoff.WORKER_RESTART``) before the
next one, like a schedule boundary: a due time the loop sleeps until.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from agent.backoff import WORKER_RESTART, RestartBackoff
from agent.redact import mask_text
from agent.runtime.pipeline import PipelineStatus, StartFailed, input_summary
from agent.runtime.workers import TaskRun, WorkerLost, WorkerPool, WorkerWaiting
from agent.tasks.errors import ApiError
from agent.tasks.model import TaskSpec, TaskState
from agent.tasks.schedule import schedule_status
from agent.tasks.service import SpecCheck, TaskChange, TaskService
from agent.tasks.store import Desired, TaskError, TaskRecord

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
REPORT_EVERY_S = 5.0  # a running task's fps and counters reach its state (and MQTT) this often
STOP_TIMEOUT_S = 8.0  # SIGTERM → exit within systemd's 10 s, streams closed, events committed
_ALL = "*"


def utc_now() -> datetime:
    return datetime.now(UTC)


class Supervisor:
    def __init__(self, service: TaskService, pool: WorkerPool, *, checks: Sequence[SpecCheck] = (),
                 clock: Callable[[], datetime] = utc_now) -> None:
        self._checks = list(checks)
        self._service = service
        self._pool = pool
        self._clock = clock
        self._pending: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pipelines: dict[str, tuple[TaskRun, TaskSpec]] = {}
        self._recovering: dict[str, str] = {}  # tasks whose worker died, and how: ABNORMAL until they run again
        self._next_change: dict[str, datetime] = {}
        # tasks lost with their worker: how soon each may start again, and when (monotonic) a waiting one is due
        self._restarts: dict[str, RestartBackoff] = {}
        self._relaunch_at: dict[str, float] = {}
        self._heartbeat = time.monotonic()
        self._busy = threading.Event()
        # held while a pipeline reports and while one is retired: no report lands after its retirement
        self._report_lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="supervisor", daemon=True)
        pool.set_loss_handler(self._on_worker_lost)

    # lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Resume every stored task: those RUNNING before a restart or power cut start again."""
        self._service.add_listener(self._on_change)
        self._pending.put(_ALL)
        self._thread.start()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """True once every queued change has been applied (used for READY=1 and by tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._pending.empty() and not self._busy.is_set():
                return True
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout / 4)
        with self._lock:
            self._pipelines.clear()
        # every worker stops its pipelines in parallel, their last events committed
        self._pool.stop(timeout * 3 / 4)
        # The desired state stays as the user set it: RUNNING tasks start again on the next start-up.

    def wake(self) -> None:
        """Re-check schedule boundaries now (after the injected clock moved, in tests)."""
        self._wake.set()

    # what health, metrics and diag read ------------------------------------------------------------
    def healthy(self) -> bool:
        if time.monotonic() - self._heartbeat > 6 * HEARTBEAT_S:
            return False
        with self._lock:
            return all(pipeline.alive for pipeline, _ in self._pipelines.values())

    def pipelines(self) -> list[PipelineStatus]:
        with self._lock:
            running = [pipeline for pipeline, _ in self._pipelines.values()]
        return [pipeline.status() for pipeline in running]

    # the loop --------------------------------------------------------------------------------------
    def _on_change(self, change: TaskChange) -> None:
        if change.kind != "runtime":
            self._pending.put(change.task_id)
            self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._heartbeat = time.monotonic()
            self._wake.wait(self._timeout())
            self._wake.clear()
            if self._stop.is_set():
                break
            self._busy.set()
            try:
                for task_id in self._due():
                    self._safely(task_id)
            finally:
                self._busy.clear()

    def _timeout(self) -> float:
        if not self._pending.empty():
            return 0.0
        now = self._clock()
        upcoming = [(at - now).total_seconds() for at in self._next_change.values()]
        with self._lock:
            relaunches = list(self._relaunch_at.values())
        monotonic = time.monotonic()
        upcoming += [at - monotonic for at in relaunches]
        return max(0.0, min([HEARTBEAT_S, *upcoming]))

    def _due(self) -> list[str]:
        ids: list[str] = []
        while not self._pending.empty():
            task_id = self._pending.get()
            if task_id == _ALL:
                ids += [record.id for record in self._service.records()]
            else:
                ids.append(task_id)
        now = self._clock()
        ids += [task_id for task_id, at in self._next_change.items() if at <= now]
        monotonic = time.monotonic()
        with self._lock:
            due = [task_id for task_id, at in self._relaunch_at.items() if at <= monotonic]
            for task_id in due:
                del self._relaunch_at[task_id]
            ids += due
            # a pipeline whose files all ended must be retired
            ids += [task_id for task_id, (pipeline, _) in self._pipelines.items()
                    if pipeline.status().state is TaskState.SUCCEEDED]
        return list(dict.fromkeys(ids))

    def _safely(self, task_id: str) -> None:
        try:
            self._reconcile(task_id)
        except Exception as exc:  # one task's trouble must not stop the supervision of the others
            log.exception("task %s: reconcile failed", task_id)
            self._service.report(task_id, state=TaskState.FAILED, status="internal error while (re)starting",
                                 error=TaskError("VIAS.00010006", mask_text(f"{type(exc).__name__}: {exc}")))

    # reconciliation --------------------------------------------------------------------------------
    def _reconcile(self, task_id: str) -> None:
        record = self._service.record(task_id)
        with self._lock:
            current = self._pipelines.get(task_id)
        if record is None:
            self._next_change.pop(task_id, None)
            self._forget_losses(task_id)
            if current is not None:
                self._retire(task_id)
            return
        if current is not None and current[0].status().state is TaskState.SUCCEEDED:
            status = current[0].status().status
            self._retire(task_id)
            self._service.report(task_id, state=TaskState.SUCCEEDED, status=status, desired=Desired.STOPPED)
            return
        wanted, sched = self._wanted(record)
        if current is not None and (not wanted or current[1] != record.spec):
            self._retire(task_id)  # stop, or stop → apply → start for an update
            current = None
        if not wanted:
            self._forget_losses(task_id)  # a stop (or a window's end) forgets its crashes: a start is a fresh one
            if record.state is not TaskState.STOPPED and record.state is not TaskState.SUCCEEDED:
                text = "waiting for the next scheduled window" if record.desired is Desired.RUNNING else \
                    "stopped"
                self._service.report(task_id, state=TaskState.STOPPED, status=text, inputs=[],
                                     schedule_status=sched)
            elif sched is not None:
                self._service.report(task_id, schedule_status=sched)
            return
        if current is None:
            with self._lock:
                waiting = task_id in self._relaunch_at
            if not waiting:
                self._launch(record, sched)
        elif sched is not None:
            self._service.report(task_id, schedule_status=sched)

    def _wanted(self, record: TaskRecord) -> tuple[bool, dict[str, Any] | None]:
        schedule = record.spec.schedule
        if schedule is None or record.desired is Desired.STOPPED:
            self._next_change.pop(record.id, None)
            return record.desired is Desired.RUNNING, None
        now = self._clock()
        status = schedule_status(schedule, now)
        if status.next_change is not None:
            self._next_change[record.id] = status.next_change
        else:
            self._next_change.pop(record.id, None)
        sched: dict[str, Any] = {"status": "ACTIVE" if status.active else "WAITING",
                                 "next_change": status.next_change.isoformat() if status.next_change else None,
                                 "next_start": status.next_start.isoformat() if status.next_start else None}
        return status.active, sched

    def _launch(self, record: TaskRecord, sched: dict[str, Any] | None) -> None:
        if record.id not in self._recovering:  # after a worker died, its reason shows until the task runs
            self._service.report(record.id, state=TaskState.STARTING, status="starting", error=None,
                                 schedule_status=sched if sched is not None else "keep")
        try:
            # what was valid at create time may not be now: the agent's config changed, a file went away
            for check in self._checks:
                check(record.spec, record.service_name)
        except ApiError as exc:
            reason = f"{exc.params[0] + ': ' if exc.params else ''}{exc.reason}"
            self._start_failed(record.id, f"cannot start {record.service_name} {record.spec.service_version}: "
                                          f"{reason}. {exc.advice}".strip())
            return
        owner: list[TaskRun] = []
        try:
            run = self._pool.launch(record, self._reporter(record.id, owner))
        except WorkerLost as exc:  # the worker died under the starting task: try again on its replacement
            self._lost([(record.id, 0.0)], str(exc))
            return
        except WorkerWaiting as exc:  # every worker is waiting out its backoff: try again when one starts
            with self._lock:
                self._relaunch_at[record.id] = time.monotonic() + exc.seconds
            death = self._recovering.get(record.id)
            self._service.report(record.id, status=f"starting: {exc}" if death is None else f"{death}; {exc}")
            return
        except StartFailed as exc:
            self._recovering.pop(record.id, None)
            self._start_failed(record.id, str(exc))
            return
        with self._report_lock, self._lock:
            owner.append(run)
            self._pipelines[record.id] = (run, record.spec)
        log.info("task %s started with %d input(s) on worker %d", record.id, len(record.spec.input.data),
                 run.worker)

    def _start_failed(self, task_id: str, reason: str) -> None:
        log.error("task %s cannot start: %s", task_id, reason)
        self._service.report(task_id, state=TaskState.START_FAILED, status=reason,
                             error=TaskError("VIAS.00010004", reason))

    def _retire(self, task_id: str) -> None:
        with self._report_lock, self._lock:
            entry = self._pipelines.pop(task_id, None)
        self._recovering.pop(task_id, None)
        if entry is not None:
            self._pool.retire(entry[0])
            log.info("task %s pipeline stopped", task_id)

    def _on_worker_lost(self, runs: Sequence[TaskRun], reason: str) -> None:
        """Called from the pool when a worker died: its tasks are ABNORMAL and start again."""
        now = time.monotonic()
        with self._report_lock, self._lock:
            lost = [(run.task_id, now - run.launched_at) for run in runs
                    if (entry := self._pipelines.get(run.task_id)) is not None and entry[0] is run]
            for task_id, _ in lost:
                del self._pipelines[task_id]
        self._lost(lost, reason)

    def _lost(self, losses: Sequence[tuple[str, float]], reason: str) -> None:
        """Each (task, how long its run lived) starts again: at once, or after a backoff when it keeps dying."""
        for task_id, lived in losses:
            with self._lock:
                delay = self._restarts.setdefault(task_id, RestartBackoff(WORKER_RESTART)).died(lived)
                if delay:
                    self._relaunch_at[task_id] = time.monotonic() + delay
            self._recovering[task_id] = reason
            again = f"starting again in {delay:.0f} s" if delay else "starting again"
            self._service.report(task_id, state=TaskState.ABNORMAL, status=f"{reason}; {again}", inputs=[])
            if not delay:
                self._pending.put(task_id)
        self._wake.set()  # the loop's next wake-up may be this task's relaunch

    def _forget_losses(self, task_id: str) -> None:
        self._recovering.pop(task_id, None)
        with self._lock:
            self._restarts.pop(task_id, None)
            self._relaunch_at.pop(task_id, None)

    def _reporter(self, task_id: str, owner: list[TaskRun]) -> Callable[[PipelineStatus], None]:
        last: list[Any] = [None, None, 0.0]  # state, status line, when the task service last heard

        def report(status: PipelineStatus) -> None:
            with self._report_lock:
                with self._lock:
                    entry = self._pipelines.get(task_id)
                if entry is None or not owner or entry[0] is not owner[0]:
                    return  # a late report from a retired pipeline must not overwrite what replaced it
                if status.state is TaskState.SUCCEEDED:
                    self._pending.put(task_id)
                    self._wake.set()
                    return
                if task_id in self._recovering:
                    if status.state is TaskState.STARTING:
                        return
                    self._recovering.pop(task_id, None)
                now = time.monotonic()
                if status.state is not last[0] or status.status != last[1] or now - last[2] >= REPORT_EVERY_S:
                    # a state change is news at once; fps and counters every few seconds (MQTT retained state)
                    last[:] = [status.state, status.status, now]
                    self._service.report(task_id, state=status.state, status=status.status,
                                         inputs=[input_summary(s) for s in status.inputs], worker=status.worker)

        return report
