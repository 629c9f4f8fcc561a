"""OpenCV's classic detectors as the built-ins use them: the frontal-face cascade finds frontal faces and
nothing else; the HOG people detector finds an upright silhouette, not a box or a person lying down."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from agent.algorithms.classic import FRONTAL_FACE, Detection, FaceCascade, PeopleDetector
from tests.algorithms import video


def gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def test_the_bundled_cascade_travels_with_its_licence() -> None:
    assert "Intel License Agreement" in FRONTAL_FACE.read_text()[:3000]


def test_a_drawn_face_is_found_at_its_place_and_size() -> None:
    image = video.draw_face(video.textured_background(320, 240), (150, 120), 80)
    faces = FaceCascade().detect(gray(image), scale_factor=1.1)
    assert len(faces) == 1
    face = faces[0]
    assert abs(face.x + face.w / 2 - 150) <= 8 and abs(face.y + face.h / 2 - 115) <= 15
    assert 80 <= face.w <= 130 and face.w == face.h
    assert face.neighbours > 3


def test_no_face_no_detection_a_face_on_its_side_included() -> None:
    background = video.textured_background(320, 240)
    cascade = FaceCascade()
    assert cascade.detect(gray(background)) == []
    on_its_side = cv2.rotate(video.draw_face(background.copy(), (150, 120), 80), cv2.ROTATE_90_CLOCKWISE)
    assert cascade.detect(gray(on_its_side)) == []
    assert cascade.detect(np.full((240, 320), 128, np.uint8)) == []
    assert cascade.detect(np.zeros((20, 20), np.uint8)) == []  # smaller than the window


def test_min_and_max_size_bound_the_search() -> None:
    image = video.draw_face(video.textured_background(320, 240), (150, 120), 80)
    cascade = FaceCascade()
    assert cascade.detect(gray(image), min_size=150) == []
    assert cascade.detect(gray(image), max_size=60) == []
    assert len(cascade.detect(gray(image), min_size=60, max_size=150)) == 1


def test_a_file_that_is_not_a_cascade_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "lbp.xml"
    other.write_text("<opencv_storage><cascade><featureType>LBP</featureType></cascade></opencv_storage>")
    with pytest.raises(ValueError, match="not a cascade"):
        FaceCascade(other)


def test_same_detections_as_opencv_own_cascade_classifier() -> None:
    reference = cv2.CascadeClassifier(str(FRONTAL_FACE))
    image = video.textured_background(480, 320, seed=11)
    for centre, width in (((120, 150), 90), ((330, 170), 120), ((420, 60), 50)):
        video.draw_face(image, centre, width)
    for scale_factor in (1.1, 1.2):
        ours = FaceCascade().detect(gray(image), scale_factor=scale_factor, min_neighbours=3)
        boxes, counts = reference.detectMultiScale2(gray(image), scaleFactor=scale_factor, minNeighbors=3)
        theirs = [Detection(*box, count) for box, count in zip(boxes.tolist(), counts.tolist(), strict=True)]
        assert len(ours) == 3 and sorted(ours, key=str) == sorted(theirs, key=str)


def person_scene(background: int = 200) -> np.ndarray:
    image = np.full((240, 320, 3), background, np.uint8)
    video.draw_person(image, (100, 40), 150)
    cv2.rectangle(image, (200, 120), (260, 160), (40, 40, 40), -1)  # a parcel, not a person
    return gray(image)


def test_an_upright_silhouette_is_a_person_where_it_stands() -> None:
    found = PeopleDetector().detect(person_scene())
    assert len(found) == 1
    x, y, w, h = found[0]
    # The silhouette spans x 85–115, y 40–190; OpenCV's window has a margin around the body.
    assert x <= 85 and x + w >= 115
    assert y <= 40 and y + h >= 185
    assert h <= 230


def test_no_people_in_boxes_texture_or_nothing() -> None:
    people = PeopleDetector()
    assert people.detect(gray(video.textured_background(320, 240))) == []
    box = np.full((200, 120), 200, np.uint8)
    cv2.rectangle(box, (30, 40), (90, 160), 40, -1)
    assert people.detect(box) == []
    assert people.detect(np.zeros((100, 50), np.uint8)) == []  # smaller than the window


def test_the_person_lying_down_is_not_upright() -> None:
    assert PeopleDetector().detect(cv2.rotate(person_scene(), cv2.ROTATE_90_CLOCKWISE)) == []


def test_same_detections_as_opencv_own_hog_descriptor() -> None:
    reference = cv2.HOGDescriptor()
    reference.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    image = person_scene(150)
    boxes, _ = reference.detectMultiScale(image, winStride=(8, 8), padding=(8, 8), scale=1.05)
    assert PeopleDetector().detect(image) == [tuple(box) for box in boxes.tolist()]
    assert len(boxes) == 1
