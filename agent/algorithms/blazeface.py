"""MediaPipe's BlazeFace face detectors run by OpenCV's DNN module.

Two models ship in data/ (Apache-2.0, see data/README.md): short range (128×128 input, faces within
about 2 m of the camera) and full range (192×192, smaller faces further away). Each gives, per
anchor, a score logit and 16 regressors: the box centre offset and size, then six landmarks, in
input pixels relative to the anchor's centre. The anchors are MediaPipe's SSD anchors for these
models. The frame is letterboxed to the square input so faces keep their shape.

On OpenCV 5.0 ``cv2.dnn.readNetFromTFLite`` needs ``ENGINE_CLASSIC``: its newer engine returns only one of
the two outputs. OpenCV 5.1 dropped the classic engine, and its default one returns both. One ``BlazeFace``
per algorithm instance (the network keeps its buffers), used from one thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

DATA = Path(__file__).with_name("data")
LANDMARKS = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")  # the subject's own sides

_RAW_SCORE_LIMIT = 80.0  # MediaPipe clips logits so that exp() stays finite in float32


@dataclass(frozen=True)
class Variant:
    file: str
    input_size: int
    layers: tuple[tuple[int, int], ...]  # (stride, anchors per cell) of each feature map

    @property
    def path(self) -> Path:
        return DATA / self.file


SHORT_RANGE = Variant("face_detection_short_range.tflite", 128, ((8, 2), (16, 6)))
FULL_RANGE = Variant("face_detection_full_range.tflite", 192, ((4, 1),))


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels, clipped to the frame
    confidence: float
    landmarks: tuple[tuple[int, int], ...]  # in LANDMARKS order, frame pixels


def anchors(variant: Variant) -> NDArray[np.float32]:
    """Anchor centres (x, y) as fractions of the input, in the order of the model's outputs."""
    centres = []
    for stride, per_cell in variant.layers:
        cells = variant.input_size // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


class BlazeFace:
    def __init__(self, variant: Variant, *, confidence: float = 0.5, nms_iou: float = 0.3) -> None:
        self.variant = variant
        self.confidence = confidence
        self.nms_iou = nms_iou
        engine = getattr(cv2.dnn, "ENGINE_CLASSIC", None)  # OpenCV 5.0 only, see the module's docstring
        self._net = (cv2.dnn.readNetFromTFLite(str(variant.path)) if engine is None
                     else cv2.dnn.readNetFromTFLite(str(variant.path), engine=engine))
        self._outputs = list(self._net.getUnconnectedOutLayersNames())
        self._anchors = anchors(variant)

    def detect(self, bgr: NDArray[Any]) -> list[Face]:
        height, width = bgr.shape[:2]
        size = self.variant.input_size
        # Letterbox: scale the longer side to the input, pad the rest (bottom/right) with black.
        scale = size / max(width, height)
        scaled_w, scaled_h = max(1, round(width * scale)), max(1, round(height * scale))
        image = cv2.resize(bgr, (scaled_w, scaled_h), interpolation=cv2.INTER_AREA)
        image = cv2.copyMakeBorder(image, 0, size - scaled_h, 0, size - scaled_w, cv2.BORDER_CONSTANT, value=0)
        self._net.setInput(cv2.dnn.blobFromImage(image, 1 / 127.5, (size, size), (127.5, 127.5, 127.5),
                                                 swapRB=True))
        first, second = self._net.forward(self._outputs)
        # Which output is which by shape, not by order: scores are (1, N, 1), regressors (1, N, 16).
        scores, regressors = (first, second) if first.shape[-1] == 1 else (second, first)
        return decode(scores, regressors, self._anchors, size, size / scale, (width, height),
                      confidence=self.confidence, nms_iou=self.nms_iou)


def decode(scores: NDArray[Any], regressors: NDArray[Any], anchor_centres: NDArray[np.float32], input_size: int,
           to_frame: float, frame_size: tuple[int, int], *, confidence: float, nms_iou: float) -> list[Face]:
    """Faces from the raw outputs: ``to_frame`` turns fractions of the input into frame pixels (the
    letterbox pads bottom/right, so there is no offset); boxes are clipped to ``frame_size``."""
    width, height = frame_size
    logits = np.clip(scores.reshape(-1), -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)
    probability = 1.0 / (1.0 + np.exp(-logits))
    keep = np.nonzero(probability >= confidence)[0]
    if keep.size == 0:
        return []
    points = regressors.reshape(-1, 8, 2)[keep] / input_size  # fractions of the input
    points[:, 0] += anchor_centres[keep]  # box centre
    points[:, 2:] += anchor_centres[keep][:, None, :]  # landmarks; points[:, 1] is the box size
    centre, extent = points[:, 0] * to_frame, points[:, 1] * to_frame
    corners = np.concatenate([centre - extent / 2, extent], axis=1)
    kept_probability = probability[keep]
    chosen = cv2.dnn.NMSBoxes(corners.tolist(), kept_probability.tolist(), confidence, nms_iou)
    faces = []
    for i in np.array(chosen, dtype=np.int64).reshape(-1):
        x0, y0 = max(0.0, float(corners[i, 0])), max(0.0, float(corners[i, 1]))
        x1 = min(float(width), float(corners[i, 0] + corners[i, 2]))
        y1 = min(float(height), float(corners[i, 1] + corners[i, 3]))
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        marks = tuple((round(float(x)), round(float(y))) for x, y in points[i, 2:] * to_frame)
        faces.append(Face((round(x0), round(y0), round(x1 - x0), round(y1 - y0)), float(kept_probability[i]), marks))
    return faces
