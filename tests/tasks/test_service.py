from __future__ import annotations

import secrets as secrets_module
from pathlib import Path
from typing import Any

import pytest

from agent.redact import MASK, mask_text, secrets
from agent.tasks.errors import ApiError, ErrorCode
from agent.tasks.model import TaskSpec, TaskState
from agent.tasks.service import TaskChange, TaskService
from agent.tasks.store import Desired, TaskStore
from tests.fixtures.memory import rss_bytes
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


def param_of(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    (param,) = caught.value.params
    return param


def with_secrets(name: str, headers: dict[str, str], input_urls: list[str] | None = None) -> dict[str, Any]:
    raw = body(DOC_URL, name=name)
    raw["output"]["webhook"]["headers"] = headers
    if input_urls is not None:
        raw["input"]["data"] = [{"url": url} for url in input_urls]
    return raw


def test_refused_creates_and_updates_leave_no_secrets_and_no_memory_behind(service: TaskService) -> None:
    seen_during_check: list[str] = []

    def refuse_face(spec: TaskSpec, service_name: str) -> None:
        if service_name == "face":
            assert spec.output.webhook is not None
            seen_during_check.append(mask_text(next(iter(spec.output.webhook.headers.values()))))
            raise ApiError(ErrorCode.INVALID_OBJECT, "not installed", ["service_name"])

    service.add_check(refuse_face)
    kept = service.create("p1", "svc", with_secrets("dup", {"Authorization": "kept-secret-1"}))
    service.create("p1", "svc", with_secrets("other", {"A": "other-secret-2"}))

    def refused(i: int) -> str:
        """The parameter the refusal names."""
        headers = {f"H{k}": f"{i}-{k}-{secrets_module.token_hex(1024)}" for k in range(10)}  # 10 × 2 KiB
        kind = i % 4
        if kind == 0:  # the name is taken
            return param_of(service.create, "p1", "svc", with_secrets("dup", headers))
        if kind == 1:  # a create-time check refuses it
            return param_of(service.create, "p1", "face", with_secrets(f"n{i}", headers))
        if kind == 2:  # over limits.max_inputs
            urls = [f"rtsp://u:{secrets_module.token_hex(400)}@h/{n}" for n in range(7)]
            return param_of(service.create, "p1", "svc", with_secrets(f"n{i}", headers, urls))
        # an update of a stored task, refused because the new name is taken
        return param_of(service.update, "p1", kept, {"name": "other", "output": with_secrets("x", headers)["output"]})

    refused(0)  # the first call warms up imports and caches that stay anyway
    held, rss = len(secrets), rss_bytes()
    assert {refused(i) for i in range(1, 61)} == {"name", "service_name", "input.data"}
    assert len(secrets) == held
    # Before the fix this loop kept every value and recompiled the masker over all of them: over 400 MiB.
    assert rss_bytes() - rss < 5 * 1024 * 1024
    assert seen_during_check and set(seen_during_check) == {MASK}  # masked while it was being checked
    assert mask_text("kept-secret-1 other-secret-2") == f"{MASK} {MASK}"
    assert service.get("p1", kept).spec.output.webhook.headers == {"Authorization": "kept-secret-1"}


def test_a_refused_common_word_does_not_blank_later_log_lines(service: TaskService) -> None:
    service.create("p1", "svc", with_secrets("dup", {"A": "dup-secret-3"}))
    assert code_of(service.create, "p1", "svc", with_secrets("dup", {"X-Reason": "deleted"})) == \
        ErrorCode.DUPLICATE_NAME.code
    assert mask_text("task deleted") == "task deleted"


def test_deleting_a_task_forgets_its_secrets_but_not_those_of_live_tasks(service: TaskService) -> None:
    first = service.create("p1", "svc", with_secrets("a", {"A": "only-first-4", "S": "shared-secret-5"},
                                                     ["rtsp://u:first%40pw@cam/1"]))
    second = service.create("p1", "svc", with_secrets("b", {"S": "shared-secret-5"}))
    assert mask_text("only-first-4 shared-secret-5 first@pw") == f"{MASK} {MASK} {MASK}"
    service.delete("p1", first)
    assert mask_text("only-first-4 shared-secret-5 first@pw") == f"only-first-4 {MASK} first@pw"
    service.update("p1", second, {"output": with_secrets("x", {"S": "replaced-secret-6"})["output"]})
    assert mask_text("shared-secret-5 replaced-secret-6") == f"shared-secret-5 {MASK}"
    service.delete("p1", second)
    assert mask_text("replaced-secret-6") == "replaced-secret-6"


def test_stored_tasks_secrets_are_masked_from_start_up(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    task_id = TaskService(store).create("p1", "svc", with_secrets("a", {"A": "stored-secret-7"}))
    secrets.forget(f"task:{task_id}")  # as a fresh process starts with an empty masker
    assert mask_text("stored-secret-7") == "stored-secret-7"
    TaskService(store)
    assert mask_text("stored-secret-7") == MASK
    secrets.forget(f"task:{task_id}")


@pytest.mark.parametrize(("page", "page_size", "param"), [
    (2**63 - 1, 100, "page"), ((2**63 - 1) // 1000 + 1, 1000, "page"), (-1, 100, "page"), (0, 0, "page_size"),
    (0, 2**64, "page_size"),
])
def test_out_of_range_pages_name_the_parameter(service: TaskService, page: int, page_size: int,
                                               param: str) -> None:
    with pytest.raises(ApiError) as caught:
        service.list_tasks("p1", page=page, page_size=page_size)
    assert (caught.value.code.code, caught.value.params) == ("VIAS.00010001", [param])


def test_the_last_page_sqlite_can_address_is_answered(service: TaskService) -> None:
    service.create("p1", "svc", DOC_URL)
    assert service.list_tasks("p1", page=(2**63 - 1) // 1000, page_size=1000)["tasks"] == []


@pytest.mark.parametrize("project_id", ["é", "proj-é", "ｐ1", "p1٣", "a" * 65, ""])
def test_project_ids_are_ascii_letters_digits_dash_underscore(service: TaskService, project_id: str) -> None:
    assert code_of(service.create, project_id, "svc", DOC_URL) == "VIAS.00010001"
    assert code_of(service.list_tasks, project_id) == "VIAS.00010001"


def test_ascii_project_ids_are_accepted(service: TaskService) -> None:
    assert service.create("Proj_1-x", "svc", DOC_URL)
