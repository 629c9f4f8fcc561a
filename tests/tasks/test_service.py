from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent.tasks.errors import ApiError, ErrorCode
from agent.tasks.model import TaskSpec, TaskState
from agent.tasks.service import TaskChange, TaskService
from agent.tasks.store import Desired, TaskStore
from tests.tasks.examples import DOC_URL, DOC_VIDEO_SOURCE, body


@pytest.fixture
def service(tmp_path: Path) -> TaskService:
    return TaskService(TaskStore(tmp_path), max_tasks=4, max_inputs=6)


def code_of(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    return caught.value.code.code


def test_create_show_list_and_ids(service: TaskService) -> None:
    task_id = service.create("p1", "intrusion-detection", DOC_URL)
    assert len(task_id) == 32 and int(task_id, 16) >= 0 and task_id == task_id.lower()
    shown = service.show("p1", task_id)
    assert (shown["state"], shown["desired_state"], shown["service_name"]) == ("PENDING", "RUNNING",
                                                                               "intrusion-detection")
    listed = service.list_tasks("p1")
    assert listed["count"] == 1 and listed["tasks"][0]["id"] == task_id
    assert service.list_tasks("p2")["count"] == 0  # tasks are scoped by project
    assert code_of(service.show, "p2", task_id) == "VIAS.00010007"
    assert code_of(service.show, "p1", "nothex") == "VIAS.00010007"


def test_duplicate_names_and_limits(service: TaskService) -> None:
    service.create("p1", "svc", DOC_URL)
    assert code_of(service.create, "p1", "svc", DOC_URL) == ErrorCode.DUPLICATE_NAME.code
    many = body(DOC_URL, name="many")
    many["input"]["data"] = [{"url": f"rtsp://h/{i}"} for i in range(6)]
    with pytest.raises(ApiError) as caught:
        service.create("p1", "svc", many)
    assert caught.value.params == ["input.data"]
    for i in range(3):
        service.create("p1", "svc", body(DOC_URL, name=f"t{i}"))
    with pytest.raises(ApiError) as caught:
        service.create("p1", "svc", body(DOC_URL, name="t9"))
    assert caught.value.params == ["limits.max_tasks"]


def test_path_parameters_are_checked(service: TaskService) -> None:
    assert code_of(service.create, "p1", "", DOC_URL) == "VIAS.00010001"
    assert code_of(service.create, "p1", "s" * 101, DOC_URL) == "VIAS.00010001"
    assert code_of(service.create, "bad/project", "svc", DOC_URL) == "VIAS.00010001"


def test_start_stop_update_delete_and_listeners(service: TaskService) -> None:
    changes: list[TaskChange] = []
    service.add_listener(changes.append)
    task_id = service.create("p1", "svc", DOC_URL)
    service.stop("p1", task_id)
    record = service.get("p1", task_id)
    assert (record.state, record.desired) == (TaskState.STOPPING, Desired.STOPPED)
    service.report(task_id, state=TaskState.STOPPED, status="stopped by user")
    service.update("p1", task_id, {"input": {"type": "url", "data": [{"url": "rtsp://cam/2"}]}})
    assert service.get("p1", task_id).spec.input.data[0].url == "rtsp://cam/2"
    service.start("p1", task_id)
    assert service.get("p1", task_id).state is TaskState.STARTING
    service.report(task_id, state=TaskState.RUNNING, inputs=[{"index": 0, "state": "RUNNING"}])
    assert service.show("p1", task_id)["inputs"] == [{"index": 0, "state": "RUNNING"}]
    service.delete("p1", task_id)
    assert code_of(service.show, "p1", task_id) == "VIAS.00010007"
    assert [c.kind for c in changes] == ["created", "stop", "runtime", "updated", "start", "runtime", "deleted"]


def test_report_masks_status_and_is_quiet_without_change(service: TaskService) -> None:
    task_id = service.create("p1", "svc", DOC_URL)
    changes: list[TaskChange] = []
    service.add_listener(changes.append)
    service.report(task_id, status="cannot open rtsp://admin:pw1234@cam/1")
    service.report(task_id, status="cannot open rtsp://admin:pw1234@cam/1")
    assert len(changes) == 1
    assert "pw1234" not in service.show("p1", task_id)["status"]


def test_checks_run_at_create_and_update(service: TaskService) -> None:
    def refuse_face(spec: TaskSpec, service_name: str) -> None:
        if service_name == "face":
            raise ApiError(ErrorCode.INVALID_OBJECT, "not installed", ["service_name"])

    service.add_check(refuse_face)
    assert code_of(service.create, "p1", "face", DOC_URL) == "VIAS.00010004"
    assert service.list_tasks("p1")["count"] == 0


def test_templates(service: TaskService) -> None:
    service.create("p1", "svc", body(DOC_VIDEO_SOURCE, is_saved_as_template=True, name="tmpl"))
    assert [t["name"] for t in service.templates("p1")] == ["tmpl"]
    task_id = service.create("p1", "svc", {"name": "from-tmpl"}, template="tmpl")
    assert service.get("p1", task_id).spec.input.type == "video_source"
    assert code_of(service.create, "p1", "svc", {}, template="nope") == "VIAS.00010002"


def test_broken_listener_does_not_fail_requests(service: TaskService) -> None:
    def boom(_: TaskChange) -> None:
        raise RuntimeError("listener bug")

    service.add_listener(boom)
    assert service.create("p1", "svc", DOC_URL)
