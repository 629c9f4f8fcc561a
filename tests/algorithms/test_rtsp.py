"""An algorithm fed by the real stream path: GStreamer RTSP server → VideoStream (PyAV) → runner."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agent.algorithms import registry
from agent.algorithms.event import Event
from agent.algorithms.runner import AlgorithmRunner
from agent.settings import StreamSettings
from agent.sources.stream import VideoStream
from agent.sources.target import StreamTarget
from tests.algorithms import video
from tests.fixtures.rtsp import RtspServerFactory

pytestmark = pytest.mark.integration

FPS = 25
WIDTH, HEIGHT = 640, 360


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    background = video.textured_background(WIDTH, HEIGHT)
    frames = [*video.segments((2.0, lambda i: background), fps=FPS),
              *video.moving_block(background, 5.0, FPS, (20, 150), (580, 150), (40, 60))]
    return video.encode(tmp_path_factory.mktemp("rtsp") / "block.mp4", frames, FPS)


def test_intrusion_over_rtsp_reports_the_block_once_inside_the_polygon(
        clip: Path, rtsp_server: RtspServerFactory) -> None:
    server = rtsp_server(file=clip, size=(WIDTH, HEIGHT), fps=FPS)
    common = {"rois": [[[0.5, 0], [1, 0], [1, 1], [0.5, 1]]], "cooldown_s": 60}
    algorithm = registry.create("intrusion-detection", "1.0", common)
    runner = AlgorithmRunner(algorithm, "rtsp-task")
    stream = VideoStream(0, lambda: StreamTarget(server.url),
                         StreamSettings(open_timeout_s=5, read_timeout_s=5, stall_timeout_s=5), algorithm.fps)
    events: list[Event] = []
    seen = 0
    stream.start()
    try:
        # The clip lasts 7 s and is paced in real time; stop once the block has crossed the frame.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and seen < 5 * 6.5:
            frame = stream.take()
            if frame is None:
                time.sleep(0.01)
                continue
            seen += 1
            events.extend(runner.process({0: frame}))
    finally:
        stream.stop()
    assert seen >= 25, f"only {seen} frames in 30 s"
    assert runner.healthy and runner.status().failures == 0
    assert len(events) == 1, [(e.frame.stream_time, e.event_set) for e in events]
    box = events[0].event_set[0]["bounding_box"]
    assert box["x"] >= WIDTH / 2 and abs(box["y"] - 150) <= 8 and abs(box["h"] - 60) <= 12
