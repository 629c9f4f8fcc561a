"""BlazeFace's anchors and the decoding of its raw outputs, on tensors made by hand; the real models on
drawn faces anywhere in a wide frame (letterboxing and mapping back)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.algorithms.blazeface import FULL_RANGE, SHORT_RANGE, BlazeFace, anchors, decode
from tests.algorithms import video


def test_anchors_are_mediapipe_ssd_anchors() -> None:
    short, full = anchors(SHORT_RANGE), anchors(FULL_RANGE)
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # Short range: 16×16 cells of stride 8 with 2 anchors each, then 8×8 cells of stride 16 with 6.
    expected = {0: (0.5 / 16, 0.5 / 16), 1: (0.5 / 16, 0.5 / 16), 2: (1.5 / 16, 0.5 / 16),
                512: (0.5 / 8, 0.5 / 8), 517: (0.5 / 8, 0.5 / 8), 895: (7.5 / 8, 7.5 / 8)}
    for index, centre in expected.items():
        assert short[index] == pytest.approx(centre)
    assert full[48] == pytest.approx((0.5 / 48, 1.5 / 48)) and full[-1] == pytest.approx((47.5 / 48, 47.5 / 48))


def raw(count: int, hits: dict[int, tuple[float, list[float]]]) -> tuple[np.ndarray, np.ndarray]:
    scores = np.full((1, count, 1), -20.0, np.float32)
    regressors = np.zeros((1, count, 16), np.float32)
    for index, (logit, values) in hits.items():
        scores[0, index, 0] = logit
        regressors[0, index] = values
    return scores, regressors


def test_a_box_and_its_landmarks_are_decoded_from_the_anchor() -> None:
    centres = anchors(SHORT_RANGE)
    # Anchor 34 (cell 17: x 1, y 1) sits at (1.5/16, 1.5/16)·128 = (12, 12) px; the box centre is moved
    # by (+8, +8) px, 32 px wide; landmarks are offsets from the anchor too.
    landmarks = [0, 0, 8, 0, 4, 4, 4, 8, -12, 0, 12, 0]
    scores, regressors = raw(896, {34: (2.0, [8, 8, 32, 32, *landmarks])})
    # A 256×256 frame letterboxed to 128: twice the input's pixels.
    (face,) = decode(scores, regressors, centres, 128, 256.0, (256, 256), confidence=0.5, nms_iou=0.3)
    assert face.box == (2 * (20 - 16), 2 * (20 - 16), 64, 64)
    assert face.confidence == pytest.approx(1 / (1 + np.exp(-2.0)))
    assert face.landmarks == ((24, 24), (40, 24), (32, 32), (32, 40), (0, 24), (48, 24))


def test_low_scores_overlaps_and_boxes_outside_the_frame_are_dropped() -> None:
    centres = anchors(FULL_RANGE)
    strong, weaker, elsewhere, below, outside = 100, 101, 1000, 300, 2000
    scores, regressors = raw(2304, {
        strong: (3.0, [0, 0, 20, 20] + [0] * 12),
        weaker: (1.0, [0, 0, 22, 22] + [0] * 12),  # the same face, one anchor over: suppressed
        elsewhere: (1.0, [0, 0, 20, 20] + [0] * 12),
        below: (-1.0, [0, 0, 20, 20] + [0] * 12),  # score 0.27 < 0.5
        outside: (3.0, [0, 0, 20, 20] + [0] * 12),  # in the letterbox's padding
    })
    # A 640×360 frame letterboxed to 192: the bottom 280 px of the input's square are padding.
    faces = decode(scores, regressors, centres, 192, 640 / 192 * 192, (640, 360), confidence=0.5, nms_iou=0.3)
    assert [round(f.confidence, 3) for f in faces] == [0.953, 0.731]
    assert all(f.box[1] + f.box[3] <= 360 and f.box[0] + f.box[2] <= 640 for f in faces)
    # Anchor 1000 is at y = (20.5/48)·640 = 273 px: inside the frame; anchor 2000 at 553, below it.
    assert faces[1].box[1] < 273 < faces[1].box[1] + faces[1].box[3]


@pytest.mark.parametrize("variant", [SHORT_RANGE, FULL_RANGE])
def test_the_models_find_a_drawn_face_anywhere_in_a_wide_frame(variant: object) -> None:
    detector = BlazeFace(variant)  # type: ignore[arg-type]
    for centre in ((100, 90), (540, 270), (320, 180)):
        image = video.draw_face(video.textured_background(640, 360), centre, 90)
        (face,) = detector.detect(image)
        x, y, w, h = face.box
        assert abs(x + w / 2 - centre[0]) <= 12 and abs(y + h / 2 - centre[1]) <= 20
        assert 70 <= w <= 160 and face.confidence >= 0.5
    assert detector.detect(video.textured_background(640, 360)) == []
