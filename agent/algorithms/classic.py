"""OpenCV's classic detectors, as the built-ins use them: the Viola–Jones frontal-face cascade and the
Dalal–Triggs HOG people detector (``opencv-contrib-python-headless`` keeps both in OpenCV 5).

The contrib wheel's ``cv2/data`` carries no cascade files, so the frontal-face cascade ships in
``data/`` with its Intel licence. The HOG coefficients come with OpenCV
(``HOGDescriptor.getDefaultPeopleDetector``). Both objects keep scratch buffers: one per algorithm
instance, used from its one worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

FRONTAL_FACE = Path(__file__).with_name("data") / "haarcascade_frontalface_default.xml"
PEOPLE_WINDOW = (64, 128)  # the default HOG window (width, height); a person is about 96 px of it


@dataclass(frozen=True)
class Detection:
    x: int
    y: int
    w: int
    h: int
    neighbours: int  # raw windows merged into this one: OpenCV's measure of how sure the detector is


class FaceCascade:
    """``CascadeClassifier`` on OpenCV's frontal-face cascade."""

    def __init__(self, path: Path = FRONTAL_FACE) -> None:
        try:
            self._classifier = cv2.CascadeClassifier(str(path))
            loaded = not self._classifier.empty()
        except (cv2.error, SystemError):  # OpenCV raises on some malformed files, returns empty on others
            loaded = False
        if not loaded:
            raise ValueError(f"{path.name}: not a cascade OpenCV can load")

    def detect(self, gray: NDArray[Any], *, scale_factor: float = 1.1, min_neighbours: int = 3,
               min_size: int = 0, max_size: int = 0) -> list[Detection]:
        """Faces in a grey image; sizes in pixels, 0: no bound."""
        boxes, counts = self._classifier.detectMultiScale2(
            gray, scaleFactor=scale_factor, minNeighbors=min_neighbours,
            minSize=(min_size, min_size), maxSize=(max_size, max_size))
        return [Detection(int(x), int(y), int(w), int(h), int(n))
                for (x, y, w, h), n in zip(boxes, counts, strict=True)]


class PeopleDetector:
    """``HOGDescriptor`` with OpenCV's default people SVM, grouped by ``detectMultiScale``."""

    def __init__(self) -> None:
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(np.array(cv2.HOGDescriptor.getDefaultPeopleDetector(), np.float32))

    def detect(self, gray: NDArray[Any], *, hit_threshold: float = 0.0, scale_step: float = 1.05,
               group_threshold: int = 2) -> list[tuple[int, int, int, int]]:
        """Upright people in a grey image as (x, y, w, h); nothing when it is smaller than the window."""
        if gray.shape[0] < PEOPLE_WINDOW[1] or gray.shape[1] < PEOPLE_WINDOW[0]:
            return []
        boxes, _ = self._hog.detectMultiScale(gray, hitThreshold=hit_threshold, winStride=(8, 8), padding=(8, 8),
                                              scale=scale_step, groupThreshold=group_threshold)
        return [(int(x), int(y), int(w), int(h)) for x, y, w, h in boxes]
