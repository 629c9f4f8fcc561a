"""face-detection on real photographs (tests/algorithms/face_photos.py): each detector's hits and false
detections against the faces written down there. The bounds are what each model does today with the
agent's defaults (bench/detectors.py prints the full-set figures, docs/benchmarks.md has them): a drop
below them is a regression in decoding, letterboxing or mapping boxes back."""

from __future__ import annotations

import pytest

from tests.algorithms import face_photos


@pytest.mark.parametrize(("name", "photos_found", "lfw_found", "lfw_false"),
                         [("blazeface-full", 2, 12, 1), ("blazeface", 2, 24, 7), ("haar", 1, 22, 2)])
def test_faces_found_in_real_photographs(name: str, photos_found: int, lfw_found: int, lfw_false: int) -> None:
    counts = face_photos.count(face_photos.face_detection(name), lfw_every=4)  # 25 LFW faces, 25 non-faces
    assert counts["photos"].faces == 2 and counts["lfw faces"].faces == 25
    assert counts["photos"].found >= photos_found and counts["photos"].false == 0  # no face in a cat or a cup
    assert counts["lfw faces"].found >= lfw_found
    assert counts["lfw faces"].false + counts["lfw non-faces"].false <= lfw_false


def test_the_cameraman_in_profile_is_found_by_blazeface_only() -> None:
    cameraman = face_photos.photo("camera")
    truth = face_photos.PHOTOS["camera"][0]
    for name in ("blazeface-full", "blazeface"):
        (box,) = face_photos.face_detection(name)(cameraman)
        assert face_photos.iou(truth, box) >= face_photos.MATCH_IOU
    assert face_photos.face_detection("haar")(cameraman) == []
