"""object-detection with ONNX models built in the test: every output layout decoded to known boxes,
letterboxing mapped back, NMS, classes, ROIs, min_area, labels, tracking (a real convolution following a
dark object across H.264 frames), and the create-time 400s naming config.common.model."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto

from agent.algorithms import registry
from agent.algorithms.event import Event
from agent.algorithms.intrusion import IntrusionDetection
from agent.algorithms.object_detection import ObjectDetection
from agent.algorithms.onnx_detector import COCO80, ModelError, OnnxDetector, inspect_model
from agent.sources.frame import Frame
from agent.tasks.errors import ApiError
from tests.algorithms import onnx_models, video

FRAME = np.zeros((480, 640, 3), np.uint8)  # letterboxed to 320×320: scale 0.5, 40 px of padding above
PERSON, CAR = 0, 2
# Input-pixel boxes (cx, cy, w, h) and where they land in the 640×480 frame (x, y, w, h).
PERSON_BOX, PERSON_IN_FRAME = (100, 120, 40, 80), (160, 80, 80, 160)
CAR_BOX, CAR_IN_FRAME = (200, 200, 60, 30), (340, 290, 120, 60)


def detect(path: Path, confidence: float = 0.4, iou: float = 0.45, frame: np.ndarray = FRAME) -> list[tuple]:
    found = OnnxDetector(path).detect(frame, confidence=confidence, iou=iou)
    return sorted((d.label, d.box, round(d.confidence, 2)) for d in found)


def test_yolov8_layout_boxes_scores_and_nms(tmp_path: Path) -> None:
    output = onnx_models.yolov8_output([(*PERSON_BOX, PERSON, 0.9), (*CAR_BOX, CAR, 0.8),
                                        (104, 122, 40, 80, PERSON, 0.7),  # the same person again: suppressed
                                        (104, 122, 40, 80, CAR, 0.7),  # overlapping, another class: kept
                                        (300, 300, 10, 10, CAR, 0.3)])  # below the confidence
    path = onnx_models.constant_model(tmp_path / "v8.onnx", {"output0": output})
    assert inspect_model(path).layout == "yolov8" and inspect_model(path).labels == COCO80
    assert detect(path) == [("car", (168, 84, 80, 160), 0.7), ("car", CAR_IN_FRAME, 0.8),
                            ("person", PERSON_IN_FRAME, 0.9)]
    assert len(detect(path, iou=0.9)) == 4  # nothing overlaps that much
    assert detect(path, confidence=0.85) == [("person", PERSON_IN_FRAME, 0.9)]


def test_yolov5_layout_multiplies_objectness(tmp_path: Path) -> None:
    output = onnx_models.yolov5_output([(*PERSON_BOX, 0.9, PERSON, 1.0), (*CAR_BOX, 0.5, CAR, 0.9)])
    path = onnx_models.constant_model(tmp_path / "v5.onnx", {"output": output})
    assert inspect_model(path).layout == "yolov5"
    assert detect(path) == [("car", CAR_IN_FRAME, 0.45), ("person", PERSON_IN_FRAME, 0.9)]


def test_yolox_raw_head_is_decoded_with_grid_and_strides(tmp_path: Path) -> None:
    output = np.zeros((1, onnx_models.CELLS_320, 85), np.float32)
    # Stride 8, cell (12, 15): candidate 15·40 + 12; centre (12.5·8, 15.5·8) = (100, 124), size 5×10 cells.
    output[0, 15 * 40 + 12, :5] = 0.5, 0.5, math.log(5), math.log(10), 0.9
    output[0, 15 * 40 + 12, 5 + PERSON] = 1.0
    # Stride 32, cell (3, 4): after the 1600 + 400 finer cells; centre (3.5·32, 4.5·32) = (112, 144).
    output[0, 2000 + 4 * 10 + 3, :5] = 0.5, 0.5, 0.0, 0.0, 0.8
    output[0, 2000 + 4 * 10 + 3, 5 + CAR] = 1.0
    path = onnx_models.constant_model(tmp_path / "yolox.onnx", {"output": output})
    assert inspect_model(path).layout == "yolox"
    # YOLOX letterboxes top-left: no padding offset, scale 0.5.
    assert detect(path) == [("car", (192, 256, 64, 64), 0.8), ("person", (160, 168, 80, 160), 0.9)]


def test_ssd_outputs_uint8_channels_last_and_labels_beside_the_model(tmp_path: Path) -> None:
    boxes = np.zeros((1, 10, 4), np.float32)
    boxes[0, 0] = 0.25, 0.125, 0.75, 0.375  # ymin, xmin, ymax, xmax of the 300×300 input
    scores = np.zeros((1, 10), np.float32)
    scores[0, 0] = 0.75
    classes = np.zeros((1, 10), np.float32)
    classes[0, 0] = 1
    path = onnx_models.constant_model(
        tmp_path / "ssd.onnx", {"detection_boxes": boxes, "detection_scores": scores, "detection_classes": classes,
                                "num_detections": np.array([1], np.float32)},
        input_shape=(1, 300, 300, 3), input_type=TensorProto.UINT8)
    (tmp_path / "ssd.txt").write_text("background\nforklift\n")
    info = inspect_model(path)
    assert (info.layout, info.channels_first, info.uint8_input, info.labels) == ("ssd", False, True,
                                                                                 ("background", "forklift"))
    # 640×480 into 300×300: scale 0.46875, 37 px of padding above.
    assert detect(path) == [("forklift", (80, 81, 160, 320), 0.75)]


def test_labels_from_the_model_metadata_must_match_its_classes(tmp_path: Path) -> None:
    output = onnx_models.yolov8_output([(*PERSON_BOX, 1, 0.9)], classes=2)
    path = onnx_models.constant_model(tmp_path / "two.onnx", {"output0": output},
                                      metadata={"names": "{0: 'cat', 1: 'forklift'}"})
    assert detect(path) == [("forklift", PERSON_IN_FRAME, 0.9)]
    wrong = onnx_models.constant_model(tmp_path / "wrong.onnx", {"output0": output},
                                       metadata={"names": "['a', 'b', 'c']"})
    with pytest.raises(ModelError, match="2 classes but 3 labels"):
        inspect_model(wrong)


def test_models_the_agent_cannot_use_are_refused_at_create_naming_the_key(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    good = onnx_models.constant_model(models / "good.onnx", {"output0": onnx_models.yolov8_output([])})
    unknown = onnx_models.constant_model(models / "odd.onnx", {"out": np.zeros((1, 7), np.float32)})
    garbage = models / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    outside = onnx_models.constant_model(tmp_path / "outside.onnx", {"output0": onnx_models.yolov8_output([])})
    registry.validate_task("object-detection", "1.0", {"model": str(good)}, models_roots=[models])

    def refused(common: dict[str, object], roots: list[Path]) -> ApiError:
        with pytest.raises(ApiError) as caught:
            registry.validate_task("object-detection", "1.0", common, models_roots=roots)
        return caught.value

    for common, roots, reason in [
        ({"model": str(unknown)}, [models], "no layout the agent decodes"),
        ({"model": str(garbage)}, [models], "ONNX Runtime cannot load it"),
        ({"model": str(outside)}, [models], "outside the agent's models_roots"),
        ({"model": str(good)}, [], "the agent has no models_roots"),
        ({"model": str(models / "missing.onnx")}, [models], "no such file"),
        ({}, [models], "name the ONNX model file"),
    ]:
        error = refused(common, roots)
        assert error.params == ["config.common.model"] and reason in error.reason, (common, error.reason)
        assert "not a model at all" not in error.detail
    error = refused({"model": str(good), "classes": ["person", "unicorn"]}, [models])
    assert error.params == ["config.common.classes"]
    with pytest.raises(ApiError) as caught:  # intrusion-detection's model detector needs a model too
        registry.validate_task("intrusion-detection", "1.0", {"detector": "model"}, models_roots=[models])
    assert "config.common.model" in caught.value.reason


@pytest.fixture(scope="module")
def walking_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A dark figure (100×180 px) walking left to right across a light 640×360 scene for 4 s at 10 fps,
    and the model that sees it (the real convolution)."""
    folder = tmp_path_factory.mktemp("objects")
    model = onnx_models.dark_object_model(folder / "dark.onnx", ["person"])
    background = np.full((360, 640, 3), 225, np.uint8)

    def walking(i: int) -> np.ndarray:
        image = background.copy()
        x = 20 + 12 * i
        image[120:300, x: x + 100] = 25
        return image

    frames = [*video.segments((1.0, lambda i: background), (4.0, walking), (1.0, lambda i: background), fps=10)]
    return video.encode(folder / "walk.mp4", frames, 10), model


def run(algorithm: ObjectDetection | IntrusionDetection, clip: Path) -> list[Event]:
    events = []
    for frame in video.decode(clip, every=2):  # 5 samples a second
        events.extend(algorithm.process({0: frame}))
    return events


def create(service: str, model: Path, **common: object) -> ObjectDetection | IntrusionDetection:
    algorithm = registry.create(service, "1.0", {"model": str(model), "confidence": 0.6, "iou": 0.3, **common},
                                models_roots=[model.parent])
    assert isinstance(algorithm, ObjectDetection | IntrusionDetection)
    return algorithm


def test_a_walking_object_is_one_event_with_its_label_and_box(walking_clip: tuple[Path, Path]) -> None:
    clip, model = walking_clip
    events = run(create("object-detection", model), clip)
    assert len(events) == 1
    (item,) = events[0].event_set
    assert item["label"] == "person" and item["category"] == 0 and item["detection_id"] == 1
    assert 0.6 <= item["confidence"] <= 1.0
    box = item["bounding_box"]
    t = events[0].frame.stream_time
    assert t is not None and 1.0 <= t <= 1.5  # seen twice, then reported
    figure_x = 20 + 12 * round((t - 1.0) * 10)
    # The model's boxes are centred on its cells (80 frame px), 4 cells wide: the figure lies inside.
    assert box["x"] <= figure_x + 20 and box["x"] + box["w"] >= figure_x + 80
    assert box["y"] <= 160 and box["y"] + box["h"] >= 260


def test_every_sample_keeps_the_id_while_the_object_walks(walking_clip: tuple[Path, Path]) -> None:
    clip, model = walking_clip
    events = run(create("object-detection", model, cooldown_s=0), clip)
    assert len(events) >= 15 and {item["detection_id"] for e in events for item in e.event_set} == {1}
    xs = [e.event_set[0]["bounding_box"]["x"] for e in events]
    assert xs[-1] - xs[0] >= 300  # it did walk across


def test_rois_min_area_and_classes_filter(walking_clip: tuple[Path, Path], tmp_path: Path) -> None:
    clip, model = walking_clip
    right = [[0.6, 0.0], [1.0, 0.0], [1.0, 1.0], [0.6, 1.0]]
    events = run(create("object-detection", model, rois=[right], cooldown_s=60), clip)
    assert len(events) == 1
    box = events[0].event_set[0]["bounding_box"]
    assert box["x"] + box["w"] / 2 >= 0.6 * 640  # its foot point entered the right part
    assert run(create("object-detection", model, min_area=0.5), clip) == []


def test_classes_keep_only_the_labels_asked_for(tmp_path: Path) -> None:
    output = onnx_models.yolov8_output([(*PERSON_BOX, PERSON, 0.9), (*CAR_BOX, CAR, 0.8)])
    model = onnx_models.constant_model(tmp_path / "v8.onnx", {"output0": output})
    found = []
    for common in ({}, {"classes": ["car", "truck"]}):
        algorithm = create("object-detection", model, **common)
        for t in range(3):
            found.append(sorted((item["label"], item["category"], tuple(item["bounding_box"].values()))
                                for event in algorithm.process({0: Frame.from_bgr(FRAME, stream_time=t * 0.2)})
                                for item in event.event_set))
    # Seen twice before a report; then reported once.
    assert found == [[], [("car", 1, CAR_IN_FRAME), ("person", 0, PERSON_IN_FRAME)], [],
                     [], [("car", 1, CAR_IN_FRAME)], []]


def test_intrusion_detection_with_the_model_detector(walking_clip: tuple[Path, Path]) -> None:
    clip, model = walking_clip
    right = [[0.6, 0.0], [1.0, 0.0], [1.0, 1.0], [0.6, 1.0]]
    events = run(create("intrusion-detection", model, detector="model", rois=[right], cooldown_s=60), clip)
    assert len(events) == 1
    (item,) = events[0].event_set
    assert item["category"] == 0 and item["label"] == "person" and item["detection_id"] == 1
    assert events[0].event_type == 196609


def test_a_frame_with_nothing_dark_reports_nothing(walking_clip: tuple[Path, Path]) -> None:
    _, model = walking_clip
    algorithm = create("object-detection", model)
    light = np.full((360, 640, 3), 225, np.uint8)
    assert all(algorithm.process({0: Frame.from_bgr(light, stream_time=t / 5)}) == [] for t in range(10))
