"""face-detection: frontal faces with OpenCV's Haar cascade (Viola–Jones), one event per frame with faces.

The cascade is OpenCV's ``haarcascade_frontalface_default.xml`` (shipped in agent/algorithms/data with
its Intel licence) evaluated by OpenCV's ``CascadeClassifier`` (agent.algorithms.classic). Frames wider
than 640 px are searched at 640 px: the cascade's smallest face is 24 px there, about 48 px in 1280×720.
Pixels are only converted to colour when an output asked for images.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
from numpy.typing import NDArray
from pydantic import Field

from agent.algorithms.base import FACE_IMAGE, ORIGIN_IMAGE, Algorithm, AlgorithmConfig
from agent.algorithms.classic import FaceCascade
from agent.algorithms.event import Event
from agent.sources.frame import Frame

EVENT_TYPE = 65536

_DETECT_WIDTH = 640
_CROP_MARGIN = 0.2  # face crops include some hair and chin, as face-capture consumers expect


class FaceConfig(AlgorithmConfig):
    fps: float = Field(2.0, gt=0, le=30, description="Frames per second to analyse, per input.")
    min_size: int = Field(40, ge=1, description="Smallest face reported, in pixels of the frame (width).")
    max_size: int = Field(0, ge=0, description="Largest face searched for, in pixels of the frame; 0: no limit.")
    scale_factor: float = Field(
        1.2, ge=1.05, le=2.0, description="Step between searched face sizes: smaller finds more, costs more.")
    min_neighbors: int = Field(
        3, ge=0, le=50, description="Overlapping raw hits a face needs: higher means fewer false faces.")


class FaceDetection(Algorithm):
    service_name = "face-detection"
    versions = ("1.0",)
    event_type = EVENT_TYPE
    Config = FaceConfig
    color = "gray"
    data_categories = frozenset({FACE_IMAGE, ORIGIN_IMAGE})
    summary = "Frontal faces (OpenCV Haar cascade); FaceImage crops and OriginImage frames on request."

    config: FaceConfig

    def __init__(self, config: AlgorithmConfig, version: str, **kwargs: Any) -> None:
        super().__init__(config, version, **kwargs)
        self._cascade = FaceCascade()

    def process(self, frames: Mapping[int, Frame]) -> list[Event]:
        events = []
        for index, frame in frames.items():
            faces = self._faces(frame)
            if faces:
                events.append(self._event(index, frame, faces))
        return events

    def _faces(self, frame: Frame) -> list[tuple[int, int, int, int]]:
        gray: NDArray[Any] = frame.gray
        scale = min(1.0, _DETECT_WIDTH / frame.width)
        if scale < 1.0:
            gray = cv2.resize(gray, (_DETECT_WIDTH, max(1, round(frame.height * scale))),
                              interpolation=cv2.INTER_AREA)
        config = self.config
        found = self._cascade.detect(gray, scale_factor=config.scale_factor, min_neighbours=config.min_neighbors,
                                     min_size=round(config.min_size * scale),
                                     max_size=round(config.max_size * scale))
        boxes = []
        for face in found:
            x, y = round(face.x / scale), round(face.y / scale)
            w, h = min(round(face.w / scale), frame.width - x), min(round(face.h / scale), frame.height - y)
            if w >= config.min_size:  # the shrunk search may round a slightly smaller face in
                boxes.append((x, y, w, h))
        return sorted(boxes)

    def _event(self, index: int, frame: Frame, faces: list[tuple[int, int, int, int]]) -> Event:
        items = tuple({"bounding_box": dict(zip("xywh", face, strict=True))} for face in faces)
        images = {ORIGIN_IMAGE: frame.jpeg()} if ORIGIN_IMAGE in self.attach else {}
        crops: tuple[dict[str, bytes], ...] = ()
        if FACE_IMAGE in self.attach:
            crops = tuple({FACE_IMAGE: _jpeg_crop(frame, face)} for face in faces)
        return Event(EVENT_TYPE, index, frame.info, items, images, crops)


def _jpeg_crop(frame: Frame, box: tuple[int, int, int, int]) -> bytes:
    x, y, w, h = box
    dx, dy = round(w * _CROP_MARGIN), round(h * _CROP_MARGIN)
    crop = frame.bgr[max(0, y - dy): min(frame.height, y + h + dy), max(0, x - dx): min(frame.width, x + w + dx)]
    ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError("JPEG encoding of a face crop failed")
    return bytes(encoded.tobytes())
