"""face-detection: faces by MediaPipe's BlazeFace (default) or OpenCV's Haar cascade, each face reported
once while it is in view.

``detector``: ``blazeface-full`` (192×192 full-range model: small and distant faces, as on surveillance
cameras), ``blazeface`` (128×128 short-range model: faces within about 2 m, cheaper) or ``haar``
(OpenCV's ``haarcascade_frontalface_default.xml`` through ``CascadeClassifier``, frontal faces only, no
confidence or landmarks). BlazeFace sees the whole frame letterboxed to its input; the cascade searches
frames wider than 640 px at 640 px (its smallest face is 24 px there, about 48 px in 1280×720).

Faces are followed between analysed frames (agent.algorithms.tracking) so a person walking past is one
event, with a ``detection_id``, repeated only every ``cooldown_s`` while the face stays in view.
Pixels are only converted to colour for BlazeFace or when an output asked for images.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import cv2
from numpy.typing import NDArray
from pydantic import Field

from agent.algorithms.base import FACE_IMAGE, ORIGIN_IMAGE, Algorithm, AlgorithmConfig
from agent.algorithms.blazeface import FULL_RANGE, LANDMARKS, SHORT_RANGE, BlazeFace
from agent.algorithms.classic import FaceCascade
from agent.algorithms.event import Event
from agent.algorithms.tracking import Box, Tracker, frame_time
from agent.sources.frame import Frame

EVENT_TYPE = 65536

_HAAR_WIDTH = 640
_CROP_MARGIN = 0.2  # face crops include some hair and chin, as face-capture consumers expect
_TRACK_TTL_S = 1.5  # a face unseen this long is gone; if it comes back it is a new event


class FaceConfig(AlgorithmConfig):
    fps: float = Field(2.0, gt=0, le=30, description="Frames per second to analyse, per input.")
    detector: Literal["blazeface-full", "blazeface", "haar"] = Field(
        "blazeface-full",
        description="blazeface-full: BlazeFace full range (small, distant faces); blazeface: short range "
                    "(faces within about 2 m, cheaper); haar: OpenCV's frontal-face Haar cascade.")
    confidence: float = Field(
        0.5, gt=0, lt=1, description="BlazeFace: lowest score (0–1) of a reported face.")
    min_size: int = Field(40, ge=1, description="Smallest face reported, in pixels of the frame (width).")
    max_size: int = Field(0, ge=0, description="Largest face reported, in pixels of the frame; 0: no limit.")
    scale_factor: float = Field(
        1.2, ge=1.05, le=2.0, description="haar: step between searched face sizes: smaller finds more, costs more.")
    min_neighbors: int = Field(
        3, ge=0, le=50, description="haar: overlapping raw hits a face needs: higher means fewer false faces.")
    cooldown_s: float = Field(
        10.0, ge=0, description="A face still in view is reported again after this many seconds.")


@dataclass(frozen=True)
class _Face:
    box: Box  # frame pixels
    confidence: float | None  # None: the detector gives none (haar)
    landmarks: tuple[tuple[int, int], ...]


class FaceDetection(Algorithm):
    service_name = "face-detection"
    versions = ("1.0",)
    event_type = EVENT_TYPE
    Config = FaceConfig
    color = "bgr"
    data_categories = frozenset({FACE_IMAGE, ORIGIN_IMAGE})
    summary = "Faces (BlazeFace by default, or OpenCV's Haar cascade), each reported once while in view; " \
              "FaceImage crops and OriginImage frames on request."

    config: FaceConfig

    def __init__(self, config: AlgorithmConfig, version: str, **kwargs: Any) -> None:
        super().__init__(config, version, **kwargs)
        detector = self.config.detector
        self._detect: Callable[[Frame], list[_Face]]
        if detector == "haar":
            self._detect = partial(self._haar, FaceCascade())
        else:
            variant = FULL_RANGE if detector == "blazeface-full" else SHORT_RANGE
            self._detect = partial(_blazeface, BlazeFace(variant, confidence=self.config.confidence))
        self._trackers: dict[int, Tracker] = {}

    def process(self, frames: Mapping[int, Frame]) -> list[Event]:
        events = []
        for index, frame in frames.items():
            tracker = self._trackers.get(index)
            if tracker is None:
                tracker = self._trackers[index] = Tracker(cooldown_s=self.config.cooldown_s, ttl_s=_TRACK_TTL_S)
            faces = self._faces(frame)
            due = tracker.update([face.box for face in faces], frame_time(frame.info))
            if due:
                events.append(self._event(index, frame, [(track.detection_id, faces[i]) for track, i in due]))
        return events

    def input_up(self, input_index: int, now: float) -> list[Event]:
        # Whoever is in view after an outage is reported afresh.
        self._trackers.pop(input_index, None)
        return []

    def _faces(self, frame: Frame) -> list[_Face]:
        config = self.config
        return sorted((face for face in self._detect(frame)
                       if face.box[2] >= config.min_size and not (config.max_size and face.box[2] > config.max_size)),
                      key=lambda face: face.box)

    def _haar(self, cascade: FaceCascade, frame: Frame) -> list[_Face]:
        gray: NDArray[Any] = frame.gray
        scale = min(1.0, _HAAR_WIDTH / frame.width)
        if scale < 1.0:
            gray = cv2.resize(gray, (_HAAR_WIDTH, max(1, round(frame.height * scale))), interpolation=cv2.INTER_AREA)
        config = self.config
        found = cascade.detect(gray, scale_factor=config.scale_factor, min_neighbours=config.min_neighbors,
                                     min_size=round(config.min_size * scale), max_size=round(config.max_size * scale))
        faces = []
        for face in found:
            x, y = round(face.x / scale), round(face.y / scale)
            w, h = min(round(face.w / scale), frame.width - x), min(round(face.h / scale), frame.height - y)
            faces.append(_Face((x, y, w, h), None, ()))
        return faces

    def _event(self, index: int, frame: Frame, faces: Sequence[tuple[int, _Face]]) -> Event:
        items = tuple(_item(detection_id, face) for detection_id, face in faces)
        images = {ORIGIN_IMAGE: frame.jpeg()} if ORIGIN_IMAGE in self.attach else {}
        crops: tuple[dict[str, bytes], ...] = ()
        if FACE_IMAGE in self.attach:
            crops = tuple({FACE_IMAGE: _jpeg_crop(frame, face.box)} for _, face in faces)
        return Event(EVENT_TYPE, index, frame.info, items, images, crops)


def _blazeface(detector: BlazeFace, frame: Frame) -> list[_Face]:
    return [_Face(face.box, face.confidence, face.landmarks) for face in detector.detect(frame.bgr)]


def _item(detection_id: int, face: _Face) -> dict[str, Any]:
    item: dict[str, Any] = {"bounding_box": dict(zip("xywh", face.box, strict=True)), "detection_id": detection_id}
    if face.confidence is not None:
        item["confidence"] = round(face.confidence, 3)
    if face.landmarks:
        item["landmarks"] = {name: {"x": x, "y": y} for name, (x, y) in zip(LANDMARKS, face.landmarks, strict=True)}
    return item


def _jpeg_crop(frame: Frame, box: Box) -> bytes:
    x, y, w, h = box
    dx, dy = round(w * _CROP_MARGIN), round(h * _CROP_MARGIN)
    crop = frame.bgr[max(0, y - dy): min(frame.height, y + h + dy), max(0, x - dx): min(frame.width, x + w + dx)]
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError("JPEG encoding of a face crop failed")
    return bytes(encoded.tobytes())
