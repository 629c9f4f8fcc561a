"""SQLite task store: each task's desired spec, its states and timestamps; templates; MQTT request ids.

One connection guarded by a lock: writes are rare (a handful per minute on a busy box) and WAL keeps
readers from blocking the writer. The file is created 0600 in a 0700 directory because specs hold
camera and webhook credentials.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

from agent.tasks.model import TaskSpec, TaskState

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    service_name TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    desired TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '',
    error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS tasks_project_name ON tasks(project_id, name);
CREATE TABLE IF NOT EXISTS templates (
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    service_name TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (project_id, name)
);
CREATE TABLE IF NOT EXISTS requests (
    request_id TEXT PRIMARY KEY,
    answer TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
"""


class Desired(str, Enum):
    """What the user asked for; the supervisor makes the actual state follow it."""

    RUNNING = "RUNNING"
    STOPPED = "STOPPED"


@dataclass(frozen=True)
class TaskError:
    code: str
    message: str


@dataclass(frozen=True)
class TaskRecord:
    id: str
    project_id: str
    service_name: str
    spec: TaskSpec
    state: TaskState
    desired: Desired
    status: str = ""
    error: TaskError | None = None
    created_at: int = 0  # epoch milliseconds, as VIAS reports them
    updated_at: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name


def now_ms() -> int:
    return int(time.time() * 1000)


class NameTaken(Exception):
    pass


class TaskStore:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / "tasks.db"
        fresh = not self.path.exists()
        if fresh:
            # create the file with restrictive permissions before SQLite writes anything into it
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # task changes are rare and must survive a power cut
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # tasks ---------------------------------------------------------------------------------------
    def insert(self, record: TaskRecord) -> None:
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (record.id, record.project_id, record.service_name, record.name,
                     record.spec.model_dump_json(exclude_none=True), record.state.value, record.desired.value,
                     record.status, _dump_error(record.error), record.created_at, record.updated_at),
                )
            except sqlite3.IntegrityError as exc:
                raise NameTaken(record.name) from exc

    def replace(self, record: TaskRecord) -> TaskRecord:
        """Write the whole record (spec included); returns it with a fresh updated_at."""
        record = replace(record, updated_at=now_ms())
        with self._lock:
            try:
                self._db.execute(
                    "UPDATE tasks SET service_name=?, name=?, spec=?, state=?, desired=?, status=?, error=?,"
                    " updated_at=? WHERE id=?",
                    (record.service_name, record.name, record.spec.model_dump_json(exclude_none=True),
                     record.state.value, record.desired.value, record.status, _dump_error(record.error),
                     record.updated_at, record.id),
                )
            except sqlite3.IntegrityError as exc:
                raise NameTaken(record.name) from exc
        return record

    def get(self, task_id: str) -> TaskRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tasks WHERE id=?", (task_id,)).fetchone()
        return _record(row) if row else None

    def delete(self, task_id: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM tasks WHERE id=?", (task_id,))
        return cursor.rowcount > 0

    def all(self) -> list[TaskRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM tasks ORDER BY created_at, id").fetchall()
        return [_record(row) for row in rows]

    def query(self, project_id: str, *, state: str | None, name: str | None, offset: int,
              limit: int) -> tuple[int, list[TaskRecord]]:
        where, args = ["project_id=?"], [project_id]
        if state:
            where.append("state=?")
            args.append(state)
        if name:
            where.append("instr(name, ?) > 0")  # substring match, as the console's search box does
            args.append(name)
        clause = " AND ".join(where)
        with self._lock:
            total = self._db.execute(f"SELECT count(*) FROM tasks WHERE {clause}", args).fetchone()[0]
            rows = self._db.execute(
                f"SELECT * FROM tasks WHERE {clause} ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ).fetchall()
        return int(total), [_record(row) for row in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM tasks").fetchone()[0])

    # templates -----------------------------------------------------------------------------------
    def save_template(self, project_id: str, service_name: str, spec: TaskSpec) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO templates VALUES (?,?,?,?,?)",
                (project_id, spec.name, service_name, spec.model_dump_json(exclude_none=True), now_ms()),
            )

    def template(self, project_id: str, name: str) -> tuple[str, dict[str, Any]] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT service_name, spec FROM templates WHERE project_id=? AND name=?", (project_id, name)
            ).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def templates(self, project_id: str) -> list[tuple[str, str, int]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT name, service_name, created_at FROM templates WHERE project_id=? ORDER BY name",
                (project_id,),
            ).fetchall()
        return [(row[0], row[1], row[2]) for row in rows]

    # request ids (MQTT idempotency) ------------------------------------------------------------
    def remember_answer(self, request_id: str, answer: dict[str, Any], keep: int = 10_000) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO requests VALUES (?,?,?)",
                             (request_id, json.dumps(answer), now_ms()))
            self._db.execute(
                "DELETE FROM requests WHERE request_id NOT IN"
                " (SELECT request_id FROM requests ORDER BY rowid DESC LIMIT ?)", (keep,)
            )

    def answer_for(self, request_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT answer FROM requests WHERE request_id=?", (request_id,)).fetchone()
        return json.loads(row[0]) if row else None


def _dump_error(error: TaskError | None) -> str | None:
    return json.dumps({"code": error.code, "message": error.message}) if error else None


def _record(row: tuple[Any, ...]) -> TaskRecord:
    (task_id, project_id, service_name, _name, spec, state, desired, status, error, created_at,
     updated_at) = row
    loaded = json.loads(error) if error else None
    return TaskRecord(
        id=task_id, project_id=project_id, service_name=service_name,
        spec=TaskSpec.model_validate_json(spec), state=TaskState(state), desired=Desired(desired),
        status=status, error=TaskError(loaded["code"], loaded["message"]) if loaded else None,
        created_at=created_at, updated_at=updated_at,
    )
