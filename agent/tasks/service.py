"""TaskService: the one place the task rules live. REST, MQTT and the CLI all call it.

It validates, stores and answers; it does not run anything. Whoever runs tasks (the supervisor)
listens for changes and reports the actual state back through ``report``.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

from agent.redact import mask_text, secrets
from agent.tasks.errors import ApiError, ErrorCode, invalid, no_such_task
from agent.tasks.model import (
    TaskSpec,
    TaskState,
    apply_update,
    check_task_id,
    masked_spec,
    parse_create,
    parse_update,
    spec_secrets,
)
from agent.tasks.store import Desired, NameTaken, TaskError, TaskRecord, TaskStore, now_ms

log = logging.getLogger(__name__)

PROJECT_ID_MAX = 64
SERVICE_NAME_MAX = 100
PAGE_SIZE_MAX = 1000
SQLITE_INT_MAX = 2**63 - 1  # OFFSET is bound as a signed 64-bit integer
PROJECT_ID_RE = re.compile(rf"[A-Za-z0-9_-]{{1,{PROJECT_ID_MAX}}}")

ChangeKind = Literal["created", "updated", "deleted", "start", "stop", "runtime"]
SpecCheck = Callable[[TaskSpec, str], None]  # (spec, service_name) → raises ApiError


@dataclass(frozen=True)
class TaskChange:
    kind: ChangeKind
    task_id: str
    record: TaskRecord | None  # None when deleted


@dataclass(frozen=True)
class RuntimeInfo:
    """What the supervisor knows about a running task that the store does not keep."""

    inputs: tuple[dict[str, Any], ...] = ()
    schedule_status: dict[str, Any] | None = None
    worker: int | None = None  # the data-plane worker process running it


class TaskService:
    def __init__(self, store: TaskStore, *, checks: Sequence[SpecCheck] = (),
                 max_tasks: int | None = None, max_inputs: int | None = None) -> None:
        self._store = store
        self._checks = list(checks)
        self._max_tasks = max_tasks
        self._max_inputs = max_inputs
        self._lock = threading.RLock()  # serialises rule checks that span tasks (names, limits)
        self._listeners: list[Callable[[TaskChange], None]] = []
        self._runtime: dict[str, RuntimeInfo] = {}
        for record in store.all():
            secrets.register(_owner(record.id), spec_secrets(record.spec))

    # wiring ----------------------------------------------------------------------------------
    def add_check(self, check: SpecCheck) -> None:
        self._checks.append(check)

    def add_listener(self, listener: Callable[[TaskChange], None]) -> None:
        self._listeners.append(listener)

    def _emit(self, kind: ChangeKind, task_id: str, record: TaskRecord | None) -> None:
        change = TaskChange(kind, task_id, record)
        for listener in list(self._listeners):
            try:
                listener(change)
            except Exception:  # a broken listener must not fail the user's request
                log.exception("task change listener failed", extra={"task_id": task_id})

    # reads for the runtime and the MQTT link (the store itself stays behind this class) --------------
    def record(self, task_id: str) -> TaskRecord | None:
        return self._store.get(task_id)

    def records(self) -> list[TaskRecord]:
        return self._store.all()

    def answer_for(self, request_id: str) -> dict[str, Any] | None:
        """The stored answer to an MQTT request id already handled, so a redelivery is answered alike."""
        return self._store.answer_for(request_id)

    def remember_answer(self, request_id: str, answer: dict[str, Any]) -> None:
        self._store.remember_answer(request_id, answer)

    # the API ---------------------------------------------------------------------------------
    def create(self, project_id: str, service_name: str, body: Any, *, template: str | None = None) -> str:
        _check_project(project_id)
        _check_service_name(service_name)
        if template is not None:
            body = self._from_template(project_id, template, body)
        spec = parse_create(body)
        with _held_while_checked(spec):
            self._run_checks(spec, service_name)
            with self._lock:
                self._check_limits(extra_tasks=1, extra_inputs=len(spec.input.data))
                created = now_ms()
                record = TaskRecord(
                    id=uuid.uuid4().hex, project_id=project_id, service_name=service_name, spec=spec,
                    state=TaskState.PENDING, desired=Desired.RUNNING, created_at=created, updated_at=created,
                )
                try:
                    self._store.insert(record)
                except NameTaken:
                    raise _name_taken() from None
                secrets.register(_owner(record.id), spec_secrets(spec))
                if spec.is_saved_as_template:
                    self._store.save_template(project_id, service_name, spec)
        log.info("task created", extra={"task_id": record.id, "service_name": service_name})
        self._emit("created", record.id, record)
        return record.id

    def list_tasks(self, project_id: str, *, state: str | None = None, name: str | None = None,
             page: int = 0, page_size: int = 100) -> dict[str, Any]:
        _check_project(project_id)
        if state is not None and state not in TaskState.__members__:
            raise invalid("task_state", f"must be one of {', '.join(TaskState.__members__)}")
        if not 1 <= page_size <= PAGE_SIZE_MAX:
            raise invalid("page_size", f"must be 1 to {PAGE_SIZE_MAX}")
        last_page = SQLITE_INT_MAX // page_size  # a larger page's offset overflows SQLite's integers
        if not 0 <= page <= last_page:
            raise invalid("page", f"must be 0 to {last_page} with page_size {page_size}")
        total, records = self._store.query(project_id, state=state, name=name, offset=page * page_size,
                                          limit=page_size)
        return {
            "count": total,
            "tasks": [
                {"id": r.id, "name": r.name, "service_name": r.service_name, "created_at": r.created_at,
                 "state": r.state.value, "type": "1"}
                for r in records
            ],
            "page": page,
            "page_size": page_size,
        }

    def get(self, project_id: str, task_id: str) -> TaskRecord:
        _check_project(project_id)
        check_task_id(task_id)
        record = self._store.get(task_id)
        if record is None or record.project_id != project_id:
            raise no_such_task(task_id)
        return record

    def show(self, project_id: str, task_id: str) -> dict[str, Any]:
        return self.view(self.get(project_id, task_id))

    def update(self, project_id: str, task_id: str, body: Any) -> None:
        update = parse_update(body)
        with self._lock:
            record = self.get(project_id, task_id)
            spec = apply_update(record.spec, update)
            with _held_while_checked(spec):
                self._run_checks(spec, record.service_name)
                extra_inputs = len(spec.input.data) - len(record.spec.input.data)
                self._check_limits(extra_tasks=0, extra_inputs=extra_inputs)
                try:
                    record = self._store.replace(replace(record, spec=spec))
                except NameTaken:
                    raise _name_taken() from None
                secrets.register(_owner(task_id), spec_secrets(spec))
            if update.is_saved_as_template:
                self._store.save_template(project_id, record.service_name, spec)
        log.info("task updated", extra={"task_id": task_id})
        self._emit("updated", task_id, record)

    def delete(self, project_id: str, task_id: str) -> None:
        with self._lock:
            self.get(project_id, task_id)
            self._store.delete(task_id)
            self._runtime.pop(task_id, None)
            secrets.forget(_owner(task_id))
        log.info("task deleted", extra={"task_id": task_id})
        self._emit("deleted", task_id, None)

    def start(self, project_id: str, task_id: str) -> None:
        self._set_desired(project_id, task_id, Desired.RUNNING)

    def stop(self, project_id: str, task_id: str) -> None:
        self._set_desired(project_id, task_id, Desired.STOPPED)

    def templates(self, project_id: str) -> list[dict[str, Any]]:
        _check_project(project_id)
        return [{"name": name, "service_name": service, "created_at": created}
                for name, service, created in self._store.templates(project_id)]

    # the runtime side ----------------------------------------------------------------------------
    def report(self, task_id: str, *, state: TaskState | None = None, status: str | None = None,
               error: TaskError | Literal["keep"] | None = "keep", inputs: Sequence[dict[str, Any]] | None = None,
               schedule_status: dict[str, Any] | Literal["keep"] | None = "keep",
               desired: Desired | None = None, worker: int | None = None) -> TaskRecord | None:
        """Record what the supervisor observed; listeners hear about it only when something changed."""
        with self._lock:
            record = self._store.get(task_id)
            if record is None:
                return None
            changes: dict[str, Any] = {}
            if state is not None and state != record.state:
                changes["state"] = state
            if status is not None and mask_text(status) != record.status:
                changes["status"] = mask_text(status)
            if error != "keep" and error != record.error:
                changes["error"] = error
            if desired is not None and desired != record.desired:
                changes["desired"] = desired
            runtime = self._runtime.get(task_id, RuntimeInfo())
            new_runtime = runtime
            if inputs is not None:
                new_runtime = replace(new_runtime, inputs=tuple(inputs))
            if schedule_status != "keep":
                new_runtime = replace(new_runtime, schedule_status=schedule_status)
            if inputs is not None:  # a report of the running pipeline, or [] when none runs
                new_runtime = replace(new_runtime, worker=worker)
            self._runtime[task_id] = new_runtime
            if changes:
                record = self._store.replace(replace(record, **changes))
            changed = bool(changes) or new_runtime != runtime
        if changed:
            self._emit("runtime", task_id, record)
        return record

    def runtime(self, task_id: str) -> RuntimeInfo:
        return self._runtime.get(task_id, RuntimeInfo())

    def view(self, record: TaskRecord) -> dict[str, Any]:
        """The task as REST show and the MQTT state topic present it: spec with secrets masked."""
        runtime = self.runtime(record.id)
        body = masked_spec(record.spec)
        return {
            "id": record.id,
            "name": record.name,
            "description": record.spec.description,
            "project_id": record.project_id,
            "service_name": record.service_name,
            "service_version": record.spec.service_version,
            "created_at": record.created_at,
            "updated_at": record.updated_at,
            "state": record.state.value,
            "desired_state": record.desired.value,
            "status": record.status,
            "error": {"code": record.error.code, "message": record.error.message} if record.error else None,
            "schedule_status": runtime.schedule_status,
            "worker": runtime.worker,
            "inputs": list(runtime.inputs),
            "input": body["input"],
            "output": body["output"],
            "config": body.get("config", {"common": {}}),
            "schedule": body.get("schedule"),
        }

    # internals -------------------------------------------------------------------------------------
    def _set_desired(self, project_id: str, task_id: str, desired: Desired) -> None:
        with self._lock:
            record = self.get(project_id, task_id)
            transitional = TaskState.STARTING if desired is Desired.RUNNING else TaskState.STOPPING
            already = (desired is Desired.RUNNING and record.state is TaskState.RUNNING) or (
                desired is Desired.STOPPED and record.state is TaskState.STOPPED)
            record = self._store.replace(replace(
                record, desired=desired, state=record.state if already else transitional,
                error=None if desired is Desired.RUNNING else record.error,
            ))
        log.info("task %s requested", "start" if desired is Desired.RUNNING else "stop",
                 extra={"task_id": task_id})
        self._emit("start" if desired is Desired.RUNNING else "stop", task_id, record)

    def _run_checks(self, spec: TaskSpec, service_name: str) -> None:
        for check in self._checks:
            check(spec, service_name)

    def _check_limits(self, *, extra_tasks: int, extra_inputs: int) -> None:
        records = self._store.all()
        if self._max_tasks is not None and len(records) + extra_tasks > self._max_tasks:
            raise ApiError(ErrorCode.INVALID_OBJECT, f"this box runs at most {self._max_tasks} tasks",
                           ["limits.max_tasks"], "task limit reached",
                           "Delete a task, or raise limits.max_tasks if the box has the capacity.")
        total_inputs = sum(len(r.spec.input.data) for r in records) + extra_inputs
        if self._max_inputs is not None and extra_inputs > 0 and total_inputs > self._max_inputs:
            raise ApiError(ErrorCode.INVALID_OBJECT,
                           f"this box analyses at most {self._max_inputs} inputs in total",
                           ["input.data"], "input limit reached",
                           "Remove inputs from other tasks, or raise limits.max_inputs if the box has the capacity.")

    def _from_template(self, project_id: str, template: str, overrides: Any) -> dict[str, Any]:
        found = self._store.template(project_id, template)
        if found is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no template named {template[:100]!r}", ["template"],
                           "unknown template", "Create a task with is_saved_as_template=true first.")
        if overrides is not None and not isinstance(overrides, dict):
            raise invalid("body", "must be a JSON object")
        body = dict(found[1])
        body["is_saved_as_template"] = False
        body.update(overrides or {})
        return body


def _owner(task_id: str) -> str:
    """The masker's owner of a stored task's secrets."""
    return f"task:{task_id}"


@contextmanager
def _held_while_checked(spec: TaskSpec) -> Iterator[None]:
    """Mask the body's secrets while it is checked (a check may log), and forget them whatever the outcome:
    a refused request must leave nothing behind, and a stored task registers its own under ``_owner``."""
    pending = f"pending:{uuid.uuid4().hex}"
    secrets.register(pending, spec_secrets(spec))
    try:
        yield
    finally:
        secrets.forget(pending)


def _name_taken() -> ApiError:
    return ApiError(ErrorCode.DUPLICATE_NAME, "a task with this name already exists", ["name"],
                    "duplicate task name", "Choose another name, or update the existing task.")


def _check_project(project_id: str) -> None:
    if not PROJECT_ID_RE.fullmatch(project_id):
        raise invalid("project_id", f"must be 1-{PROJECT_ID_MAX} ASCII letters, digits, - or _")


def _check_service_name(service_name: str) -> None:
    if not 1 <= len(service_name) <= SERVICE_NAME_MAX:
        raise invalid("service_name", f"must be 1-{SERVICE_NAME_MAX} characters")
