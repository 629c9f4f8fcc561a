"""intrusion-detection on real H.264: a block slides from the left half into a polygon on the right half."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.algorithms.event import Event
from agent.algorithms.intrusion import IntrusionConfig, IntrusionDetection
from agent.sources.frame import Frame
from tests.algorithms import video

FPS, SAMPLE_EVERY = 25, 5  # the algorithm sees 5 frames a second, as configured by default
WIDTH, HEIGHT = 640, 360
BLOCK = (40, 60)
START, END = (20, 150), (580, 150)  # block's top-left corner slides along y = 150
STILL_S, MOVE_S = 2.0, 6.0
RIGHT_HALF = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]


def block_x(t: float) -> float:
    """The block's left edge at stream time t."""
    progress = min(1.0, max(0.0, (t - STILL_S) / MOVE_S))
    return START[0] + (END[0] - START[0]) * progress


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    background = video.textured_background(WIDTH, HEIGHT)
    frames = [*video.segments((STILL_S, lambda i: background), fps=FPS),
              *video.moving_block(background, MOVE_S, FPS, START, END, BLOCK),
              *video.segments((2.0, lambda i: background), fps=FPS)]  # the block is gone
    return video.encode(tmp_path_factory.mktemp("intrusion") / "block.mp4", frames, FPS)


def run(algorithm: IntrusionDetection, clip: Path, input_index: int = 0) -> list[Event]:
    events = []
    for frame in video.decode(clip, every=SAMPLE_EVERY, input_index=input_index):
        events.extend(algorithm.process({input_index: frame}))
    return events


def detector(**common: object) -> IntrusionDetection:
    return IntrusionDetection(IntrusionConfig.model_validate(common), "1.0")


def test_one_event_when_the_block_enters_the_polygon_with_its_box(clip: Path) -> None:
    events = run(detector(rois=[RIGHT_HALF], cooldown_s=60), clip)
    assert len(events) == 1
    event = events[0]
    assert event.event_type == 196609 and event.input_index == 0
    assert len(event.event_set) == 1
    item = event.event_set[0]
    box = item["bounding_box"]
    t = event.frame.stream_time
    assert t is not None
    # Reported only once the block is inside the polygon (x ≥ 320), within half a second of entering.
    entered_at = STILL_S + MOVE_S * (WIDTH / 2 - BLOCK[0] - START[0]) / (END[0] - START[0])
    assert entered_at - 0.25 <= t <= entered_at + 0.8
    assert box["x"] >= WIDTH / 2 and box["x"] + box["w"] <= WIDTH
    # The box is where the block is (up to the shrunk model's pixel size), not somewhere else.
    assert abs(box["y"] - START[1]) <= 6 and abs(box["h"] - BLOCK[1]) <= 10
    assert abs(box["x"] + box["w"] - (block_x(t) + BLOCK[0])) <= 8
    assert item["detection_id"] >= 1 and "category" not in item
    json.dumps(list(event.event_set))  # JSON-ready, as the envelope needs


def test_pixel_and_fractional_polygons_mean_the_same(clip: Path) -> None:
    pixels = [(x * WIDTH, y * HEIGHT) for x, y in RIGHT_HALF]
    pixel_events = run(detector(rois=[pixels], cooldown_s=60), clip)
    fraction_events = run(detector(rois=[RIGHT_HALF], cooldown_s=60), clip)
    assert [e.event_set for e in pixel_events] == [e.event_set for e in fraction_events]


def test_cooldown_repeats_the_same_object_under_the_same_id(clip: Path) -> None:
    events = run(detector(rois=[RIGHT_HALF], cooldown_s=1.0), clip)
    ids = {item["detection_id"] for e in events for item in e.event_set}
    times = [e.frame.stream_time for e in events]
    assert len(ids) == 1
    # Inside the polygon for about 3 s: reported on entry and then about once a second.
    assert 3 <= len(events) <= 5
    assert all(b - a >= 1.0 - 1e-6 for a, b in itertools.pairwise(times))


def test_without_rois_the_whole_frame_is_watched(clip: Path) -> None:
    events = run(detector(cooldown_s=60), clip)
    assert len(events) == 1
    t = events[0].frame.stream_time
    assert t is not None and STILL_S <= t <= STILL_S + 1.0  # as soon as it starts moving
    assert events[0].event_set[0]["bounding_box"]["x"] < WIDTH / 4


def test_a_polygon_the_block_never_reaches_and_a_large_min_area_stay_silent(clip: Path) -> None:
    bottom = [(0, 300), (640, 300), (640, 360), (0, 360)]
    assert run(detector(rois=[bottom]), clip) == []
    assert run(detector(min_area=0.05), clip) == []  # 5% of the frame: the block is 1%


def test_inputs_are_independent_and_may_change_size(clip: Path, tmp_path: Path) -> None:
    algorithm = detector(rois=[RIGHT_HALF], cooldown_s=60)
    small = tmp_path / "small.mp4"
    background = cv2.resize(video.textured_background(WIDTH, HEIGHT), (320, 180))
    video.encode(small, [*video.segments((STILL_S, lambda i: background), fps=FPS),
                         *video.moving_block(background, MOVE_S, FPS, (10, 75), (290, 75), (20, 30))], FPS)
    events: list[Event] = []
    for big, little in zip(video.decode(clip, every=SAMPLE_EVERY, input_index=0),
                           video.decode(small, every=SAMPLE_EVERY, input_index=7), strict=False):
        events.extend(algorithm.process({0: big, 7: little}))
    by_input = {e.input_index: e for e in events}
    assert sorted(by_input) == [0, 7] and len(events) == 2
    assert by_input[7].event_set[0]["bounding_box"]["x"] >= 160
    assert by_input[7].event_set[0]["bounding_box"]["w"] <= 40

    # Input 0 switching to another resolution starts a fresh background model, without a false alarm.
    for frame in video.decode(small, every=SAMPLE_EVERY, input_index=0):
        if frame.info.stream_time is not None and frame.info.stream_time < STILL_S:
            assert algorithm.process({0: frame}) == []


def test_fifty_inputs_each_keep_their_own_model() -> None:
    algorithm = detector(cooldown_s=60)
    rng = np.random.default_rng(5)
    scenes = [video.textured_background(160, 90, seed=i) for i in range(50)]
    late: list[Event] = []
    for step in range(8):
        frames = {}
        for i, scene in enumerate(scenes):
            image = scene.copy()
            if i % 2 and step >= 5:  # odd inputs get a moving object late on
                x = 40 + 12 * (step - 5)
                cv2.rectangle(image, (x, 30), (x + 30, 70), (0, 0, 0), -1)
            noisy = cv2.add(image, rng.integers(0, 3, image.shape, dtype=np.uint8))
            frames[i] = Frame.from_bgr(noisy, input_index=i, captured_at=float(step))
        events = algorithm.process(frames)
        if step < 5:
            assert events == []
        late.extend(events)
    # Seen in two samples, then reported once each (the cooldown outlasts the test).
    assert sorted(e.input_index for e in late) == list(range(1, 50, 2))


def test_classify_people_marks_a_block_as_other(clip: Path) -> None:
    events = run(detector(rois=[RIGHT_HALF], cooldown_s=60, classify_people=True), clip)
    assert [item["category"] for e in events for item in e.event_set] == [2]


def test_classify_people_marks_a_walking_person_as_person(tmp_path: Path) -> None:
    background = np.full((HEIGHT, WIDTH, 3), 185, np.uint8)
    cv2.rectangle(background, (0, 300), (WIDTH, HEIGHT), (150, 160, 150), -1)  # the ground

    def walking(i: int) -> np.ndarray:
        image = background.copy()
        return video.draw_person(image, (60 + 5 * i, 120), 170)

    path = video.encode(tmp_path / "person.mp4",
                        [*video.segments((STILL_S, lambda i: background), (4.0, walking), fps=FPS)], FPS)
    algorithm = detector(rois=[RIGHT_HALF], cooldown_s=60, classify_people=True)
    events = run(algorithm, path)
    assert [item["category"] for e in events for item in e.event_set] == [0]
    box = events[0].event_set[0]["bounding_box"]
    assert box["x"] >= WIDTH / 2 and 150 <= box["h"] <= 190


def test_an_object_keeps_its_id_through_a_frame_where_it_merges_with_a_smear() -> None:
    algorithm = detector(cooldown_s=0)  # report every sample: each shows the id the object has then
    rng = np.random.default_rng(9)
    background = video.textured_background(320, 180)
    ids = []
    for step in range(14):
        image = background.copy()
        if step >= 6:
            x = 60 + 8 * (step - 6)
            cv2.rectangle(image, (x, 80), (x + 20, 110), (0, 0, 0), -1)
            if step in (10, 11):  # a decoding smear above it: the box grows far upwards
                image[0:80, x: x + 20] = 255
        noisy = cv2.add(image, rng.integers(0, 3, image.shape, dtype=np.uint8))
        for event in algorithm.process({0: Frame.from_bgr(noisy, captured_at=step * 0.2)}):
            ids.extend(item["detection_id"] for item in event.event_set)
    assert len(ids) >= 6 and set(ids) == {ids[0]}
