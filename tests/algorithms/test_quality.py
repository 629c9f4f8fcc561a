"""video-quality-diagnosis on real H.264: a clip that is fine, then blurred, black, green, covered, frozen."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.algorithms.event import Event
from agent.algorithms.quality import EVENT_TYPE, QualityConfig, VideoQualityDiagnosis
from agent.sources.frame import Frame
from tests.algorithms import video

FPS = 10
WIDTH, HEIGHT = 640, 360
# (check expected in the segment or None, seconds)
SEGMENTS = [("fine", 4), ("blur", 4), ("dark", 4), ("fine", 3), ("color_cast", 4), ("occlusion", 4),
            ("frozen", 20), ("fine", 3)]


def segment_at(t: float) -> str:
    start = 0.0
    for name, seconds in SEGMENTS:
        if t < start + seconds:
            return name
        start += seconds
    return SEGMENTS[-1][0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    background = video.textured_background(WIDTH, HEIGHT)
    rng = np.random.default_rng(3)

    def live(i: int) -> np.ndarray:
        """A camera: something moves, and the sensor adds a little noise."""
        image = background.copy()
        cv2.circle(image, (100 + 3 * (i % 150), 200), 20, (0, 255, 255), -1)
        return cv2.add(image, rng.integers(0, 6, image.shape, dtype=np.uint8))

    blurred = cv2.GaussianBlur(background, (0, 0), 6)
    covered = background.copy()
    covered[:, : int(WIDTH * 0.9)] = (120, 130, 140)  # a hand or a sheet over most of the lens
    frozen = live(0)
    render = {
        "fine": live,
        "blur": lambda i: cv2.add(blurred, rng.integers(0, 6, background.shape, dtype=np.uint8)),
        "dark": lambda i: np.zeros_like(background),
        "color_cast": lambda i: cv2.add((live(i) * 0.5).astype(np.uint8), np.full_like(background, (0, 120, 0))),
        "occlusion": lambda i: covered,
        "frozen": lambda i: frozen,
    }
    parts = [(seconds, render[name]) for name, seconds in SEGMENTS]
    return video.encode(tmp_path_factory.mktemp("quality") / "quality.mp4", video.segments(*parts, fps=FPS), FPS)


def run(algorithm: VideoQualityDiagnosis, clip: Path) -> list[Event]:
    events = []
    for frame in video.decode(clip, every=FPS):  # 1 frame a second: the default fps
        events.extend(algorithm.process({0: frame}))
    return events


def test_each_problem_is_raised_once_in_its_own_segment(clip: Path) -> None:
    events = run(VideoQualityDiagnosis(QualityConfig(), "1.0"), clip)
    raised = []
    for event in events:
        assert event.event_type == EVENT_TYPE
        json.dumps(list(event.event_set))  # JSON-ready, as the envelope needs
        for item in event.event_set:
            t = event.frame.stream_time
            assert t is not None
            raised.append((item["check"], segment_at(t)))
            threshold, score = item["threshold"], item["score"]
            assert (score < threshold) if item["check"] in ("blur", "dark") else (score >= threshold)
    # Each in order, in the segment that has it, and nothing else (no blur on the black frames, no
    # occlusion on them either: darkness explains them).
    assert raised == [("blur", "blur"), ("dark", "dark"), ("color_cast", "color_cast"),
                      ("occlusion", "occlusion"), ("frozen", "frozen")]


def test_frozen_is_raised_after_frozen_s_and_min_duration_delays_the_others(clip: Path) -> None:
    events = run(VideoQualityDiagnosis(QualityConfig(frozen_s=5, min_duration_s=0), "1.0"), clip)
    times = {item["check"]: event.frame.stream_time for event in events for item in event.event_set}
    frozen_start = sum(seconds for _, seconds in SEGMENTS[:6])
    assert times["frozen"] is not None and frozen_start + 5 <= times["frozen"] <= frozen_start + 7
    assert times["blur"] is not None and 4 <= times["blur"] <= 5  # at once, not after 2 s


def test_repeat_s_raises_a_lasting_condition_again(clip: Path) -> None:
    events = run(VideoQualityDiagnosis(QualityConfig(checks=["frozen"], frozen_s=3, repeat_s=5), "1.0"), clip)
    frozen_times = [e.frame.stream_time for e in events]
    # 20 s frozen: raised at 3 s, then every 5 s while it lasts.
    assert len(frozen_times) == 4


def test_only_the_checks_asked_for_run(clip: Path) -> None:
    events = run(VideoQualityDiagnosis(QualityConfig(checks=["dark"]), "1.0"), clip)
    assert [item["check"] for e in events for item in e.event_set] == ["dark"]


def test_signal_loss_is_raised_once_per_outage_per_input() -> None:
    algorithm = VideoQualityDiagnosis(QualityConfig(), "1.0")
    events = algorithm.input_down(4, "connection refused", 1000.0)
    assert len(events) == 1 and events[0].input_index == 4 and events[0].frame.captured_at == 1000.0
    assert events[0].event_set[0]["check"] == "signal_loss"
    assert events[0].event_set[0]["reason"] == "connection refused"
    assert algorithm.input_up(4, 1010.0) == []
    assert VideoQualityDiagnosis(QualityConfig(checks=["blur"]), "1.0").input_down(4, "x", 0.0) == []


def test_bright_frames_and_size_changes_per_input() -> None:
    algorithm = VideoQualityDiagnosis(QualityConfig(min_duration_s=1.0), "1.0")
    white = np.full((120, 160, 3), 250, np.uint8)
    scene = video.textured_background(640, 360)
    raised: list[tuple[int, str, float]] = []
    for second in range(4):
        frames = {
            0: Frame.from_bgr(white, input_index=0, captured_at=float(second)),
            # input 5 alternates between two resolutions of a sharp scene: nothing to report
            5: Frame.from_bgr(scene if second % 2 else cv2.resize(scene, (320, 180)), input_index=5,
                              captured_at=float(second)),
        }
        for event in algorithm.process(frames):
            raised += [(event.input_index, item["check"], event.frame.captured_at) for item in event.event_set]
    # Bright from 0 s, raised once it held for 1 s; no blur or occlusion for a blown-out frame.
    assert raised == [(0, "bright", 1.0)]
