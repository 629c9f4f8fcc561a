"""A Viola–Jones Haar cascade evaluated with NumPy, reading OpenCV's cascade XML.

OpenCV 5 dropped ``cv2.CascadeClassifier`` and the cascade files from the opencv-python wheels, so the
agent evaluates the classic stump cascade itself: an image pyramid, integral images, and per stage one
vectorised gather over every window that survived the previous stage (most windows die in the first
two stages, so later stages touch few). The maths follow OpenCV's ``HaarEvaluator`` (variance-normalised
features over the window's inner rectangle, ``value < threshold`` picks the left leaf) and
``groupRectangles`` for merging neighbours, so OpenCV's trained cascades behave as they do there.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

FRONTAL_FACE = Path(__file__).with_name("data") / "haarcascade_frontalface_default.xml"

_STAGE_EPS = 1e-5  # OpenCV loosens each stage threshold by this much
_DENSE_UNTIL = 0.15  # fraction of windows alive below which gathering beats dense evaluation
_CORNER_SIGNS = np.array([1.0, -1.0, -1.0, 1.0])  # rect sum = ii[y0,x0] - ii[y0,x1] - ii[y1,x0] + ii[y1,x1]


@dataclass(frozen=True)
class Detection:
    x: int
    y: int
    w: int
    h: int
    neighbours: int  # raw windows merged into this one: OpenCV's measure of how sure the cascade is


@dataclass(frozen=True)
class _Stage:
    threshold: float
    features: NDArray[np.intp]  # feature index per stump
    thresholds: NDArray[np.float64]
    left: NDArray[np.float64]
    right: NDArray[np.float64]


@dataclass(frozen=True)
class HaarCascade:
    window: tuple[int, int]  # (width, height) of the trained window
    stages: tuple[_Stage, ...]
    rects: NDArray[np.int64]  # (features, 3, 4): x, y, w, h per rectangle; absent third rect has weight 0
    weights: NDArray[np.float64]  # (features, 3)

    @classmethod
    def load(cls, path: Path) -> HaarCascade:
        root = ElementTree.parse(path).getroot()
        cascade = root.find("cascade")
        if cascade is None or (cascade.findtext("featureType") or "").strip() != "HAAR":
            raise ValueError(f"{path.name}: not a Haar cascade in OpenCV's XML format")
        window = (int(cascade.findtext("width") or 0), int(cascade.findtext("height") or 0))
        stages = []
        for stage in cascade.iterfind("stages/_"):
            nodes = [[float(v) for v in (weak.findtext("internalNodes") or "").split()]
                     for weak in stage.iterfind("weakClassifiers/_")]
            leaves = [[float(v) for v in (weak.findtext("leafValues") or "").split()]
                      for weak in stage.iterfind("weakClassifiers/_")]
            if any(len(node) != 4 or len(leaf) != 2 for node, leaf in zip(nodes, leaves, strict=True)):
                raise ValueError(f"{path.name}: only stump cascades (one split per weak classifier) are supported")
            stages.append(_Stage(
                threshold=float(stage.findtext("stageThreshold") or 0) - _STAGE_EPS,
                features=np.array([int(node[2]) for node in nodes], dtype=np.intp),
                thresholds=np.array([node[3] for node in nodes]),
                left=np.array([leaf[0] for leaf in leaves]),
                right=np.array([leaf[1] for leaf in leaves]),
            ))
        features = list(cascade.iterfind("features/_"))
        rects = np.zeros((len(features), 3, 4), dtype=np.int64)
        weights = np.zeros((len(features), 3))
        for i, feature in enumerate(features):
            if (feature.findtext("tilted") or "0").strip() not in ("0", ""):
                raise ValueError(f"{path.name}: tilted Haar features are not supported")
            for j, rect in enumerate(feature.iterfind("rects/_")):
                values = (rect.text or "").split()
                rects[i, j] = [int(float(v)) for v in values[:4]]
                weights[i, j] = float(values[4])
        return cls(window, tuple(stages), rects, weights)

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
        win_w, win_h = self.window
        sums, squares = cv2.integral2(image, sdepth=cv2.CV_64F, sqdepth=cv2.CV_64F)
        rows = (image.shape[0] - win_h) // step + 1
        cols = (image.shape[1] - win_w) // step + 1

        def grid(table: NDArray[Any], x: int, y: int, w: int, h: int) -> NDArray[np.float64]:
            """Sum of the rect (x, y, w, h) inside every window on the grid, as a rows × cols array."""
            def at(dx: int, dy: int) -> NDArray[np.float64]:
                return table[y + dy: y + dy + (rows - 1) * step + 1: step, x + dx: x + dx + (cols - 1) * step + 1: step]
            return at(0, 0) - at(w, 0) - at(0, h) + at(w, h)

        # The inner rectangle (1-pixel border dropped) normalises contrast, as OpenCV does.
        area = float((win_w - 2) * (win_h - 2))
        total = grid(sums, 1, 1, win_w - 2, win_h - 2)
        norm = area * grid(squares, 1, 1, win_w - 2, win_h - 2) - total * total
        norm = np.where(norm > 0, np.sqrt(np.maximum(norm, 0)), 1.0)

        # Early stages see most windows: evaluate them densely with strided views (cheap per window);
        # once few windows survive, gather just those.
        alive = np.ones((rows, cols), dtype=bool)
        stages = iter(self.stages)
        for stage in stages:
            score = np.zeros((rows, cols))
            for feature, threshold, left, right in zip(stage.features, stage.thresholds, stage.left, stage.right,
                                                       strict=True):
                value = sum(weight * grid(sums, *rect) for rect, weight in
                            zip(self.rects[feature].tolist(), self.weights[feature].tolist(), strict=True) if weight)
                score += np.where(value < threshold * norm, left, right)
            alive &= score >= stage.threshold
            if alive.mean() < _DENSE_UNTIL:
                break
        stride = sums.shape[1]
        gy, gx = np.nonzero(alive)
        base = (gy * step) * stride + gx * step
        flat, norm = sums.ravel(), norm[alive]
        offsets = _corner_offsets(self.rects.reshape(-1, 4), stride).reshape(-1, 3, 4)
        for stage in stages:
            if base.size == 0:
                break
            corners = offsets[stage.features]  # (stumps, 3, 4)
            gathered = flat[base[:, None, None, None] + corners[None]]  # (windows, stumps, 3, 4)
            values = (gathered @ _CORNER_SIGNS * self.weights[stage.features][None]).sum(axis=2)
            score = np.where(values < stage.thresholds[None] * norm[:, None], stage.left, stage.right).sum(axis=1)
            keep = score >= stage.threshold
            base, norm = base[keep], norm[keep]
        return [(int(b % stride), int(b // stride)) for b in base]


def _corner_offsets(rects: NDArray[np.int64], stride: int) -> NDArray[np.int64]:
    """Flat integral-image offsets of each rectangle's corners: top-left, top-right, bottom-left, bottom-right."""
    x, y, w, h = rects[:, 0], rects[:, 1], rects[:, 2], rects[:, 3]
    return np.stack([y * stride + x, y * stride + x + w, (y + h) * stride + x, (y + h) * stride + x + w], axis=1)


def group_rectangles(rects: list[tuple[int, int, int, int]], min_neighbours: int,
                     eps: float = 0.2) -> list[Detection]:
    """OpenCV's ``groupRectangles``: cluster similar boxes, keep clusters with more than ``min_neighbours``
    members, and drop a cluster that sits inside a stronger one."""
    count = len(rects)
    parent = list(range(count))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(count):
        for j in range(i + 1, count):
            if _similar(rects[i], rects[j], eps):
                parent[root(i)] = root(j)
    clusters: dict[int, list[tuple[int, int, int, int]]] = {}
    for i, rect in enumerate(rects):
        clusters.setdefault(root(i), []).append(rect)
    merged = []
    for members in clusters.values():
        n = len(members)
        if n <= min_neighbours:
            continue
        x, y, w, h = (sum(m[k] for m in members) / n for k in range(4))
        merged.append(Detection(round(x), round(y), round(w), round(h), n))
    kept = []
    for inner in merged:
        if not any(_inside(inner, outer, eps) for outer in merged if outer is not inner):
            kept.append(inner)
    return kept


def _similar(a: tuple[int, int, int, int], b: tuple[int, int, int, int], eps: float) -> bool:
    delta = eps * (min(a[2], b[2]) + min(a[3], b[3])) * 0.5
    return (abs(a[0] - b[0]) <= delta and abs(a[1] - b[1]) <= delta
            and abs(a[0] + a[2] - b[0] - b[2]) <= delta and abs(a[1] + a[3] - b[1] - b[3]) <= delta)


def _inside(inner: Detection, outer: Detection, eps: float) -> bool:
    dx, dy = math.floor(outer.w * eps + 0.5), math.floor(outer.h * eps + 0.5)
    return (inner.x >= outer.x - dx and inner.y >= outer.y - dy
            and inner.x + inner.w <= outer.x + outer.w + dx and inner.y + inner.h <= outer.y + outer.h + dy
            and (outer.neighbours > max(3, inner.neighbours) or inner.neighbours < 3))


@lru_cache(maxsize=4)
def load_cascade(path: Path = FRONTAL_FACE) -> HaarCascade:
    """Parsed once per process: the frontal-face XML takes about a tenth of a second to read."""
    return HaarCascade.load(path)
