"""Create-time checks of service_name / service_version / config.common, and third-party discovery."""

from __future__ import annotations

import importlib
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from agent.algorithms import registry
from agent.algorithms.base import ORIGIN_IMAGE
from agent.algorithms.event import Event
from agent.algorithms.face import FaceDetection
from agent.algorithms.intrusion import IntrusionDetection
from agent.sources.frame import Frame
from agent.tasks.errors import ApiError, ErrorCode

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edge-agent-example-algorithm"
BUILT_IN_NAMES = {"intrusion-detection", "face-detection", "video-quality-diagnosis"}


def rejected(service_name: str, version: str, common: dict[str, object]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        registry.validate_task(service_name, version, common)
    return caught.value


def test_every_built_in_runs_with_an_empty_config() -> None:
    # 15 s of a dark picture (too dark for the quality check), then a bright box walks in (an intrusion);
    # no face anywhere, so the face detector must stay quiet
    dark = np.zeros((120, 160, 3), np.uint8)
    intruder = dark.copy()
    intruder[30:90, 40:120] = 255
    scene = [Frame.from_bgr(dark if n < 20 else intruder, pts=n, stream_time=n / 2, captured_at=1000 + n / 2)
             for n in range(30)]
    reports = {"intrusion-detection": True, "video-quality-diagnosis": True, "face-detection": False}
    assert set(reports) == BUILT_IN_NAMES
    for name, reports_something in reports.items():
        registry.validate_task(name, "1.0", {})  # raises ApiError when an empty config is refused
        algorithm = registry.create(name, "1.0", {})
        assert algorithm.service_name == name and algorithm.version == "1.0"
        assert algorithm.config == type(algorithm).Config()  # every key at its default
        events = [event for frame in scene for event in algorithm.process({0: frame})]
        assert all(isinstance(event, Event) and event.event_type == algorithm.event_type for event in events)
        assert bool(events) is reports_something, f"{name}: {events}"


def test_unknown_service_name_is_invalid_object_naming_the_field() -> None:
    error = rejected("people-counting", "1.0", {})
    assert error.code is ErrorCode.INVALID_OBJECT and error.http_status == 400
    assert error.body()["params"] == ["service_name"]
    assert "intrusion-detection" in error.advice


def test_uninstalled_version_is_invalid_object_naming_the_field() -> None:
    error = rejected("face-detection", "2.0", {})
    assert error.code is ErrorCode.INVALID_OBJECT and error.params == ["service_version"]
    assert "1.0" in error.advice


@pytest.mark.parametrize(("common", "param"), [
    ({"min_area": -5}, "config.common.min_area"),
    ({"min_aera": 100}, "config.common.min_aera"),
    ({"sensitivity": "high-secret-value"}, "config.common.sensitivity"),
    ({"rois": [[[0, 0], [1, 0]]]}, "config.common.rois"),
    ({"rois": [[[0, 0], [1, 0], [-1, 1]]]}, "config.common.rois"),
    ({"rois": [[[0, 0], [1, "x-secret-value"], [1, 1]]]}, "config.common.rois.0.1.1"),
    ({"fps": 0}, "config.common.fps"),
    ({"cooldown_s": -1}, "config.common.cooldown_s"),
])
def test_bad_config_common_names_the_key_and_never_echoes_the_value(common: dict[str, object], param: str) -> None:
    error = rejected("intrusion-detection", "1.0", common)
    assert error.code is ErrorCode.INVALID_PARAMS
    assert error.body()["params"] == [param]
    assert "secret-value" not in str(error.body())


def test_other_built_ins_check_their_own_keys() -> None:
    assert rejected("face-detection", "1.0", {"min_size": 0}).params == ["config.common.min_size"]
    assert rejected("face-detection", "1.0", {"rois": []}).params == ["config.common.rois"]
    assert rejected("video-quality-diagnosis", "1.0", {"checks": ["blur", "smear"]}).params == [
        "config.common.checks.1"]
    assert rejected("video-quality-diagnosis", "1.0", {"dark_threshold": 300}).params == [
        "config.common.dark_threshold"]


def test_create_applies_the_config_and_the_images_asked_for() -> None:
    algorithm = registry.create("face-detection", "1.0", {"fps": 4, "min_size": 60},
                                data_categories=[ORIGIN_IMAGE, "SomethingElse"])
    assert isinstance(algorithm, FaceDetection)
    assert algorithm.fps == 4 and algorithm.config.min_size == 60
    assert algorithm.attach == {ORIGIN_IMAGE}
    assert isinstance(registry.create("intrusion-detection", "1.0", {}), IntrusionDetection)


def test_describe_installed_lists_versions_event_types_and_a_usable_schema() -> None:
    described = {entry["service_name"]: entry for entry in registry.describe_installed()}
    assert set(described) >= BUILT_IN_NAMES
    intrusion = described["intrusion-detection"]
    assert intrusion["versions"] == ["1.0"] and intrusion["event_type"] == 196609 and intrusion["fps"] == 5.0
    assert described["face-detection"]["event_type"] == 65536
    assert described["face-detection"]["data_categories"] == ["FaceImage", "OriginImage"]
    json.dumps(described)  # `edge-agent algorithms --json` prints it as is
    schema = intrusion["config_schema"]
    jsonschema.validate({"min_area": 500, "rois": [[[0, 0], [0.5, 0], [0.5, 1]]]}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"unknown": 1}, schema)
    for entry in described.values():
        for key, spec in entry["config_schema"]["properties"].items():
            assert "default" in spec, f"{entry['service_name']}.{key} has no default"
            assert spec.get("description"), f"{entry['service_name']}.{key} is not described"


def _can_build_offline() -> bool:
    """setuptools builds wheels by itself from 70.1 on; before that it needs the wheel package."""
    try:
        import setuptools
        version = tuple(int(part) for part in setuptools.__version__.split(".")[:2])
        return version >= (70, 1) or importlib.util.find_spec("wheel") is not None
    except ImportError:
        return False


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The example package pip-installed into a private directory put on sys.path."""
    root = tmp_path_factory.mktemp("plugin")
    source, target = root / "src", root / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))  # keep the repo clean
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target), str(source)]
    if _can_build_offline():
        command.insert(-1, "--no-build-isolation")
    subprocess.run(command, check=True, timeout=240)
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    sys.modules.pop("edge_agent_example_algorithm", None)


def test_an_installed_third_party_package_is_found_validated_and_run(example_installed: Path) -> None:
    assert (example_installed / "edge_agent_example_algorithm").is_dir()
    described = {entry["service_name"]: entry for entry in registry.describe_installed()}
    assert described["scene-change"]["versions"] == ["1.0"]
    assert described["scene-change"]["event_type"] == 900001
    assert rejected("scene-change", "1.0", {"min_change": 0}).params == ["config.common.min_change"]

    algorithm = registry.create("scene-change", "1.0", {"min_change": 50})
    dark = Frame.from_bgr(np.full((36, 48, 3), 20, np.uint8), input_index=1)
    light = Frame.from_bgr(np.full((36, 48, 3), 200, np.uint8), input_index=1)
    assert algorithm.process({1: dark}) == []
    assert algorithm.process({1: dark}) == []
    events = algorithm.process({1: light})
    assert len(events) == 1 and events[0].event_type == 900001 and events[0].input_index == 1
    assert events[0].event_set[0]["to"] > events[0].event_set[0]["from"]


def _fake_dist(site: Path, name: str, entry_points: str) -> None:
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[edge_agent.algorithms]\n{entry_points}\n")


def test_broken_or_clashing_plugins_are_logged_and_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "clashing_plugin.py").write_text(
        "from agent.algorithms.intrusion import IntrusionDetection\n"
        "class Clash(IntrusionDetection):\n    pass\n"
        "class NotAnAlgorithm:\n    service_name = 'not-an-algorithm'\n")
    _fake_dist(tmp_path, "broken_plugin", "broken = missing_module_xyz:Thing")
    _fake_dist(tmp_path, "clashing_plugin",
               "clash = clashing_plugin:Clash\nplain = clashing_plugin:NotAnAlgorithm")
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.ERROR, logger="agent.algorithms.registry"):
        found = registry.installed()
    assert found["intrusion-detection"] is IntrusionDetection
    assert "not-an-algorithm" not in found
    assert "missing_module_xyz" in caplog.text and "already taken" in caplog.text
    assert "not a subclass" in caplog.text
    registry.validate_task("intrusion-detection", "1.0", {})  # the others still work


def test_a_crashing_and_a_slow_plugin_run_contained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.algorithms.runner import AlgorithmRunner

    (tmp_path / "faulty_plugins.py").write_text(
        "import time\n"
        "from agent.algorithms.base import Algorithm\n"
        "class Crashing(Algorithm):\n"
        "    service_name, versions, event_type = 'crashing', ('1.0',), 1\n"
        "    def process(self, frames):\n"
        "        raise ZeroDivisionError('plugin bug')\n"
        "class Slow(Algorithm):\n"
        "    service_name, versions, event_type = 'slow', ('1.0',), 2\n"
        "    def process(self, frames):\n"
        "        time.sleep(0.3)\n"
        "        return []\n")
    _fake_dist(tmp_path, "faulty_plugins", "crashing = faulty_plugins:Crashing\nslow = faulty_plugins:Slow")
    monkeypatch.syspath_prepend(str(tmp_path))
    frame = Frame.from_bgr(np.zeros((24, 32, 3), np.uint8))
    crashing = AlgorithmRunner(registry.create("crashing", "1.0", {}), "t-crash", max_consecutive_failures=2)
    slow = AlgorithmRunner(registry.create("slow", "1.0", {}), "t-slow", budget_s=0.1)
    healthy = AlgorithmRunner(registry.create("video-quality-diagnosis", "1.0", {}), "t-ok")
    for _ in range(2):
        assert crashing.process({0: frame}) == []
        assert slow.process({0: frame}) == []
        healthy.process({0: frame})
    assert not crashing.healthy and crashing.status().last_error == "ZeroDivisionError: plugin bug"
    assert slow.healthy and slow.status().slow_calls == 2
    assert healthy.healthy and healthy.status().failures == 0
