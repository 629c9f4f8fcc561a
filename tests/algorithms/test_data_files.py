"""Every model file the built-ins load is shipped in the wheel (pyproject's package-data covers it)."""

from __future__ import annotations

import fnmatch
import sys
from pathlib import Path

from agent.algorithms import blazeface, classic

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]


def test_model_files_are_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["agent"]
    package = ROOT / "agent"
    for model in (classic.FRONTAL_FACE, blazeface.SHORT_RANGE.path, blazeface.FULL_RANGE.path,
                  blazeface.DATA / "LICENSE-Apache-2.0.txt", blazeface.DATA / "README.md"):
        assert model.is_file()
        relative = model.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), f"{relative} is not in {patterns}"
