"""face-detection on real H.264: drawn faces appear, move, and leave; images only when asked for."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.algorithms.base import FACE_IMAGE, ORIGIN_IMAGE
from agent.algorithms.event import Event
from agent.algorithms.face import FaceConfig, FaceDetection
from agent.sources.frame import Frame
from tests.algorithms import video

FPS, SAMPLE_EVERY = 10, 5  # the default 2 frames a second
WIDTH, HEIGHT = 960, 540  # wider than the 640 px search: boxes are mapped back
BIG_FACE_X = [300 + 6 * i for i in range(20)]  # centre x per frame of the 2 s with faces
BIG, SMALL = 150, 100  # drawn face widths; the face's square box is about 1.3× that


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


def test_both_faces_found_where_they_are_and_only_while_they_are(frames: list[Frame]) -> None:
    found = run(FaceDetection(FaceConfig(), "1.0"), frames)
    assert [round(t, 1) for t, _ in found] == [1.0, 1.5, 2.0, 2.5]
    for t, event in found:
        assert event.event_type == 65536 and event.input_index == 2
        assert event.images == {} and event.item_images == ()  # nobody asked for images
        json.dumps(list(event.event_set))  # JSON-ready, as the envelope needs
        boxes = sorted((item["bounding_box"] for item in event.event_set), key=lambda b: b["x"])
        assert len(boxes) == 2
        big, small = boxes
        expected_x = BIG_FACE_X[round((t - 1.0) * FPS)]
        assert abs(centre(big)[0] - expected_x) <= 15 and abs(centre(big)[1] - 260) <= 30
        assert abs(centre(small)[0] - 760) <= 15 and abs(centre(small)[1] - 300) <= 30
        assert 1.0 * BIG <= big["w"] <= 1.8 * BIG and 1.0 * SMALL <= small["w"] <= 1.8 * SMALL


def test_min_size_leaves_out_the_small_face(frames: list[Frame]) -> None:
    found = run(FaceDetection(FaceConfig(min_size=170), "1.0"), frames)
    assert len(found) == 4
    assert all(len(event.event_set) == 1 and event.event_set[0]["bounding_box"]["w"] >= 170 for _, event in found)


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
