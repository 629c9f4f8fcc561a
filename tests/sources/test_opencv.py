"""The OpenCV backend behind the same VideoStream interface, against a real RTSP server and files."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.backoff import Backoff, BackoffPolicy
from agent.settings import StreamSettings
from agent.sources.opencv import read_opencv
from agent.sources.stream import StreamState, VideoStream
from agent.sources.target import StreamTarget
from tests.fixtures.rtsp import RtspServer, RtspServerFactory
from tests.sources.test_stream import FAST, collect, gaps, running
from tests.waiting import wait_until

pytestmark = pytest.mark.integration


def test_backend_comes_from_settings_or_the_call(rtsp_h264: RtspServer) -> None:
    by_settings = VideoStream(0, lambda: StreamTarget(rtsp_h264.url), StreamSettings(backend="opencv"), 1)
    by_call = VideoStream(0, lambda: StreamTarget(rtsp_h264.url), StreamSettings(), 1, backend="opencv")
    assert by_settings.reader is read_opencv and by_call.reader is read_opencv


def test_live_rtsp_is_sampled_and_frames_are_bgr(rtsp_h264: RtspServer) -> None:
    resolve = lambda: StreamTarget(rtsp_h264.url)  # noqa: E731
    with running(VideoStream(0, resolve, FAST, 5.0, backend="opencv")) as stream:
        frames = collect(stream, 6, timeout=15)
        status = stream.status()
    assert len(frames) == 6
    assert all(isinstance(f.source, np.ndarray) and f.bgr.shape == (240, 320, 3) for f in frames)
    assert frames[-1].gray.shape == (240, 320)
    assert statistics.median(gaps(frames)) == pytest.approx(0.2, abs=0.05)
    assert (status.codec, status.width, status.height) == ("h264", 320, 240)
    assert status.keyframe_only is False  # OpenCV cannot skip non-key frames
    assert status.frames_decoded > status.frames_sampled


def test_file_is_lossless_and_ends(make_clip: Callable[..., Path]) -> None:
    clip = make_clip(seconds=2.0)
    resolve = lambda: StreamTarget(str(clip), is_file=True)  # noqa: E731
    stream = VideoStream(0, resolve, FAST, 0, backend="opencv", realtime_files=False)
    with running(stream):
        frames = collect(stream, 50, timeout=20)
        wait_until(lambda: stream.status().state is StreamState.ENDED, 10, "ENDED")
    assert len(frames) == 50
    assert gaps(frames) == pytest.approx([0.04] * 49, abs=0.005)


def test_killed_server_reconnects(rtsp_server: RtspServerFactory) -> None:
    server = rtsp_server()
    resolve = lambda: StreamTarget(server.url)  # noqa: E731
    quick = Backoff(BackoffPolicy(first_s=0.2, max_s=1.0))
    stream = VideoStream(0, resolve, FAST, 5.0, backend="opencv", backoff=quick)
    with running(stream):
        assert collect(stream, 2, timeout=10)
        server.stop()
        wait_until(lambda: stream.status().state is StreamState.RECONNECTING, 15, "RECONNECTING")
        server.start()
        wait_until(lambda: stream.status().state is StreamState.RUNNING, 20, "RUNNING again")
        stream.take()
        assert collect(stream, 2, timeout=10)
