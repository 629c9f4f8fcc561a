"""The synthetic camera of ``edge-agent demo``: a yard with a restricted zone that two objects enter.

Drawn with OpenCV and encoded with PyAV's bundled FFmpeg (H.264, a 2 s GOP like a camera; MPEG-4 part 2
if a build lacks libx264), so the demo needs no ffmpeg binary, no GStreamer and no camera. The scene is
deterministic: the same length gives the same frames, so a run can be compared with the previous one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]
Point = tuple[float, float]

# The restricted zone, as fractions of width and height (the form the intrusion algorithm's rois take).
ZONE: tuple[Point, ...] = ((0.56, 0.30), (0.96, 0.30), (0.99, 0.97), (0.53, 0.97))
MIN_SECONDS = 4.0
MAX_SECONDS = 120.0
_STILL_S = 1.0  # the first second shows the empty yard: the background model learns it


@dataclass(frozen=True)
class Scene:
    path: Path
    width: int
    height: int
    fps: int
    frames: int
    codec: str
    zone: tuple[Point, ...]

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def zone_pixels(self) -> NDArray[np.int32]:
        return np.array([(round(x * self.width), round(y * self.height)) for x, y in self.zone], dtype=np.int32)


def _background(width: int, height: int) -> Image:
    """A yard seen from above: paving, a few crates and bushes, a kerb line (edges for the decoder to keep)."""
    rng = np.random.default_rng(2026)
    image = np.full((height, width, 3), (118, 124, 122), np.uint8)
    for y in range(0, height, 24):  # paving joints
        cv2.line(image, (0, y), (width, y), (104, 110, 108), 1)
    for x in range(0, width, 48):
        cv2.line(image, (x, 0), (x, height), (104, 110, 108), 1)
    cv2.rectangle(image, (0, 0), (width, int(height * 0.22)), (88, 112, 86), -1)  # lawn along the top
    for _ in range(9):
        x, y = int(rng.integers(10, width - 10)), int(rng.integers(8, int(height * 0.2)))
        cv2.circle(image, (x, y), int(rng.integers(8, 22)), (60, 96, 58), -1)  # bushes
    for _ in range(4):
        x, y = int(rng.integers(0, int(width * 0.45))), int(rng.integers(int(height * 0.3), height - 40))
        cv2.rectangle(image, (x, y), (x + 34, y + 26), (70, 110, 150), -1)  # crates, outside the zone
        cv2.rectangle(image, (x, y), (x + 34, y + 26), (40, 70, 100), 2)
    cv2.line(image, (0, int(height * 0.22)), (width, int(height * 0.22)), (190, 190, 190), 2)  # kerb
    return image


def _person(image: Image, x: int, y: int, step: int, scale: float) -> None:
    """A walker seen from a high camera: head, torso, legs that swing with ``step``."""
    s = scale
    body = (40, 40, 170)
    cv2.circle(image, (x, y), round(9 * s), (60, 90, 140), -1)
    cv2.rectangle(image, (x - round(11 * s), y + round(9 * s)), (x + round(11 * s), y + round(44 * s)), body, -1)
    swing = round((6 if step % 2 else -6) * s)
    for side in (-1, 1):
        hip = (x + side * round(6 * s), y + round(44 * s))
        foot = (x + side * round(6 * s) + side * swing, y + round(70 * s))
        cv2.line(image, hip, foot, (30, 30, 60), max(2, round(6 * s)))


def _cart(image: Image, x: int, y: int, scale: float) -> None:
    """A hand cart: a bright box on two wheels."""
    w, h = round(56 * scale), round(34 * scale)
    cv2.rectangle(image, (x, y), (x + w, y + h), (30, 170, 230), -1)
    cv2.rectangle(image, (x, y), (x + w, y + h), (20, 90, 140), 2)
    for wheel in (x + w // 5, x + 4 * w // 5):
        cv2.circle(image, (wheel, y + h + 4), max(3, round(6 * scale)), (25, 25, 25), -1)


def _frames(width: int, height: int, fps: int, count: int) -> Iterator[Image]:
    background = _background(width, height)
    scale = height / 360
    still = round(_STILL_S * fps)
    for index in range(count):
        image = background.copy()
        t = (index - still) / max(1, count - still - 1)  # 0 → 1 over the moving part
        if index >= still:
            # the walker crosses the yard from the left edge and stops well inside the zone
            walk = min(1.0, t / 0.8)
            x = round(-20 * scale + walk * (0.80 * width + 20 * scale))
            _person(image, x, round(height * 0.52), index // max(1, fps // 4), scale)
        if t >= 0.45:
            # the cart rolls down from the lawn into the zone, later
            roll = min(1.0, (t - 0.45) / 0.45)
            y = round(-40 * scale + roll * (0.42 * height + 40 * scale))
            _cart(image, round(0.70 * width), y, scale)
        yield image


def _encoder(container: av.container.OutputContainer, fps: int) -> av.video.stream.VideoStream:
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    stream: av.video.stream.VideoStream = container.add_stream(codec, rate=fps)  # type: ignore[assignment]
    if codec == "libx264":
        stream.options = {"preset": "ultrafast", "g": str(2 * fps), "bf": "0", "crf": "23"}
    else:
        stream.options = {"g": str(2 * fps), "qscale": "4"}
    return stream


def render_scene(path: Path, seconds: float = 12.0, *, width: int = 640, height: int = 360,
                 fps: int = 25) -> Scene:
    """Write the scene to ``path`` (mp4) and describe it; ``seconds`` between 4 and 120."""
    if not MIN_SECONDS <= seconds <= MAX_SECONDS:
        raise ValueError(f"the scene must last {MIN_SECONDS:g} to {MAX_SECONDS:g} seconds")
    if width % 2 or height % 2:
        raise ValueError("width and height must be even (yuv420p)")
    count = round(seconds * fps)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = _encoder(container, fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for index, image in enumerate(_frames(width, height, fps, count)):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
        codec = stream.codec_context.name
    return Scene(path=path, width=width, height=height, fps=fps, frames=count, codec=codec, zone=ZONE)


def frame_at(path: Path, pts: int) -> Image | None:
    """The decoded frame of ``path`` whose pts is ``pts`` (as the agent reported it), in BGR; None if absent."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.pts == pts:
                return np.asarray(frame.to_ndarray(format="bgr24"), dtype=np.uint8)
            if frame.pts is not None and frame.pts > pts:
                return None
    return None
