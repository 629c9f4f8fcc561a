"""Merging overlapping raw detections into objects, as OpenCV's ``groupRectangles`` does.

A sliding-window detector fires on many windows around each object; a real object collects several
such "neighbours", a false hit few. The Haar face cascade and the HOG people detector share this.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detection:
    x: int
    y: int
    w: int
    h: int
    neighbours: int  # raw windows merged into this one: OpenCV's measure of how sure the detector is


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
        # OpenCV averages in single precision; doing the same keeps boxes identical to its own.
        share = np.float32(1.0) / np.float32(n)
        x, y, w, h = (int(np.rint(np.float32(sum(m[k] for m in members)) * share)) for k in range(4))
        merged.append(Detection(x, y, w, h, n))
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
