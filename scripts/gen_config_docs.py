"""Writes docs/configuration.md from the settings models: every key with its type, default and description.

Run it after changing agent/settings.py; tests/test_settings.py fails while the document is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from agent.settings import AgentSettings

HEADER = """# Configuration

The agent reads one TOML file, given by `--config PATH` or the `EDGE_AGENT_CONFIG` environment variable
(`deploy/agent.toml` is a commented example of every key). Any key can be overridden from the environment
as `EDGE_AGENT_<SECTION>__<KEY>`, e.g. `EDGE_AGENT_API__LISTEN=0.0.0.0:8080` or
`EDGE_AGENT_MQTT__HOST=10.0.0.2`; top-level keys are `EDGE_AGENT_<KEY>` (`EDGE_AGENT_NODE_ID=box-7`).
The environment wins over the file. Unknown keys are errors that name the key, so a typo cannot silently
turn a feature off.

Secrets (`api.token`, `mqtt.password`, `mqtt.control_token`, `obs.secret_key`, `dis.secret_key`) are
masked in every log line, status and error; all but the control token can be given as files instead
(`api.token_file`, `mqtt.password_file`, `obs.secret_key_file`, `dis.secret_key_file`); keep those files
0600. Without any API token the agent generates one into `{state_dir}/api-token` (0600) on first start,
and the CLI reads it from there.

This page is generated from `agent/settings.py` by `python scripts/gen_config_docs.py`.
"""


def _type_name(info: FieldInfo) -> str:
    return _annotation_name(info.annotation)


def _annotation_name(annotation: Any) -> str:
    if get_origin(annotation) is Literal:
        return " or ".join(f"`{choice}`" for choice in get_args(annotation))
    if get_origin(annotation) in (Union, UnionType) and any(get_origin(a) is Literal for a in get_args(annotation)):
        # e.g. int | Literal["auto"]: name the choices, not "Union"
        return " or ".join(_annotation_name(part) for part in get_args(annotation))
    text = getattr(annotation, "__name__", None) or str(annotation)
    return text.replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")


def _default(info: FieldInfo) -> str:
    if info.default is not PydanticUndefined:
        value: Any = info.default
    elif info.default_factory is not None:
        try:
            value = info.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return "(computed)"
        if isinstance(value, BaseModel):
            return "(section)"
        if value == []:
            return "`[]`"
        if value == AgentSettings.model_fields["node_id"].default_factory():  # type: ignore[call-arg,misc]
            return "the host name"
    else:
        return "required"
    if value is None:
        return "unset"
    return f"`{value}`"


def _section_model(info: FieldInfo) -> type[BaseModel] | None:
    candidates = [info.annotation, *get_args(info.annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in get_args(candidate):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    rows = ["| key | type | default | description |", "| --- | --- | --- | --- |"]
    nested: list[tuple[str, type[BaseModel], FieldInfo]] = []
    for name, info in model.model_fields.items():
        section = _section_model(info)
        key = f"{prefix}{name}"
        if section is not None:
            nested.append((key, section, info))
            continue
        description = (info.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(info).replace('|', 'or')} | {_default(info)} | {description} |")
    lines = [*rows, ""]
    for key, section, info in nested:
        is_list = "list" in str(info.annotation)
        title = f"[[{key}]]" if is_list else f"[{key}]"
        lines += [f"## `{title}`", ""]
        if section.__doc__ and not section.__doc__.startswith(("A base class", "Usage docs")):
            lines += [section.__doc__.strip(), ""]
        if info.description:
            lines += [info.description, ""]
        lines += _table(section, "" if is_list else f"{key}.")
    return lines


def render() -> str:
    return HEADER + "\n## Top level\n\n" + "\n".join(_table(AgentSettings, "")) + "\n"


def main() -> int:
    target = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
