from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from agent.sources.frame import Frame, FrameInfo


@pytest.fixture(scope="module")
def decoded(make_clip: Callable[..., Path]) -> av.VideoFrame:
    clip = make_clip(size=(320, 240), seconds=0.4)
    with av.open(str(clip)) as container:
        frame: av.VideoFrame = next(container.decode(video=0))
        return frame


def frame_of(source: av.VideoFrame) -> Frame:
    return Frame(FrameInfo(0, source.pts, 0.0, 1.0, source.width, source.height), source)


def test_bgr_matches_ffmpegs_conversion(decoded: av.VideoFrame) -> None:
    frame = frame_of(decoded)
    reference = decoded.to_ndarray(format="bgr24").astype(np.int16)
    assert frame.bgr.shape == (240, 320, 3)
    assert np.abs(frame.bgr.astype(np.int16) - reference).mean() < 2.0
    assert frame.bgr is frame.bgr  # converted once


def test_gray_is_the_luma_plane(decoded: av.VideoFrame) -> None:
    frame = frame_of(decoded)
    luma = np.frombuffer(decoded.planes[0], np.uint8).reshape(240, decoded.planes[0].line_size)[:, :320]
    assert frame.gray.shape == (240, 320)
    assert np.array_equal(frame.gray, luma)


def test_resized_scales_and_converts(decoded: av.VideoFrame) -> None:
    frame = frame_of(decoded)
    small = frame.resized(160, 120)
    assert small.shape == (120, 160, 3)
    expected = cv2.resize(frame.bgr, (160, 120), interpolation=cv2.INTER_AREA).astype(np.int16)
    assert np.abs(small.astype(np.int16) - expected).mean() < 4.0
    assert frame.resized(320, 240) is frame.bgr


def test_jpeg_decodes_back_to_the_image(decoded: av.VideoFrame) -> None:
    frame = frame_of(decoded)
    image = cv2.imdecode(np.frombuffer(frame.jpeg(90), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (240, 320, 3)
    assert np.abs(image.astype(np.int16) - frame.bgr.astype(np.int16)).mean() < 6.0


def test_from_bgr_serves_every_view() -> None:
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, :40] = (255, 0, 0)
    frame = Frame.from_bgr(image, input_index=3, pts=7)
    assert frame.info.input_index == 3 and frame.info.pts == 7
    assert (frame.width, frame.height) == (80, 60)
    assert frame.bgr is image
    assert frame.gray.shape == (60, 80)
    assert frame.resized(40, 30).shape == (30, 40, 3)
