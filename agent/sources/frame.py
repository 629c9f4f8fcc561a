"""A decoded frame with lazy views: nothing is converted until an algorithm asks for it.

Measured on a 2-core box (docs/architecture.md): ``to_ndarray()`` of a yuv420p frame costs 0.1–0.2 ms
and its first H rows are the luma plane, so ``gray`` is free; ``cvtColor(I420→BGR)`` is 1.4–1.8× faster
than ``to_ndarray(format="bgr24")``; ``reformat(w, h, bgr24)`` scales and converts in one pass.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]

_PLANAR_420 = {"yuv420p", "yuvj420p"}


@dataclass(frozen=True)
class FrameInfo:
    """What an event needs to know about the frame it was found on (no pixels)."""

    input_index: int
    pts: int | None  # the first frame of a stream may have none
    stream_time: float | None  # seconds on the stream's clock, when pts and time base are known
    captured_at: float  # wall-clock epoch seconds when the frame left the decoder
    width: int
    height: int


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded, sampled frame. Views are computed once, on first use, and then shared."""

    info: FrameInfo
    source: Any = field(repr=False)  # an av.VideoFrame, or a BGR ndarray (OpenCV backend, tests)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def from_bgr(cls, image: Image, *, input_index: int = 0, pts: int | None = None,
                 stream_time: float | None = None, captured_at: float = 0.0) -> Frame:
        height, width = image.shape[:2]
        return cls(FrameInfo(input_index, pts, stream_time, captured_at, width, height), image)

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height

    @cached_property
    def _planar(self) -> Image | None:
        """The I420 array (H*3/2 × W) when the source is a planar 4:2:0 video frame."""
        if isinstance(self.source, np.ndarray) or self.source.format.name not in _PLANAR_420:
            return None
        planar: Image = self.source.to_ndarray()
        return planar

    @cached_property
    def bgr(self) -> Image:
        """Full-size BGR image (H × W × 3)."""
        if isinstance(self.source, np.ndarray):
            return self.source
        planar = self._planar
        if planar is not None and self.width % 2 == 0 and self.height % 2 == 0:
            return cast(Image, cv2.cvtColor(planar, cv2.COLOR_YUV2BGR_I420))
        image: Image = self.source.to_ndarray(format="bgr24")
        return image

    @cached_property
    def gray(self) -> Image:
        """Luma (H × W): the Y plane itself when the source is planar YUV, no conversion."""
        planar = self._planar
        if planar is not None:
            return planar[: self.height]
        return cast(Image, cv2.cvtColor(self.bgr, cv2.COLOR_BGR2GRAY))

    def resized(self, width: int, height: int) -> Image:
        """BGR at ``width`` × ``height``, scaled and converted in one pass when the source allows."""
        if (width, height) == (self.width, self.height):
            return self.bgr
        if isinstance(self.source, np.ndarray) or "bgr" in self.__dict__:
            return cast(Image, cv2.resize(self.bgr, (width, height), interpolation=cv2.INTER_AREA))
        image: Image = self.source.reformat(width=width, height=height, format="bgr24").to_ndarray()
        return image

    def jpeg(self, quality: int = 85) -> bytes:
        ok, encoded = cv2.imencode(".jpg", self.bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        return bytes(encoded.tobytes())
