"""The NumPy HOG people detector: finds an upright silhouette, not a box, and matches OpenCV's."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.algorithms import hog
from tests.algorithms import video


def scene(background: int = 200) -> np.ndarray:
    image = np.full((240, 320, 3), background, np.uint8)
    video.draw_person(image, (100, 40), 150)
    cv2.rectangle(image, (200, 120), (260, 160), (40, 40, 40), -1)  # a parcel, not a person
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


def test_an_upright_silhouette_is_a_person_where_it_stands() -> None:
    found = hog.detect_people(scene())
    assert len(found) == 1
    person = found[0]
    # The silhouette spans x 85–115, y 40–190; OpenCV's window has a margin around the body.
    assert person.x <= 85 and person.x + person.w >= 115
    assert person.y <= 40 and person.y + person.h >= 185
    assert person.h <= 230 and person.neighbours > 2


def test_no_people_in_boxes_texture_or_nothing() -> None:
    background = cv2.cvtColor(video.textured_background(320, 240), cv2.COLOR_BGR2GRAY)
    assert hog.detect_people(background) == []
    box = np.full((200, 120), 200, np.uint8)
    cv2.rectangle(box, (30, 40), (90, 160), 40, -1)
    assert hog.detect_people(box) == []
    assert hog.detect_people(np.zeros((100, 50), np.uint8)) == []  # smaller than the window


def test_the_person_lying_down_is_not_upright() -> None:
    lying = cv2.rotate(scene(), cv2.ROTATE_90_CLOCKWISE)
    assert hog.detect_people(lying) == []


@pytest.mark.skipif(not hasattr(cv2, "HOGDescriptor"), reason="OpenCV 5 has no HOGDescriptor to compare with")
def test_same_descriptor_and_detections_as_opencv() -> None:
    reference = cv2.HOGDescriptor()
    reference.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    image = scene(150)
    window = image[40:168, 60:124]
    theirs = reference.compute(window, winStride=(8, 8), padding=(0, 0)).ravel()
    hist = hog._block_histograms(window)  # padded by 8 px: the window starts at block (1, 1)
    ours = np.concatenate([hist[1 + by, 1 + bx] for bx in range(7) for by in range(15)])
    assert np.abs(theirs - ours).max() < 0.01
    boxes, _ = reference.detectMultiScale(image, winStride=(8, 8), scale=1.05)
    found = hog.detect_people(image)
    assert len(found) == len(boxes) == 1
    assert max(abs(a - b) for a, b in zip((found[0].x, found[0].y, found[0].w, found[0].h), boxes[0],
                                          strict=True)) <= 4
