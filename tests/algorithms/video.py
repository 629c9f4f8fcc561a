"""Synthetic scenes for the algorithm tests: drawn with OpenCV, encoded to H.264 mp4 and decoded with
PyAV, so the algorithms see real decoder output (yuv420p frames, compression noise), not clean arrays."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from agent.sources.frame import Frame, FrameInfo

Image = np.ndarray


def encode(path: Path, frames: Iterator[Image] | list[Image], fps: int = 25) -> Path:
    """Write BGR frames as an H.264 mp4 (2 s GOP, like a camera)."""
    with av.open(str(path), "w") as container:
        stream = None
        for index, image in enumerate(frames):
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.width, stream.height = image.shape[1], image.shape[0]
                stream.pix_fmt = "yuv420p"
                stream.options = {"preset": "ultrafast", "g": str(2 * fps), "bf": "0", "crf": "23"}
                stream.codec_context.time_base = Fraction(1, fps)
                # PyAV's default slice threading splits every frame into one slice per core; the test
                # RTSP server (GStreamer qtdemux → rtph264pay) then loses all but the last slice.
                stream.codec_context.thread_type = "FRAME"
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = index
            container.mux(stream.encode(frame))
        assert stream is not None, "no frames"
        container.mux(stream.encode())
    return path


def decode(path: Path, *, every: int = 1, input_index: int = 0) -> Iterator[Frame]:
    """Every ``every``-th decoded frame, wrapped as the pipeline wraps them."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            if index % every:
                continue
            info = FrameInfo(input_index, frame.pts, frame.time, time.time(), frame.width, frame.height)
            yield Frame(info, frame)


def textured_background(width: int, height: int, seed: int = 7) -> Image:
    """A static scene with edges everywhere (so blur and occlusion checks have something to lose)."""
    rng = np.random.default_rng(seed)
    image = np.full((height, width, 3), 110, np.uint8)
    for _ in range(60):
        colour = tuple(int(c) for c in rng.integers(30, 230, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(10, 80)), y + int(rng.integers(10, 80))), colour, -1)
        else:
            cv2.circle(image, (x, y), int(rng.integers(5, 40)), colour, -1)
    for x in range(0, width, 16):
        cv2.line(image, (x, 0), (x, height), (60, 60, 60), 1)
    return image


def moving_block(background: Image, seconds: float, fps: int, start: tuple[int, int], end: tuple[int, int],
                 size: tuple[int, int] = (40, 60)) -> Iterator[Image]:
    """A dark block sliding from ``start`` to ``end`` (top-left corners) over a static background."""
    count = int(seconds * fps)
    for index in range(count):
        t = index / max(1, count - 1)
        x = round(start[0] + (end[0] - start[0]) * t)
        y = round(start[1] + (end[1] - start[1]) * t)
        image = background.copy()
        cv2.rectangle(image, (x, y), (x + size[0], y + size[1]), (20, 20, 200), -1)
        yield image


def draw_face(image: Image, centre: tuple[int, int], width: int) -> Image:
    """A cartoon face with the light/dark layout a frontal-face Haar cascade keys on (brows and eyes darker
    than forehead and cheeks, a lighter nose bridge between the eyes)."""
    cx, cy, s = centre[0], centre[1], width
    cv2.ellipse(image, (cx, cy), (int(s * 0.5), int(s * 0.65)), 0, 0, 360, (150, 180, 220), -1)
    eye_y, eye_dx = cy - int(s * 0.12), int(s * 0.2)
    for side in (-1, 1):
        ex = cx + side * eye_dx
        cv2.ellipse(image, (ex, eye_y - int(s * 0.12)), (int(s * 0.13), int(s * 0.03)), 0, 0, 360, (40, 50, 60), -1)
        cv2.ellipse(image, (ex, eye_y), (int(s * 0.1), int(s * 0.05)), 0, 0, 360, (250, 250, 250), -1)
        cv2.circle(image, (ex, eye_y), int(s * 0.045), (30, 30, 30), -1)
    cv2.line(image, (cx, eye_y), (cx - int(s * 0.04), cy + int(s * 0.15)), (110, 140, 180), max(1, s // 40))
    cv2.ellipse(image, (cx, cy + int(s * 0.3)), (int(s * 0.18), int(s * 0.05)), 0, 0, 360, (60, 60, 150), -1)
    return image


def segments(*parts: tuple[float, Callable[[int], Image]], fps: int) -> Iterator[Image]:
    """Concatenate (seconds, frame-number → image) parts into one clip."""
    for seconds, render in parts:
        for index in range(int(seconds * fps)):
            yield render(index)


def draw_person(image: Image, top_centre: tuple[int, int], height: int,
                colour: tuple[int, int, int] = (40, 40, 40)) -> Image:
    """An upright silhouette (head, torso, arms, legs): the outline a HOG people detector keys on."""
    x, y, s = top_centre[0], top_centre[1], height / 100.0

    def at(dx: float, dy: float) -> tuple[int, int]:
        return x + int(dx * s), y + int(dy * s)

    cv2.circle(image, at(0, 7), int(7 * s), colour, -1)
    cv2.ellipse(image, at(0, 33), (int(11 * s), int(20 * s)), 0, 0, 360, colour, -1)
    for side in (-1, 1):
        cv2.line(image, at(9 * side, 18), at(15 * side, 50), colour, max(1, int(5 * s)))  # arm
        cv2.line(image, at(5 * side, 50), at(9 * side, 100), colour, max(1, int(7 * s)))  # leg
    return image
