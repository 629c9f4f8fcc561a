"""Which algorithms are installed: the built-ins plus packages exposing the ``edge_agent.algorithms``
entry-point group, and the create-time checks of a task's service_name, service_version, config.common.

Entry points are read on every call (a few milliseconds; tasks are not created in tight loops) so a
package installed while the agent runs is seen by the next create. A plugin that fails to import, or
is not an Algorithm subclass, or reuses a built-in's name, is logged and left out: it never stops the
agent or the other algorithms.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.algorithms.base import Algorithm, AlgorithmConfig, describe
from agent.algorithms.face import FaceDetection
from agent.algorithms.intrusion import IntrusionDetection
from agent.algorithms.object_detection import MODELS_ROOTS, ObjectDetection
from agent.algorithms.quality import VideoQualityDiagnosis
from agent.redact import mask_text
from agent.tasks.errors import ApiError, ErrorCode, invalid

ENTRY_POINT_GROUP = "edge_agent.algorithms"
BUILT_INS: tuple[type[Algorithm], ...] = (IntrusionDetection, FaceDetection, ObjectDetection, VideoQualityDiagnosis)

log = logging.getLogger(__name__)


def installed() -> dict[str, type[Algorithm]]:
    """service_name → class, built-ins first; plugins may not shadow a built-in or each other."""
    found: dict[str, type[Algorithm]] = {cls.service_name: cls for cls in BUILT_INS}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            cls = point.load()
        except Exception as exc:  # a broken plugin must not break task creation for the others
            log.error("algorithm plugin %s (%s) failed to load: %s", point.name, point.value,
                      mask_text(f"{type(exc).__name__}: {exc}"))
            continue
        problem = _plugin_problem(cls)
        if problem is None and cls.service_name in found and found[cls.service_name] is not cls:
            problem = f"service_name {cls.service_name!r} is already taken"
        if problem is not None:
            log.error("algorithm plugin %s (%s) ignored: %s", point.name, point.value, problem)
            continue
        found[cls.service_name] = cls
    return found


def _plugin_problem(cls: Any) -> str | None:
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        return "not a subclass of agent.algorithms.base.Algorithm"
    for name in ("service_name", "versions", "event_type"):
        if not hasattr(cls, name):
            return f"class attribute {name} is missing"
    if not (isinstance(cls.service_name, str) and cls.service_name):
        return "service_name must be a non-empty string"
    if not (isinstance(cls.versions, tuple) and cls.versions and all(isinstance(v, str) for v in cls.versions)):
        return "versions must be a non-empty tuple of strings"
    if not (isinstance(cls.Config, type) and issubclass(cls.Config, AlgorithmConfig)):
        return "Config must subclass agent.algorithms.base.AlgorithmConfig"
    if getattr(cls, "__abstractmethods__", None):
        return "process() is not implemented"
    return None


def _lookup(service_name: str, service_version: str) -> type[Algorithm]:
    algorithms = installed()
    cls = algorithms.get(service_name)
    if cls is None:
        raise ApiError(ErrorCode.INVALID_OBJECT, "service_name: no such algorithm is installed", ["service_name"],
                       "no such algorithm is installed",
                       f"Use one of: {', '.join(sorted(algorithms))} (see `edge-agent algorithms`).")
    if service_version not in cls.versions:
        raise ApiError(ErrorCode.INVALID_OBJECT, "service_version: this version is not installed",
                       ["service_version"], "this version is not installed",
                       f"{service_name} is installed in version(s) {', '.join(cls.versions)}.")
    return cls


def _config(cls: type[Algorithm], common: dict[str, Any], models_roots: Sequence[Path]) -> AlgorithmConfig:
    try:
        # The context carries what validators need from the agent's settings: where model files may lie.
        return cls.Config.model_validate(common, context={MODELS_ROOTS: list(models_roots)})
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(["config.common", *(str(part) for part in first["loc"])])
        # pydantic's message names the rule, never the rejected value, so it is safe to echo.
        reason = (f"is not a setting of {cls.service_name}" if first["type"] == "extra_forbidden"
                  else first["msg"])
        raise invalid(path, reason, f"See `edge-agent algorithms` for the settings of {cls.service_name}.") \
            from None


def validate_task(service_name: str, service_version: str, common: dict[str, Any], *,
                  models_roots: Sequence[Path] = ()) -> None:
    """Raise ApiError when the task names no installed algorithm or its config.common is rejected.
    ``models_roots``: the agent's setting; model files named by config.common must lie under it."""
    _config(_lookup(service_name, service_version), common, models_roots)


def analysis_fps(service_name: str, service_version: str, common: dict[str, Any], *,
                 models_roots: Sequence[Path] = ()) -> float:
    """Frames per second a task of this algorithm analyses per input (raises ApiError like validate_task)."""
    return _config(_lookup(service_name, service_version), common, models_roots).fps


def create(service_name: str, service_version: str, common: dict[str, Any], *,
           data_categories: Collection[str] = (), models_roots: Sequence[Path] = ()) -> Algorithm:
    """A fresh instance for one task. ``data_categories``: the union of the task's outputs' data_category."""
    cls = _lookup(service_name, service_version)
    return cls(_config(cls, common, models_roots), service_version, data_categories=data_categories)


def describe_installed() -> list[dict[str, Any]]:
    return [describe(cls) for _, cls in sorted(installed().items())]
