"""face-detection on real H.264: drawn faces appear, move, and leave; each face is one event; images only
when asked for. Every detector (BlazeFace full and short range, the Haar cascade) is held to the same."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.algorithms.base import FACE_IMAGE, ORIGIN_IMAGE
from agent.algorithms.blazeface import LANDMARKS
from agent.algorithms.event import Event
from agent.algorithms.face import FaceConfig, FaceDetection
from agent.sources.frame import Frame
from tests.algorithms import video

FPS, SAMPLE_EVERY = 10, 5  # the default 2 frames a second
WIDTH, HEIGHT = 960, 540  # wider than the Haar search's 640 px: boxes are mapped back
BIG_FACE_X = [300 + 14 * i for i in range(20)]  # centre x per frame of the 2 s with faces: 70 px per sample
BIG, SMALL = 150, 100  # drawn face widths; the face's square box is about 0.9–1.8× that
DETECTORS = ("blazeface-full", "blazeface", "haar")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    background = video.textured_background(WIDTH, HEIGHT)

    def faces(i: int) -> np.ndarray:
        image = background.copy()
        video.draw_face(image, (BIG_FACE_X[i], 260), BIG)
        video.draw_face(image, (760, 300), SMALL)
        return image

    parts = [(1.0, lambda i: background), (2.0, faces), (1.0, lambda i: background)]
    return video.encode(tmp_path_factory.mktemp("face") / "faces.mp4", video.segments(*parts, fps=FPS), FPS)


@pytest.fixture(scope="module")
def frames(clip: Path) -> list[Frame]:
    return list(video.decode(clip, every=SAMPLE_EVERY, input_index=2))


def run(algorithm: FaceDetection, frames: list[Frame]) -> list[tuple[float, Event]]:
    found = []
    for frame in frames:
        for event in algorithm.process({2: frame}):
            assert frame.info.stream_time is not None
            found.append((frame.info.stream_time, event))
    return found


def centre(box: dict[str, int]) -> tuple[float, float]:
    return box["x"] + box["w"] / 2, box["y"] + box["h"] / 2


def check_faces(t: float, event: Event) -> tuple[dict[str, object], dict[str, object]]:
    """Both faces where they are at stream time t; returns the items (big face first)."""
    assert event.event_type == 65536 and event.input_index == 2
    json.dumps(list(event.event_set))  # JSON-ready, as the envelope needs
    big, small = sorted(event.event_set, key=lambda item: item["bounding_box"]["x"])
    expected_x = BIG_FACE_X[round((t - 1.0) * FPS)]
    big_box, small_box = big["bounding_box"], small["bounding_box"]
    assert abs(centre(big_box)[0] - expected_x) <= 20 and abs(centre(big_box)[1] - 260) <= 30
    assert abs(centre(small_box)[0] - 760) <= 20 and abs(centre(small_box)[1] - 300) <= 30
    assert 0.9 * BIG <= big_box["w"] <= 1.8 * BIG and 0.9 * SMALL <= small_box["w"] <= 1.8 * SMALL
    return big, small


def test_each_face_is_one_event_when_it_appears_with_confidence_and_landmarks(frames: list[Frame]) -> None:
    found = run(FaceDetection(FaceConfig(), "1.0"), frames)  # blazeface-full, cooldown 10 s
    assert [round(t, 1) for t, _ in found] == [1.0]
    t, event = found[0]
    assert event.images == {} and event.item_images == ()  # nobody asked for images
    big, small = check_faces(t, event)
    assert big["detection_id"] != small["detection_id"]
    for item in (big, small):
        assert isinstance(item["confidence"], float) and 0.5 <= item["confidence"] <= 1.0
        box = item["bounding_box"]
        assert isinstance(box, dict) and isinstance(item["landmarks"], dict)
        assert list(item["landmarks"]) == list(LANDMARKS)
        for point in item["landmarks"].values():
            assert box["x"] <= point["x"] <= box["x"] + box["w"] and box["y"] <= point["y"] <= box["y"] + box["h"]
        eyes = item["landmarks"]["right_eye"], item["landmarks"]["left_eye"]
        assert eyes[0]["x"] < eyes[1]["x"]  # the subject's right eye is on the picture's left


@pytest.mark.parametrize("detector", DETECTORS)
def test_every_detector_follows_the_moving_face_under_one_id(frames: list[Frame], detector: str) -> None:
    found = run(FaceDetection(FaceConfig(detector=detector, cooldown_s=0), "1.0"), frames)  # report every sample
    assert [round(t, 1) for t, _ in found] == [1.0, 1.5, 2.0, 2.5]
    ids = set()
    for t, event in found:
        big, small = check_faces(t, event)
        ids.add((big["detection_id"], small["detection_id"]))
        assert ("confidence" in big) == (detector != "haar")
    assert len(ids) == 1  # the face moving 70 px a sample kept its id


def test_a_face_that_comes_back_after_leaving_is_a_new_event(frames: list[Frame]) -> None:
    algorithm = FaceDetection(FaceConfig(), "1.0")
    first = run(algorithm, frames)
    again = run(algorithm, [Frame.from_bgr(frame.bgr, input_index=2, stream_time=t)
                            for frame, t in zip(frames, (10 + i * 0.5 for i in range(len(frames))), strict=True)])
    assert len(first) == len(again) == 1
    old = {item["detection_id"] for item in first[0][1].event_set}
    new = {item["detection_id"] for item in again[0][1].event_set}
    assert not old & new


def test_min_and_max_size_leave_out_a_face(frames: list[Frame]) -> None:
    found = run(FaceDetection(FaceConfig(min_size=130, cooldown_s=0), "1.0"), frames)
    assert len(found) == 4
    assert all(len(event.event_set) == 1 and event.event_set[0]["bounding_box"]["w"] >= 130 for _, event in found)
    found = run(FaceDetection(FaceConfig(max_size=140, cooldown_s=0), "1.0"), frames)
    assert len(found) == 4
    assert all(len(event.event_set) == 1 and event.event_set[0]["bounding_box"]["w"] <= 140 for _, event in found)


def test_face_crops_and_the_whole_frame_when_asked(frames: list[Frame]) -> None:
    algorithm = FaceDetection(FaceConfig(), "1.0", data_categories=[FACE_IMAGE, ORIGIN_IMAGE])
    _, event = run(algorithm, frames[2:3])[0]  # 1 s: the faces are there
    whole = cv2.imdecode(np.frombuffer(event.images[ORIGIN_IMAGE], np.uint8), cv2.IMREAD_COLOR)
    assert whole.shape == (HEIGHT, WIDTH, 3)
    assert len(event.item_images) == len(event.event_set)
    for item, images in zip(event.event_set, event.item_images, strict=True):
        crop = cv2.imdecode(np.frombuffer(images[FACE_IMAGE], np.uint8), cv2.IMREAD_COLOR)
        box = item["bounding_box"]
        assert box["w"] <= crop.shape[1] <= box["w"] * 1.5  # the box plus a margin
        # It is the face: the skin tone (B < G < R) dominates the middle of the crop.
        middle = crop[crop.shape[0] // 3: 2 * crop.shape[0] // 3, crop.shape[1] // 3: 2 * crop.shape[1] // 3]
        b, g, r = middle.reshape(-1, 3).mean(axis=0)
        assert b < g < r


def test_only_origin_image_when_only_that_is_asked(frames: list[Frame]) -> None:
    _, event = run(FaceDetection(FaceConfig(), "1.0", data_categories=[ORIGIN_IMAGE]), frames[2:3])[0]
    assert set(event.images) == {ORIGIN_IMAGE} and event.item_images == ()
