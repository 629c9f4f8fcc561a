"""Safe decoding of request bodies (REST and MQTT): size cap, nesting cap, clean 400s."""

from __future__ import annotations

import json
from typing import Any

from agent.tasks.errors import invalid
from agent.tasks.model import MAX_BODY_BYTES

MAX_DEPTH = 32  # the create-task body nests 5 deep; config.common gets generous room, bombs do not


def decode_json(raw: bytes, *, limit: int = MAX_BODY_BYTES) -> Any:
    """Parse ``raw`` as JSON or raise an ApiError(400) that says what is wrong with it."""
    if len(raw) > limit:
        raise invalid("body", f"is larger than {limit} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("body", "is not UTF-8 text") from None
    if not text.strip():
        raise invalid("body", "is empty; send a JSON object")
    if _nesting(text) > MAX_DEPTH:
        raise invalid("body", f"nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise invalid("body", f"is not valid JSON ({reason[:200]})") from None


def _nesting(text: str) -> int:
    """Deepest bracket nesting outside strings; checked before parsing so a bomb costs one pass."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
