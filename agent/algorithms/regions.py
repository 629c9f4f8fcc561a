"""Regions of interest as tasks give them: polygons in frame pixels, or in fractions of the frame when
every coordinate of a polygon is ≤ 1 (so one config fits every resolution)."""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import NDArray

Polygon = list[tuple[float, float]]

ROIS_DESCRIPTION = ("Regions of interest: polygons of 3–64 [x, y] points, in pixels of the frame or, when every "
                    "coordinate of a polygon is ≤ 1, as fractions of its width and height. Empty: the whole frame.")


def check_rois(rois: list[Polygon]) -> list[Polygon]:
    """The pydantic validator's rules; raises ValueError saying which rule a polygon breaks."""
    for polygon in rois:
        if not 3 <= len(polygon) <= 64:
            raise ValueError("each polygon needs 3 to 64 points")
        if any(x < 0 or y < 0 or not (math.isfinite(x) and math.isfinite(y)) for x, y in polygon):
            raise ValueError("coordinates must be finite and not negative")
    return rois


def in_pixels(polygon: Polygon, size: tuple[int, int]) -> NDArray[np.float64]:
    """The polygon's points in pixels of a frame of ``size`` (width, height)."""
    points = np.array(polygon, dtype=np.float64)
    if points.max() <= 1:
        points *= size
    return points


def roi_mask(rois: list[Polygon], size: tuple[int, int], work: tuple[int, int]) -> NDArray[np.uint8] | None:
    """The ROIs filled in a mask of ``work`` size for frames of ``size``; None: no ROIs, the whole frame."""
    if not rois:
        return None
    mask = np.zeros((work[1], work[0]), dtype=np.uint8)
    for polygon in rois:
        points = in_pixels(polygon, size) * (work[0] / size[0], work[1] / size[1])
        cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 255)
    return mask


def contains(rois: list[Polygon], size: tuple[int, int], point: tuple[float, float]) -> bool:
    """Whether ``point`` (frame pixels) lies in one of the ROIs, edges included; no ROIs: everywhere."""
    if not rois:
        return True
    return any(cv2.pointPolygonTest(in_pixels(polygon, size).astype(np.float32), point, False) >= 0
               for polygon in rois)
