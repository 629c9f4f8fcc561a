"""An input's state in the running agent, judged from the ``inputs`` of the agent's task view."""

from __future__ import annotations

from typing import Any

import pytest

from agent.diag.agent_api import TaskViewError
from agent.diag.report import Level
from agent.diag.tasks import input_state_check


def reported(state: str, **changes: Any) -> list[dict[str, Any]]:
    """One input as the pipeline reports it (``input_summary``), index 0."""
    entry: dict[str, Any] = {"index": 0, "state": state, "fps": 2.0, "fps_in": 25.0, "reconnects": 0,
                             "last_error": None, "keyframe_only": False, "codec": "h264", "resolution": "320x240",
                             "decode_errors": 0, "dropped": 0, "shared_by": 1, "decode_mode": "sampled"}
    entry.update(changes)
    return [entry]


@pytest.mark.parametrize(("state", "level"), [
    ("RUNNING", Level.OK), ("CONNECTING", Level.OK), ("ENDED", Level.OK),
    ("RECONNECTING", Level.FAIL), ("STALLED", Level.FAIL), ("FAILED", Level.FAIL),
])
def test_the_reported_stream_state_sets_the_level(state: str, level: Level) -> None:
    check = input_state_check("task yard (1a2b3c4d) input 0", 0, reported(state, reconnects=3, decode_errors=1,
                                                                               dropped=7))
    assert check.subject == "task yard (1a2b3c4d) input 0 in the agent"
    assert check.level is level
    assert check.detail.startswith(f"{state.lower()}: 25 fps in, 2 fps analysed, 3 reconnect(s), "
                                   "1 decode error(s), 7 frame(s) dropped")
    assert dict(check.data) == {"state": state.lower(), "fps_in": 25.0, "fps_out": 2.0, "reconnects": 3,
                                "decode_errors": 1, "dropped": 7, "shared_by": 1}
    assert (check.hint is None) == (level is Level.OK)


def test_a_shared_camera_says_by_how_many_tasks() -> None:
    check = input_state_check("cam", 0, reported("RUNNING", shared_by=3))
    assert "camera shared by 3 tasks" in check.detail and check.data["shared_by"] == 3


def test_the_last_error_is_shown_masked() -> None:
    check = input_state_check("cam", 0, reported("RECONNECTING", last_error="rtsp://u:pw-4321@cam/1: refused"))
    assert "last error: rtsp://***@cam/1: refused" in check.detail and "pw-4321" not in check.detail


def test_an_input_the_agent_does_not_report_is_a_warning() -> None:
    check = input_state_check("cam", 1, reported("RUNNING"))  # only input 0 runs
    assert check.level is Level.WARN and "no running pipeline" in check.detail
    assert input_state_check("cam", 0, []).level is Level.WARN  # the task has no pipeline now


def test_an_unreadable_task_view_is_a_warning_with_the_reason() -> None:
    check = input_state_check("cam", 0, TaskViewError("the task view answered HTTP 500"))
    assert check.level is Level.WARN and "HTTP 500" in check.detail and check.hint
