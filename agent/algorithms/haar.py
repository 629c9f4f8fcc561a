"""A Viola–Jones Haar cascade evaluated with NumPy, reading OpenCV's cascade XML.

OpenCV 5 dropped ``cv2.CascadeClassifier`` and the cascade files from the opencv-python wheels, so the
agent evaluates the classic stump cascade itself: an image pyramid and integral images; the first
stages are evaluated for every window at once with strided array views, and once most windows have
been rejected, later stages gather just the survivors. The maths follow OpenCV's ``HaarEvaluator`` (variance-normalised
features over the window's inner rectangle, ``value < threshold`` picks the left leaf) and
``groupRectangles`` for merging neighbours, so OpenCV's trained cascades behave as they do there.
"""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from agent.algorithms.grouping import Detection, group_rectangles

FRONTAL_FACE = Path(__file__).with_name("data") / "haarcascade_frontalface_default.xml"

_STAGE_EPS = 1e-5  # OpenCV loosens each stage threshold by this much
_DENSE_UNTIL = 0.3  # share of windows alive below which gathering beats dense evaluation (measured)


@dataclass(frozen=True)
class _Stage:
    threshold: float
    thresholds: NDArray[np.float64]  # per stump
    left: NDArray[np.float64]
    right: NDArray[np.float64]
    # Each stump's Haar feature as integral-image corners: the rectangles' corners with their signed
    # weights summed, so corners shared by adjacent rectangles are read once (6–9 reads, not 8–12).
    corner_dx: NDArray[np.int64]  # (stumps, K), K = most corners of any feature; padding has coef 0
    corner_dy: NDArray[np.int64]
    corner_coef: NDArray[np.int32]
    dense: tuple[tuple[tuple[int, int, int], ...], ...]  # the same, per stump, without the padding


@dataclass(frozen=True)
class HaarCascade:
    window: tuple[int, int]  # (width, height) of the trained window
    stages: tuple[_Stage, ...]

    @classmethod
    def load(cls, path: Path) -> HaarCascade:
        root = ElementTree.parse(path).getroot()
        cascade = root.find("cascade")
        if cascade is None or (cascade.findtext("featureType") or "").strip() != "HAAR":
            raise ValueError(f"{path.name}: not a Haar cascade in OpenCV's XML format")
        window = (int(cascade.findtext("width") or 0), int(cascade.findtext("height") or 0))
        features = [_feature_corners(feature, path) for feature in cascade.iterfind("features/_")]
        width = max(len(corners) for corners in features)
        stages = []
        for stage in cascade.iterfind("stages/_"):
            weak = list(stage.iterfind("weakClassifiers/_"))
            nodes = [[float(v) for v in (w.findtext("internalNodes") or "").split()] for w in weak]
            leaves = [[float(v) for v in (w.findtext("leafValues") or "").split()] for w in weak]
            if any(len(node) != 4 or len(leaf) != 2 for node, leaf in zip(nodes, leaves, strict=True)):
                raise ValueError(f"{path.name}: only stump cascades (one split per weak classifier) are supported")
            corners = [features[int(node[2])] for node in nodes]
            padded = [c + [(0, 0, 0)] * (width - len(c)) for c in corners]
            stages.append(_Stage(
                threshold=float(stage.findtext("stageThreshold") or 0) - _STAGE_EPS,
                thresholds=np.array([node[3] for node in nodes]),
                left=np.array([leaf[0] for leaf in leaves]),
                right=np.array([leaf[1] for leaf in leaves]),
                corner_dx=np.array([[c[0] for c in row] for row in padded], dtype=np.int64),
                corner_dy=np.array([[c[1] for c in row] for row in padded], dtype=np.int64),
                corner_coef=np.array([[c[2] for c in row] for row in padded], dtype=np.int32),
                dense=tuple(tuple(c) for c in corners),
            ))
        return cls(window, tuple(stages))

    def detect(self, gray: NDArray[Any], *, scale_factor: float = 1.1, min_neighbours: int = 3,
               min_size: int = 0, max_size: int = 0) -> list[Detection]:
        """Objects in a grey image, like ``CascadeClassifier.detectMultiScale`` (sizes in pixels)."""
        win_w, win_h = self.window
        height, width = gray.shape[:2]
        candidates: list[tuple[int, int, int, int]] = []
        factor = 1.0
        while True:
            scaled_w, scaled_h = round(width / factor), round(height / factor)
            size_w, size_h = round(win_w * factor), round(win_h * factor)
            if scaled_w < win_w or scaled_h < win_h or (max_size and max(size_w, size_h) > max_size):
                break
            if min(size_w, size_h) >= min_size:
                scaled: NDArray[Any] = gray if factor == 1.0 else cv2.resize(gray, (scaled_w, scaled_h),
                                                                            interpolation=cv2.INTER_LINEAR)
                step = 1 if factor > 2 else 2  # OpenCV's choice: finer steps once windows are large
                for x, y in self._scan(scaled, step):
                    candidates.append((round(x * factor), round(y * factor), size_w, size_h))
            factor *= scale_factor
        return group_rectangles(candidates, min_neighbours)

    def _scan(self, image: NDArray[Any], step: int) -> list[tuple[int, int]]:
        """Top-left corners (in ``image``) of the windows that pass every stage."""
        win_w, win_h = self.window
        sums, squares = cv2.integral2(image, sdepth=cv2.CV_32S, sqdepth=cv2.CV_64F)  # int32 sums are exact
        rows = (image.shape[0] - win_h) // step + 1
        cols = (image.shape[1] - win_w) // step + 1

        def at(table: NDArray[Any], dx: int, dy: int) -> NDArray[Any]:
            """table[y + dy, x + dx] for the top-left (x, y) of every window on the grid: a strided view."""
            return table[dy: dy + (rows - 1) * step + 1: step, dx: dx + (cols - 1) * step + 1: step]

        # The inner rectangle (1-pixel border dropped) normalises contrast, as OpenCV does.
        right, bottom = win_w - 1, win_h - 1
        area = float((win_w - 2) * (win_h - 2))
        total = (at(sums, 1, 1) - at(sums, right, 1) - at(sums, 1, bottom) + at(sums, right, bottom)).astype(float)
        square = at(squares, 1, 1) - at(squares, right, 1) - at(squares, 1, bottom) + at(squares, right, bottom)
        norm = area * square - total * total
        norm = np.where(norm > 0, np.sqrt(np.maximum(norm, 0)), 1.0)

        # Early stages see most windows: evaluate them densely with strided views (about 1 ns a window
        # and corner); once few windows survive, gather just those (several times dearer each).
        # Feature values are integer sums of integer-weighted corners: int32 arithmetic is exact even
        # where the corner products wrap around, because the feature value itself fits in int32.
        alive = np.ones((rows, cols), dtype=bool)
        stages = iter(self.stages)
        value, term = np.empty((rows, cols), np.int32), np.empty((rows, cols), np.int32)
        for stage in stages:
            score = np.zeros((rows, cols))
            for corners, threshold, left_leaf, right_leaf in zip(stage.dense, stage.thresholds, stage.left,
                                                                stage.right, strict=True):
                value.fill(0)
                for dx, dy, coef in corners:
                    np.multiply(at(sums, dx, dy), coef, out=term)
                    value += term
                score += np.where(value < threshold * norm, left_leaf, right_leaf)
            alive &= score >= stage.threshold
            if alive.mean() < _DENSE_UNTIL:
                break
        stride = sums.shape[1]
        gy, gx = np.nonzero(alive)
        base = (gy * step) * stride + gx * step
        flat, norm = sums.ravel(), norm[alive]
        for stage in stages:
            if base.size == 0:
                break
            offsets = stage.corner_dy * stride + stage.corner_dx  # (stumps, K)
            gathered = np.take(flat, base[:, None, None] + offsets[None])  # (windows, stumps, K)
            values = np.einsum("wsk,sk->ws", gathered, stage.corner_coef)
            score = np.where(values < stage.thresholds * norm[:, None], stage.left, stage.right).sum(axis=1)
            keep = score >= stage.threshold
            base, norm = base[keep], norm[keep]
        return [(int(b % stride), int(b // stride)) for b in base]


def _feature_corners(feature: ElementTree.Element, path: Path) -> list[tuple[int, int, int]]:
    """A Haar feature's rectangles as (dx, dy, signed weight) integral-image corners, shared ones merged."""
    if (feature.findtext("tilted") or "0").strip() not in ("0", ""):
        raise ValueError(f"{path.name}: tilted Haar features are not supported")
    coefs: dict[tuple[int, int], float] = {}
    for rect in feature.iterfind("rects/_"):
        values = (rect.text or "").split()
        x, y, w, h = (int(float(v)) for v in values[:4])
        weight = float(values[4])
        # sum of a rect = ii[y, x] - ii[y, x + w] - ii[y + h, x] + ii[y + h, x + w]
        for dx, dy, sign in ((x, y, 1), (x + w, y, -1), (x, y + h, -1), (x + w, y + h, 1)):
            coefs[(dx, dy)] = coefs.get((dx, dy), 0.0) + sign * weight
    if any(coef != round(coef) for coef in coefs.values()):
        raise ValueError(f"{path.name}: only integer rectangle weights are supported")
    return [(dx, dy, round(coef)) for (dx, dy), coef in sorted(coefs.items()) if coef != 0.0]


@lru_cache(maxsize=4)
def load_cascade(path: Path = FRONTAL_FACE) -> HaarCascade:
    """Parsed once per process: the frontal-face XML takes about a tenth of a second to read."""
    return HaarCascade.load(path)
