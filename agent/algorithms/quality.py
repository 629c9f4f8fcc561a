"""video-quality-diagnosis: camera tamper and image-quality checks a VMS operator wants alarms for.

Checks, each on a copy of the frame shrunk to 320 px wide (scores then mean the same at any resolution):
- ``blur``: variance of the Laplacian below ``blur_threshold`` (focus lost, lens smeared) — not raised
  while ``dark``, ``bright`` or ``occlusion`` is, which explain a lack of detail;
- ``dark`` / ``bright``: mean luma below ``dark_threshold`` / above ``bright_threshold``;
- ``occlusion``: the share of low-texture tiles above ``occlusion_threshold`` (lens covered) — not
  raised while ``dark`` or ``bright`` is, which already explain a featureless frame;
- ``frozen``: no change between samples (mean absolute difference below ``frozen_threshold``) for
  ``frozen_s`` seconds — not raised while ``dark``, ``bright`` or ``occlusion`` is;
- ``color_cast``: the Lab chroma offset relative to the chroma spread above ``color_cast_threshold``
  (the usual "equivalent circle" cast factor; a colourful scene has a large spread and no cast);
- ``signal_loss``: the input's stream went down.

A check is raised once its condition has held for ``min_duration_s`` (frozen: at once, ``frozen_s`` is
its duration), then repeated every ``repeat_s``
while it holds; it re-arms when the condition clears. Each event item carries the check, its score and
threshold. event_type 327681 is edge-agent's own number for these events (VIAS assigns none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from agent.algorithms.base import Algorithm, AlgorithmConfig
from agent.algorithms.event import Event
from agent.sources.frame import Frame, FrameInfo

EVENT_TYPE = 327681
Check = Literal["blur", "dark", "bright", "occlusion", "frozen", "color_cast", "signal_loss"]
ALL_CHECKS: tuple[Check, ...] = ("blur", "dark", "bright", "occlusion", "frozen", "color_cast", "signal_loss")

_WORK_WIDTH = 320
_TILES = 8  # occlusion looks at an 8×8 grid of tiles
_FLAT_TILE_STD = 6.0  # a tile whose luma deviates less than this is featureless


class QualityConfig(AlgorithmConfig):
    fps: float = Field(1.0, gt=0, le=30, description="Frames per second to analyse, per input.")
    checks: list[Check] = Field(list(ALL_CHECKS), description="Checks to run.")
    blur_threshold: float = Field(60.0, gt=0, description="Variance of the Laplacian below which a frame is blurred.")
    dark_threshold: float = Field(35.0, ge=0, le=255, description="Mean luma (0–255) below which a frame is dark.")
    bright_threshold: float = Field(225.0, ge=0, le=255, description="Mean luma above which a frame is too bright.")
    occlusion_threshold: float = Field(
        0.75, gt=0, le=1, description="Share of featureless tiles (8×8 grid) above which the view is occluded.")
    frozen_threshold: float = Field(
        0.5, ge=0,
        description="Mean absolute luma change (0–255, at 320 px wide) between samples below which the image is "
                    "still. Re-encoded still images change by up to about 0.4 at keyframes; sensor noise of a "
                    "live camera is usually above 0.5.")
    frozen_s: float = Field(15.0, gt=0, description="Seconds without change before the image counts as frozen.")
    color_cast_threshold: float = Field(
        1.5, gt=0, description="Cast factor (chroma offset / chroma spread) above which a cast is reported.")
    min_duration_s: float = Field(2.0, ge=0, description="A condition must hold this long before it is raised.")
    repeat_s: float = Field(300.0, gt=0, description="A condition still holding is raised again after this.")


@dataclass
class _Condition:
    since: float | None = None  # when the condition started holding
    raised_at: float | None = None


@dataclass
class _InputState:
    conditions: dict[str, _Condition] = field(default_factory=dict)
    previous: NDArray[Any] | None = None
    previous_time: float = 0.0
    still_since: float | None = None
    last_time: float = -math.inf


class VideoQualityDiagnosis(Algorithm):
    service_name = "video-quality-diagnosis"
    versions = ("1.0",)
    event_type = EVENT_TYPE
    Config = QualityConfig
    color = "bgr"  # the colour-cast check needs chroma
    summary = "Camera tamper and quality: blur, dark, bright, occlusion, frozen, colour cast, signal loss."

    config: QualityConfig

    def __init__(self, config: AlgorithmConfig, version: str, **kwargs: Any) -> None:
        super().__init__(config, version, **kwargs)
        self._inputs: dict[int, _InputState] = {}
        self._checks = frozenset(self.config.checks)

    def process(self, frames: Mapping[int, Frame]) -> list[Event]:
        events = []
        for index, frame in frames.items():
            items = self._diagnose(self._inputs.setdefault(index, _InputState()), frame)
            if items:
                events.append(Event(EVENT_TYPE, index, frame.info, tuple(items)))
        return events

    def input_down(self, input_index: int, reason: str, now: float) -> list[Event]:
        if "signal_loss" not in self._checks:
            return []
        # Signal loss is raised at once and once per outage: the outage itself is the debounce.
        self._inputs[input_index] = _InputState()
        info = FrameInfo(input_index, None, None, now, 0, 0)
        item = {"check": "signal_loss", "score": 1.0, "threshold": 1.0, "reason": reason}
        return [Event(EVENT_TYPE, input_index, info, (item,))]

    def input_up(self, input_index: int, now: float) -> list[Event]:
        self._inputs[input_index] = _InputState()
        return []

    def _diagnose(self, state: _InputState, frame: Frame) -> list[dict[str, Any]]:
        now = frame.info.stream_time if frame.info.stream_time is not None else frame.info.captured_at
        if now < state.last_time:  # a restarted stream: durations measured on the old clock mean nothing
            state.conditions.clear()
            state.previous, state.still_since = None, None
        state.last_time = now

        height = max(1, round(frame.height * _WORK_WIDTH / frame.width))
        bgr = frame.resized(_WORK_WIDTH, height) if frame.width > _WORK_WIDTH else frame.bgr
        gray: NDArray[Any] = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        config = self.config
        scores: dict[str, tuple[float, float, bool]] = {}  # check → score, threshold, condition holds

        brightness = float(gray.mean())
        scores["dark"] = (brightness, config.dark_threshold, brightness < config.dark_threshold)
        scores["bright"] = (brightness, config.bright_threshold, brightness > config.bright_threshold)
        exposure_bad = scores["dark"][2] or scores["bright"][2]
        # A dark or blown-out frame has no detail at all, and a covered lens little: each is reported as
        # what it is, not also as occlusion or blur.
        flat = _flat_share(gray)
        occluded = flat > config.occlusion_threshold and not exposure_bad
        scores["occlusion"] = (flat, config.occlusion_threshold, occluded)
        sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
        blurred = sharpness < config.blur_threshold and not exposure_bad and not occluded
        scores["blur"] = (sharpness, config.blur_threshold, blurred)
        cast = _cast_factor(bgr)
        scores["color_cast"] = (cast, config.color_cast_threshold, cast > config.color_cast_threshold)

        if state.previous is not None and state.previous.shape == gray.shape:
            change = float(cv2.absdiff(gray, state.previous).mean())
            if change >= config.frozen_threshold:
                state.still_since = None
            elif state.still_since is None:
                state.still_since = state.previous_time  # unchanged since the previous sample was taken
        state.previous, state.previous_time = gray, now
        still_for = 0.0 if state.still_since is None else now - state.still_since
        # A black, blown-out or covered frame shows no change either way: it is reported as what it is.
        featureless = exposure_bad or occluded
        scores["frozen"] = (still_for, config.frozen_s, still_for >= config.frozen_s and not featureless)

        items = []
        for check, (score, threshold, holds) in scores.items():
            # frozen_s already is frozen's duration: waiting min_duration_s on top would only delay it.
            settle = 0.0 if check == "frozen" else config.min_duration_s
            if check in self._checks and self._due(state.conditions.setdefault(check, _Condition()), holds, now,
                                                   settle):
                items.append({"check": check, "score": round(score, 3), "threshold": threshold})
        return items

    def _due(self, condition: _Condition, holds: bool, now: float, settle: float) -> bool:
        if not holds:
            condition.since = condition.raised_at = None
            return False
        if condition.since is None:
            condition.since = now
        if now - condition.since < settle:
            return False
        if condition.raised_at is not None and now - condition.raised_at < self.config.repeat_s:
            return False
        condition.raised_at = now
        return True


def _flat_share(gray: NDArray[Any]) -> float:
    """Share of the grid's tiles with almost no texture."""
    rows, cols = gray.shape[0] // _TILES, gray.shape[1] // _TILES
    if rows == 0 or cols == 0:
        return 1.0
    tiles = gray[: rows * _TILES, : cols * _TILES].reshape(_TILES, rows, _TILES, cols).astype(np.float32)
    return float((tiles.std(axis=(1, 3)) < _FLAT_TILE_STD).mean())


def _cast_factor(bgr: NDArray[np.uint8]) -> float:
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2LAB).astype(np.float32)
    a, b = lab[..., 1] - 128, lab[..., 2] - 128
    offset = math.hypot(float(a.mean()), float(b.mean()))
    spread = math.hypot(float(np.abs(a - a.mean()).mean()), float(np.abs(b - b.mean()).mean()))
    # A grey scene has no spread and no offset: the floor keeps its factor small instead of 0/0.
    return offset / max(spread, 1.0)
