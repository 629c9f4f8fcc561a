"""A check masks every string; the table and the JSON say the same."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from agent.diag.report import Level, masked_check, render_json, render_table
from agent.redact import secrets


@pytest.fixture(autouse=True)
def _forget_the_token() -> Iterator[None]:
    yield
    secrets.forget("test:token")


def test_every_string_of_a_check_is_masked_and_the_table_shows_hints() -> None:
    secrets.register("test:token", ["tok-very-secret-55"])
    check = masked_check("api", "API token tok-very-secret-55", Level.FAIL, "got rtsp://u:pw1234@h/x",
                         "token tok-very-secret-55 rejected", url="http://a:b@h/?token=abc")
    assert "tok-very-secret-55" not in repr(check) and "pw1234" not in repr(check) and "abc" not in repr(check)
    table = render_table([check], {"node_id": "n1", "agent_running": True})
    assert table.splitlines()[0] == "edge-agent diag — node n1, agent running"
    assert "↳ token *** rejected" in table and table.endswith("0 OK, 0 WARN, 1 FAIL")


def test_the_json_report_counts_levels_and_says_whether_anything_failed() -> None:
    checks = [masked_check("config", "config", Level.OK, "valid"),
              masked_check("broker", "broker", Level.WARN, "slow", "Check the network.", round_trip_ms=1500.0)]
    report = json.loads(render_json(checks, {"agent_running": False, "node_id": "n1"}))
    assert report["ok"] is True and report["summary"] == {"ok": 1, "warn": 1, "fail": 0}
    assert report["checks"][1] == {"area": "broker", "subject": "broker", "status": "WARN", "detail": "slow",
                                   "hint": "Check the network.", "data": {"round_trip_ms": 1500.0}}
    failing = [*checks, masked_check("api", "REST API", Level.FAIL, "down")]
    assert json.loads(render_json(failing, {}))["ok"] is False
