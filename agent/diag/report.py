"""The diag report: checks (OK, WARN or FAIL with a one-line hint), rendered as a table or as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, TextIO

from agent.redact import mask_text


class Level(str, Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    area: str  # config, state, api, broker, task, input, stream, sink, store, outbox
    subject: str  # what was checked, e.g. "task cam-yard (1a2b3c4d) input 0"
    level: Level
    detail: str  # one line: what was found (masked)
    hint: str | None = None  # one line: what to do about it (masked)
    data: Mapping[str, Any] = field(default_factory=dict)  # the figures behind the detail, for --json

    def as_dict(self) -> dict[str, Any]:
        return {"area": self.area, "subject": self.subject, "status": self.level.value, "detail": self.detail,
                "hint": self.hint, "data": dict(self.data)}


def masked_check(area: str, subject: str, level: Level, detail: str, hint: str | None = None,
                 **data: object) -> Check:
    """A check with every string masked (secrets known to the registry, URL credentials, token params)."""
    safe = {key: mask_text(value) if isinstance(value, str) else value for key, value in data.items()}
    return Check(area, mask_text(subject), level, mask_text(detail), mask_text(hint) if hint else None, safe)


def any_failed(checks: Sequence[Check]) -> bool:
    return any(check.level is Level.FAIL for check in checks)


def render_table(checks: Sequence[Check], facts: Mapping[str, Any]) -> str:
    width = min(48, max(len(check.subject) for check in checks))
    running = {True: "running", False: "not running", None: "not checked"}[facts.get("agent_running")]
    lines = [f"edge-agent diag — node {facts.get('node_id') or '?'}, agent {running}", "",
             f"{'STATUS':<6}  {'CHECK':<{width}}  RESULT"]
    for check in checks:
        lines.append(f"{check.level.value:<6}  {check.subject:<{width}}  {check.detail}")
        if check.hint:
            lines.append(f"{'':<6}  {'':<{width}}  ↳ {check.hint}")
    counts = {level: sum(1 for check in checks if check.level is level) for level in Level}
    lines += ["", ", ".join(f"{counts[level]} {level.value}" for level in Level)]
    return "\n".join(lines)


def render_json(checks: Sequence[Check], facts: Mapping[str, Any]) -> str:
    counts = {level.value.lower(): sum(1 for c in checks if c.level is level) for level in Level}
    report = {**facts, "ok": not any_failed(checks), "summary": counts, "checks": [c.as_dict() for c in checks]}
    return mask_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))


class Progress:
    """Long probes say what they are doing on stderr (the table or JSON on stdout stays clean)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, text: str) -> None:
        print(f"diag: {mask_text(text)}", file=self._stream, flush=True)
