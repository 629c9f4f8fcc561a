"""intrusion-detection: something moving (or, with ``detector: "model"``, an object of chosen classes
found by an ONNX model) inside a region of interest, one event per object.

Motion, per input: a MOG2 background model on the grey view, shrunk to at most 320 px wide (moving objects of
interest stay several pixels wide there and the cost drops ~10× at 720p), foreground masked to the
ROIs, morphology to join fragments, contours → boxes, and centroid tracking so that an object is
reported once when it appears (and again only after ``cooldown_s`` while it stays), not every frame.
The model detector is object-detection's (agent.algorithms.object_detection) with these ROIs and rules.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator, model_validator

from agent.algorithms.base import Algorithm, AlgorithmConfig
from agent.algorithms.classic import PEOPLE_WINDOW, PeopleDetector
from agent.algorithms.event import Event
from agent.algorithms.object_detection import ModelConfig, ModelObjects, item
from agent.algorithms.onnx_detector import OnnxDetector
from agent.algorithms.regions import ROIS_DESCRIPTION, Polygon, check_rois, roi_mask
from agent.algorithms.tracking import Tracker, frame_time
from agent.sources.frame import Frame

EVENT_TYPE = 196609
PERSON, OTHER = 0, 2  # VIAS categories

_WORK_WIDTH = 320
_WARMUP_FRAMES = 3  # MOG2 needs a few frames before its foreground means anything
_CONFIRM_HITS = 2  # frames an object must be seen in before it is reported: filters flicker
_HOG_CROP_HEIGHT = 160
_TRACK_TTL_S = 1.5  # an object unseen this long is forgotten; if it returns it is a new object


class IntrusionConfig(ModelConfig):
    fps: float = Field(5.0, gt=0, le=30, description="Frames per second to analyse, per input.")
    rois: list[Polygon] = Field([], max_length=16, description=ROIS_DESCRIPTION)
    min_area: float = Field(
        0.002, gt=0,
        description="Smallest object box reported: in pixels² of the frame, or as a fraction of the frame "
                    "area when ≤ 1.")
    sensitivity: float = Field(
        0.6, ge=0, le=1, description="0–1: higher reports fainter changes (and more noise).")
    cooldown_s: float = Field(
        10.0, ge=0, description="An object still present is reported again after this many seconds.")
    classify_people: bool = Field(
        False, description="motion: classify objects with the HOG people detector: category 0 person, 2 other.")
    detector: Literal["motion", "model"] = Field(
        "motion", description="motion: a background model; model: objects of `classes` found by the ONNX `model`.")

    _rois = field_validator("rois")(check_rois)

    @model_validator(mode="after")
    def _model_named(self) -> IntrusionConfig:
        if self.detector == "model" and not self.model:
            raise ValueError('detector "model" needs config.common.model: an ONNX file under the agent\'s '
                             "models_roots")
        return self


@dataclass
class _InputState:
    size: tuple[int, int]  # frame width, height
    work: tuple[int, int]  # the shrunk size the background model runs at
    scale: float  # work size / frame size
    subtractor: Any
    roi_mask: NDArray[np.uint8] | None
    tracker: Tracker
    frames: int = 0
    categories: dict[int, int] = field(default_factory=dict)  # detection_id → category, once classified


class IntrusionDetection(Algorithm):
    service_name = "intrusion-detection"
    versions = ("1.0",)
    event_type = EVENT_TYPE
    Config = IntrusionConfig
    color = "gray"
    summary = "Objects entering regions of interest: moving (MOG2; HOG people on request) or found by an ONNX model."

    config: IntrusionConfig

    def __init__(self, config: AlgorithmConfig, version: str, **kwargs: Any) -> None:
        super().__init__(config, version, **kwargs)
        self._inputs: dict[int, _InputState] = {}
        config = self.config
        self._people = PeopleDetector() if config.classify_people and config.detector == "motion" else None
        self._model = OnnxDetector(Path(config.model), threads=config.threads) if config.detector == "model" else None
        self._objects: dict[int, ModelObjects] = {}

    def process(self, frames: Mapping[int, Frame]) -> list[Event]:
        events = []
        for index, frame in frames.items():
            event = self._motion(index, frame) if self._model is None else self._objects_in(self._model, index, frame)
            if event is not None:
                events.append(event)
        return events

    def input_up(self, input_index: int, now: float) -> list[Event]:
        # The scene may have changed while the stream was down: learn the background afresh, and report
        # what is in view again.
        self._inputs.pop(input_index, None)
        self._objects.pop(input_index, None)
        return []

    def _objects_in(self, model: OnnxDetector, index: int, frame: Frame) -> Event | None:
        objects = self._objects.get(index)
        if objects is None:
            config = self.config
            objects = self._objects[index] = ModelObjects(model, config, rois=config.rois, min_area=config.min_area,
                                                          cooldown_s=config.cooldown_s)
        due = objects.due(frame)
        return Event(EVENT_TYPE, index, frame.info, tuple(item(i, d) for i, d in due)) if due else None

    def _state(self, index: int, frame: Frame) -> _InputState:
        size = (frame.width, frame.height)
        state = self._inputs.get(index)
        if state is None or state.size != size:
            scale = min(1.0, _WORK_WIDTH / frame.width)
            work = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
            # varThreshold: the squared Mahalanobis distance at which a pixel stops matching the background.
            # Shadow detection stays off: on grey it can only test brightness ratios, and then takes any
            # darker object for a shadow.
            subtractor = cv2.createBackgroundSubtractorMOG2(
                history=500, varThreshold=4 + 60 * (1 - self.config.sensitivity), detectShadows=False)
            state = _InputState(size, work, scale, subtractor, roi_mask(self.config.rois, size, work),
                                Tracker(cooldown_s=self.config.cooldown_s, confirm_hits=_CONFIRM_HITS,
                                        ttl_s=_TRACK_TTL_S))
            self._inputs[index] = state
        return state

    def _motion(self, index: int, frame: Frame) -> Event | None:
        state = self._state(index, frame)
        now = frame_time(frame.info)
        gray: NDArray[Any] = frame.gray
        if state.scale < 1.0:
            gray = cv2.resize(gray, state.work, interpolation=cv2.INTER_AREA)
        foreground = state.subtractor.apply(gray)
        state.frames += 1
        if state.frames <= _WARMUP_FRAMES:
            return None
        boxes = self._boxes(foreground, state, frame)
        due = state.tracker.update(boxes, now)
        if not due:
            return None
        items = []
        for track, _ in due:
            box = _to_frame(track.box, state.scale, frame.width, frame.height)
            item: dict[str, Any] = {"bounding_box": dict(zip("xywh", box, strict=True)),
                                    "detection_id": track.detection_id}
            if self._people is not None:
                category = state.categories.get(track.detection_id)
                if category is None:
                    category = state.categories[track.detection_id] = _classify(self._people, frame, box)
                item["category"] = category
            items.append(item)
        if self._people is not None:
            live = state.tracker.live_ids()
            state.categories = {i: c for i, c in state.categories.items() if i in live}
        return Event(EVENT_TYPE, index, frame.info, tuple(items))

    def _boxes(self, foreground: NDArray[np.uint8], state: _InputState,
               frame: Frame) -> list[tuple[int, int, int, int]]:
        mask: NDArray[Any] = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, _KERNEL_3)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _KERNEL_5, iterations=2)  # joins fragments of one object
        if state.roi_mask is not None:
            mask = cv2.bitwise_and(mask, state.roi_mask)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        min_area = self.config.min_area
        if min_area <= 1:
            min_area *= frame.width * frame.height
        min_work_area = min_area * state.scale * state.scale
        boxes = [cv2.boundingRect(contour) for contour in contours]
        return [(x, y, w, h) for x, y, w, h in boxes if w * h >= min_work_area]


def _classify(people: PeopleDetector, frame: Frame, box: tuple[int, int, int, int]) -> int:
    """Person or other, by the HOG people detector on the object's surroundings."""
    window_w = PEOPLE_WINDOW[0]
    x, y, w, h = box
    # The detector's window is 64×128 with a person about 96 px tall and some context around: crop
    # with margins, scale so an upright person is a little taller than that (the pyramid then finds
    # it), and widen the crop rather than stretch it when the object is narrow.
    pad_y = h // 8 + 16
    y0, y1 = max(0, y - pad_y), min(frame.height, y + h + pad_y)
    factor = _HOG_CROP_HEIGHT / (y1 - y0)
    want_w = max(w + 2 * (w // 4 + 8), math.ceil((window_w + 8) / factor))
    centre = x + w / 2
    x0, x1 = max(0, round(centre - want_w / 2)), min(frame.width, round(centre + want_w / 2))
    crop: NDArray[Any] = frame.gray[y0:y1, x0:x1]
    if crop.shape[0] < 8 or crop.shape[1] < 8:
        return OTHER
    crop = cv2.resize(crop, (max(1, round(crop.shape[1] * factor)), _HOG_CROP_HEIGHT),
                      interpolation=cv2.INTER_AREA)
    if crop.shape[1] < window_w + 8:  # at the frame's edge: repeat the border instead
        missing = window_w + 8 - crop.shape[1]
        crop = cv2.copyMakeBorder(crop, 0, 0, missing // 2, missing - missing // 2, cv2.BORDER_REPLICATE)
    return PERSON if people.detect(crop) else OTHER


_KERNEL_3 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
_KERNEL_5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


def _to_frame(box: tuple[int, int, int, int], scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = max(0, math.floor(box[0] / scale)), max(0, math.floor(box[1] / scale))
    x1, y1 = min(width, math.ceil((box[0] + box[2]) / scale)), min(height, math.ceil((box[1] + box[3]) / scale))
    return x0, y0, x1 - x0, y1 - y0
