"""docs/inputs.md promises working examples: every task body parses and passes the static checks
with the agent.toml lines shown next to it."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from agent.sources.resolvers.registry import ResolverSet
from agent.tasks.model import parse_create
from tests.sources.resolvers.helpers import settings

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

DOC = Path(__file__).parents[3] / "docs" / "inputs.md"


def examples() -> list[tuple[str, str]]:
    """(json body, toml text or "") pairs, in document order."""
    blocks = re.findall(r"```(json|toml)\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    pairs: list[tuple[str, str]] = []
    for position, (kind, text) in enumerate(blocks):
        if kind == "json":
            following = blocks[position + 1] if position + 1 < len(blocks) else ("", "")
            pairs.append((text, following[1] if following[0] == "toml" else ""))
    return pairs


@pytest.mark.parametrize(("body", "toml_text"), examples())
def test_every_example_parses_and_passes_the_static_checks(body: str, toml_text: str, tmp_path: Path) -> None:
    spec = parse_create(json.loads(body))
    config = tomllib.loads(toml_text)
    if spec.input.type == "url":
        media = tmp_path / "media"
        media.mkdir()
        (media / "demo.mp4").write_bytes(b"\x00")
        config["media_roots"] = [media]
        for item in spec.input.data:
            if item.url and item.url.startswith("/var/lib/edge-agent/media/"):
                item.url = str(media / Path(item.url).name)
    resolvers = ResolverSet(settings(tmp_path, **config))
    try:
        resolvers.check(spec)
    finally:
        resolvers.close()


def test_the_document_has_an_example_for_each_input_type() -> None:
    kinds = {json.loads(body)["input"]["type"] for body, _ in examples()}
    assert kinds == {"url", "edgecamera", "vcn", "restful", "video_source"}
