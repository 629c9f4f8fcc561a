"""object-detection: objects of chosen classes found by an ONNX model the user brings, each tracked
object reported once (and again every ``cooldown_s`` while it stays), like intrusion-detection.

The model file must lie under the agent's ``models_roots`` (the same rules as ``media_roots``); it is
loaded and its output layout recognised when the task is created (agent.algorithms.onnx_detector), so a
model the agent cannot use is a 400 naming ``config.common.model``. ROIs hold an object when the middle
of its box's bottom edge — where a person stands or a vehicle touches the ground — lies inside one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from agent.algorithms.base import Algorithm, AlgorithmConfig
from agent.algorithms.event import Event
from agent.algorithms.onnx_detector import Detection, ModelError, OnnxDetector, inspect_model
from agent.algorithms.regions import ROIS_DESCRIPTION, Polygon, check_rois, contains
from agent.algorithms.tracking import Tracker, frame_time
from agent.sources.frame import Frame
from agent.sources.resolvers.url import LocalFileError, contained_file

EVENT_TYPE = 327682  # edge-agent's own number, like video-quality-diagnosis's (VIAS assigns none)
MODELS_ROOTS = "models_roots"  # the validation context key: the agent's models_roots setting
PERSON, VEHICLE, OTHER = 0, 1, 2  # VIAS categories
VEHICLES = frozenset({"bicycle", "car", "motorcycle", "bus", "train", "truck", "boat"})

_CONFIRM_HITS = 2  # samples an object must be seen in before it is reported: filters flicker
_TRACK_TTL_S = 1.5


class ModelConfig(AlgorithmConfig):
    """The settings of an ONNX detection model, shared by every built-in that runs one."""

    model: str = Field(
        "", description="The ONNX model file: an absolute path under the agent's models_roots.")
    classes: list[str] = Field(
        [], description="Labels of the model to report, e.g. [\"person\", \"car\"]. Empty: every class.")
    confidence: float = Field(0.4, gt=0, lt=1, description="Lowest score (0–1) of a reported object.")
    iou: float = Field(
        0.45, gt=0, le=1, description="Overlap (IoU) above which the weaker of two boxes of one class is dropped.")
    threads: int = Field(
        1, ge=1, le=16, description="ONNX Runtime threads for this task (one per task keeps decoders fed).")

    @field_validator("model")
    @classmethod
    def _model_file(cls, model: str, info: ValidationInfo) -> str:
        """The real path of a usable model under models_roots; the layout is recognised here."""
        if not model:
            return model  # the algorithm says whether it needs one
        roots: Sequence[Path] = (info.context or {}).get(MODELS_ROOTS, ())
        try:
            path = contained_file(model, roots, setting=MODELS_ROOTS)
        except LocalFileError as exc:
            raise ValueError(str(exc)) from None
        try:
            inspect_model(path)
        except (ModelError, OSError) as exc:
            raise ValueError(f"the model cannot be used: {exc}") from None
        return str(path)

    @field_validator("classes")
    @classmethod
    def _known_classes(cls, classes: list[str], info: ValidationInfo) -> list[str]:
        model = info.data.get("model")
        if model and classes:
            labels = inspect_model(Path(model)).labels
            unknown = [name for name in classes if name not in labels]
            if unknown:
                raise ValueError(f"{len(unknown)} of these are not labels of the model "
                                 "(see its metadata or labels file)")
        return classes


class ObjectDetectionConfig(ModelConfig):
    fps: float = Field(5.0, gt=0, le=30, description="Frames per second to analyse, per input.")
    model: str = Field(  # required in fact: validated when left out, to say what to give
        "", validate_default=True, description="The ONNX model file: an absolute path under the agent's models_roots.")
    rois: list[Polygon] = Field([], max_length=16, description=ROIS_DESCRIPTION)
    min_area: float = Field(
        0.0, ge=0,
        description="Smallest object box reported: in pixels² of the frame, or as a fraction of the frame "
                    "area when ≤ 1.")
    cooldown_s: float = Field(
        10.0, ge=0, description="An object still present is reported again after this many seconds.")

    _rois = field_validator("rois")(check_rois)

    @field_validator("model")
    @classmethod
    def _required(cls, model: str) -> str:
        if not model:
            raise ValueError("name the ONNX model file, under the agent's models_roots")
        return model


def category(label: str) -> int:
    return PERSON if label == "person" else VEHICLE if label in VEHICLES else OTHER


class ModelObjects:
    """What a model finds in one input's frames that a task cares about: its classes, inside its ROIs,
    large enough; tracked, so each object is due for a report once (and after each cooldown)."""

    def __init__(self, detector: OnnxDetector, config: ModelConfig, *, rois: list[Polygon], min_area: float,
                 cooldown_s: float) -> None:
        self._detector = detector
        self._config = config
        self._rois = rois
        self._min_area = min_area
        labels = detector.labels
        self._classes = frozenset(labels.index(name) for name in config.classes) if config.classes else None
        self._tracker = Tracker(cooldown_s=cooldown_s, confirm_hits=_CONFIRM_HITS, ttl_s=_TRACK_TTL_S)

    def due(self, frame: Frame) -> list[tuple[int, Detection]]:
        """(detection_id, detection) of the objects to report now."""
        config = self._config
        found = self._detector.detect(frame.bgr, confidence=config.confidence, iou=config.iou, classes=self._classes)
        size = (frame.width, frame.height)
        min_area = self._min_area * frame.width * frame.height if self._min_area <= 1 else self._min_area
        kept = [d for d in found if d.box[2] * d.box[3] >= min_area
                and contains(self._rois, size, (d.box[0] + d.box[2] / 2, d.box[1] + d.box[3]))]
        due = self._tracker.update([d.box for d in kept], frame_time(frame.info), [d.class_id for d in kept])
        return [(track.detection_id, kept[index]) for track, index in due]


def item(detection_id: int, detection: Detection) -> dict[str, Any]:
    return {"bounding_box": dict(zip("xywh", detection.box, strict=True)), "label": detection.label,
            "category": category(detection.label), "confidence": round(detection.confidence, 3),
            "detection_id": detection_id}


class ObjectDetection(Algorithm):
    service_name = "object-detection"
    versions = ("1.0",)
    event_type = EVENT_TYPE
    Config = ObjectDetectionConfig
    color = "bgr"
    summary = "Objects of chosen classes by an ONNX model you bring (YOLOv8/YOLO11, YOLOv5, YOLOX, SSD)."

    config: ObjectDetectionConfig

    def __init__(self, config: AlgorithmConfig, version: str, **kwargs: Any) -> None:
        super().__init__(config, version, **kwargs)
        self._detector = OnnxDetector(Path(self.config.model), threads=self.config.threads)
        self._inputs: dict[int, ModelObjects] = {}

    def process(self, frames: Mapping[int, Frame]) -> list[Event]:
        events = []
        for index, frame in frames.items():
            objects = self._inputs.get(index)
            if objects is None:
                config = self.config
                objects = self._inputs[index] = ModelObjects(self._detector, config, rois=config.rois,
                                                             min_area=config.min_area, cooldown_s=config.cooldown_s)
            due = objects.due(frame)
            if due:
                events.append(Event(EVENT_TYPE, index, frame.info, tuple(item(i, d) for i, d in due)))
        return events

    def input_up(self, input_index: int, now: float) -> list[Event]:
        self._inputs.pop(input_index, None)  # what is in view after an outage is reported afresh
        return []
