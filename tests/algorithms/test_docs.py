"""docs/algorithms.md documents every config.common key of every built-in with its real default."""

from __future__ import annotations

import json
from pathlib import Path

from agent.algorithms.registry import BUILT_INS

DOC = Path(__file__).resolve().parents[2] / "docs" / "algorithms.md"


def test_every_built_in_key_is_documented_with_its_default() -> None:
    text = DOC.read_text()
    for cls in BUILT_INS:
        heading = f"### `{cls.service_name}` {', '.join(cls.versions)} — event_type {cls.event_type}"
        assert heading in text
        section = text.split(heading, 1)[1].split("\n### ", 1)[0]
        for name, field in cls.Config.model_fields.items():
            if name == "backend":  # common to all, described once above the built-ins
                continue
            row = f"| `{name}` | `{json.dumps(field.default)}` | {field.description} |"
            assert row in section, f"{cls.service_name}: {row}"
