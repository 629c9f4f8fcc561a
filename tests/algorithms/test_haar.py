"""The NumPy Haar cascade: finds frontal faces, nothing else, and merges neighbours like OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.algorithms.grouping import Detection, group_rectangles
from agent.algorithms.haar import FRONTAL_FACE, HaarCascade, load_cascade
from tests.algorithms import video


def gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def test_the_bundled_cascade_loads_with_its_25_stages() -> None:
    cascade = load_cascade()
    assert cascade.window == (24, 24)
    assert len(cascade.stages) == 25
    assert sum(len(stage.thresholds) for stage in cascade.stages) == 2913
    assert load_cascade() is cascade  # parsed once
    assert "Intel License Agreement" in FRONTAL_FACE.read_text()[:3000]  # its licence travels with it


def test_a_drawn_face_is_found_at_its_place_and_size() -> None:
    image = video.draw_face(video.textured_background(320, 240), (150, 120), 80)
    faces = load_cascade().detect(gray(image), scale_factor=1.1)
    assert len(faces) == 1
    face = faces[0]
    assert abs(face.x + face.w / 2 - 150) <= 8 and abs(face.y + face.h / 2 - 115) <= 15
    assert 80 <= face.w <= 130 and face.w == face.h
    assert face.neighbours > 3


def test_no_face_no_detection_a_face_on_its_side_included() -> None:
    background = video.textured_background(320, 240)
    cascade = load_cascade()
    assert cascade.detect(gray(background)) == []
    on_its_side = cv2.rotate(video.draw_face(background.copy(), (150, 120), 80), cv2.ROTATE_90_CLOCKWISE)
    assert cascade.detect(gray(on_its_side)) == []
    assert cascade.detect(np.full((240, 320), 128, np.uint8)) == []
    assert cascade.detect(np.zeros((20, 20), np.uint8)) == []  # smaller than the window


def test_min_and_max_size_bound_the_search() -> None:
    image = video.draw_face(video.textured_background(320, 240), (150, 120), 80)
    cascade = load_cascade()
    assert cascade.detect(gray(image), min_size=150) == []
    assert cascade.detect(gray(image), max_size=60) == []
    assert len(cascade.detect(gray(image), min_size=60, max_size=150)) == 1


def test_grouping_keeps_clusters_above_min_neighbours_and_averages_them() -> None:
    cluster = [(100, 100, 50, 50), (102, 98, 52, 52), (98, 101, 48, 48), (101, 100, 50, 50)]
    lonely = [(10, 10, 30, 30)]
    assert group_rectangles(cluster + lonely, min_neighbours=3) == [Detection(100, 100, 50, 50, 4)]
    assert len(group_rectangles(cluster + lonely, min_neighbours=0)) == 2
    assert group_rectangles(cluster, min_neighbours=4) == []


def test_a_weak_cluster_inside_a_strong_one_is_dropped() -> None:
    outer = [(100, 100, 100, 100)] * 8
    inner = [(130, 130, 40, 40)] * 2
    assert group_rectangles(outer + inner, min_neighbours=1) == [Detection(100, 100, 100, 100, 8)]


def test_a_file_that_is_not_a_haar_cascade_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "lbp.xml"
    other.write_text("<opencv_storage><cascade><featureType>LBP</featureType></cascade></opencv_storage>")
    with pytest.raises(ValueError, match="not a Haar cascade"):
        HaarCascade.load(other)


@pytest.mark.skipif(not hasattr(cv2, "CascadeClassifier"), reason="OpenCV 5 has no CascadeClassifier to compare with")
def test_same_detections_as_opencv_own_cascade_classifier() -> None:
    reference = cv2.CascadeClassifier(str(FRONTAL_FACE))
    image = video.textured_background(480, 320, seed=11)
    for centre, width in (((120, 150), 90), ((330, 170), 120), ((420, 60), 50)):
        video.draw_face(image, centre, width)
    for scale_factor in (1.1, 1.2):
        ours = sorted(load_cascade().detect(gray(image), scale_factor=scale_factor, min_neighbours=3),
                      key=lambda d: (d.x, d.y))
        boxes, counts = reference.detectMultiScale2(gray(image), scaleFactor=scale_factor, minNeighbors=3)
        theirs = sorted(zip(boxes.tolist(), counts.tolist(), strict=True))
        assert len(ours) == len(theirs) == 3
        # OpenCV evaluates in single precision: a borderline window may go the other way, moving a
        # merged box by a pixel.
        for mine, (box, count) in zip(ours, theirs, strict=True):
            assert max(abs(a - b) for a, b in zip((mine.x, mine.y, mine.w, mine.h), box, strict=True)) <= 2
            assert abs(mine.neighbours - count) <= max(2, count // 10)
