"""Real face photographs that scikit-image ships, with the faces' boxes written down by hand, and the
count of a face detector's hits against them (shared by tests/algorithms/test_face_photos.py and
bench/detectors.py).

- ``astronaut`` (Eileen Collins, frontal) and ``camera`` (the cameraman, three-quarter profile): one face
  each, boxed from brow to chin;
- ``chelsea`` (a cat), ``coffee``, ``rocket``: no face;
- ``lfw_subset``: 100 Labeled-Faces-in-the-Wild faces and 100 non-faces, 25×25 crops, each shown 96 px
  wide in the middle of a 192×192 grey canvas: the face is that 96 px square.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from skimage import data

from agent.algorithms.face import FaceConfig, FaceDetection
from agent.sources.frame import Frame

Box = tuple[int, int, int, int]  # x, y, w, h
Detect = Callable[[np.ndarray], list[Box]]  # BGR image → face boxes

PHOTOS: dict[str, list[Box]] = {
    "astronaut": [(178, 75, 92, 95)],
    "camera": [(190, 105, 70, 90)],
    "chelsea": [],
    "coffee": [],
    "rocket": [],
}
LFW_BOX: Box = (48, 48, 96, 96)
MATCH_IOU = 0.4


def face_detection(detector: str) -> Detect:
    """face-detection with its defaults and this ``detector``, reporting every face of every image."""
    algorithm = FaceDetection(FaceConfig(detector=detector, cooldown_s=0), "1.0")
    clock = itertools.count()

    def detect(image: np.ndarray) -> list[Box]:
        # Ten seconds apart: no image's faces are taken for the previous image's.
        events = algorithm.process({0: Frame.from_bgr(image, stream_time=10.0 * next(clock))})
        return [(item["bounding_box"]["x"], item["bounding_box"]["y"], item["bounding_box"]["w"],
                 item["bounding_box"]["h"]) for event in events for item in event.event_set]

    return detect


def photo(name: str) -> np.ndarray:
    image = getattr(data, name)()
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_RGB2BGR)


def lfw(faces: bool, every: int = 1) -> Iterator[np.ndarray]:
    """The LFW subset's faces (or its non-faces) on their canvases; every ``every``-th one."""
    crops = data.lfw_subset()[:100] if faces else data.lfw_subset()[100:]
    for crop in crops[::every]:
        canvas = np.full((192, 192), 128, np.uint8)
        x, y, w, h = LFW_BOX
        canvas[y: y + h, x: x + w] = cv2.resize((crop * 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
        yield cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR)


def iou(a: Box, b: Box) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(0, w) * max(0, h)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


@dataclass
class Count:
    faces: int = 0  # faces written down
    found: int = 0  # of them, matched by a detection (IoU ≥ MATCH_IOU)
    false: int = 0  # detections matching no written-down face

    def add(self, truth: list[Box], detected: list[Box]) -> None:
        self.faces += len(truth)
        unmatched = list(detected)
        for face in truth:
            best = max(unmatched, key=lambda box: iou(face, box), default=None)
            if best is not None and iou(face, best) >= MATCH_IOU:
                self.found += 1
                unmatched.remove(best)
        self.false += len(unmatched)


def count(detect: Detect, *, lfw_every: int = 1) -> dict[str, Count]:
    """Hits and false detections per set: the named photos, the LFW faces, the LFW non-faces."""
    counts = {"photos": Count(), "lfw faces": Count(), "lfw non-faces": Count()}
    for name, truth in PHOTOS.items():
        counts["photos"].add(truth, detect(photo(name)))
    for image in lfw(True, lfw_every):
        counts["lfw faces"].add([LFW_BOX], detect(image))
    for image in lfw(False, lfw_every):
        counts["lfw non-faces"].add([], detect(image))
    return counts
