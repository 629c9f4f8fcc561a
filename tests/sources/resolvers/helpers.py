"""Builders shared by the resolver tests: task specs and agent settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.settings import AgentSettings
from agent.tasks.model import TaskSpec, parse_create


def spec(kind: str, *data: dict[str, Any], vcn: dict[str, Any] | None = None) -> TaskSpec:
    body: dict[str, Any] = {
        "name": "resolver-test",
        "input": {"type": kind, "data": list(data)},
        "output": {"event_center": True},
        "service_version": "1.0",
    }
    if vcn is not None:
        body["input"]["vcn"] = vcn
    return parse_create(body)


def settings(tmp_path: Path, **overrides: Any) -> AgentSettings:
    values: dict[str, Any] = {"node_id": "node-test", "state_dir": tmp_path / "state"}
    values.update(overrides)
    return AgentSettings(**values)
