from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agent.tasks.model import TaskState, parse_create
from agent.tasks.store import Desired, NameTaken, TaskError, TaskRecord, TaskStore, now_ms
from tests.tasks.examples import DOC_URL, body


def record(task_id: str = "a" * 32, name: str = "cam-1") -> TaskRecord:
    spec = parse_create(body(DOC_URL, name=name))
    return TaskRecord(task_id, "proj", "intrusion-detection", spec, TaskState.PENDING, Desired.RUNNING,
                      created_at=now_ms(), updated_at=now_ms())


def test_files_are_private_and_tasks_survive_reopen(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = TaskStore(state)
    store.insert(record())
    store.replace(record().__class__(**{**record().__dict__, "state": TaskState.RUNNING,
                                        "error": TaskError("E1", "boom")}))
    store.close()
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "tasks.db").stat().st_mode) == 0o600
    reopened = TaskStore(state)
    loaded = reopened.get("a" * 32)
    assert loaded is not None
    assert (loaded.state, loaded.desired, loaded.error) == (TaskState.RUNNING, Desired.RUNNING, TaskError("E1", "boom"))
    assert loaded.spec == record().spec


def test_names_are_unique_per_project(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    store.insert(record())
    with pytest.raises(NameTaken):
        store.insert(record("b" * 32))
    other = record("c" * 32).__class__(**{**record("c" * 32).__dict__, "project_id": "other"})
    store.insert(other)
    assert store.count() == 2


def test_query_filters_and_pages(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    for i in range(5):
        store.insert(record(f"{i:032x}", f"cam-{i}"))
    total, page = store.query("proj", state=None, name="cam", offset=2, limit=2)
    assert total == 5 and len(page) == 2
    total, page = store.query("proj", state="RUNNING", name=None, offset=0, limit=10)
    assert total == 0 and page == []
    total, page = store.query("proj", state=None, name="-3", offset=0, limit=10)
    assert [r.name for r in page] == ["cam-3"]


def test_request_answers_are_remembered_and_bounded(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    for i in range(5):
        store.remember_answer(f"r{i}", {"status": 200, "n": i}, keep=3)
    assert store.answer_for("r4") == {"status": 200, "n": 4}
    assert store.answer_for("r0") is None
