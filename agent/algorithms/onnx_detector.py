"""Object detection models the user brings, run by ONNX Runtime on the CPU.

The output layout is told from the shapes of a trial run on a blank input, when the model is first
checked (task create), so a model the agent cannot read is refused then, not when the task starts:

- ``yolov8``: one output ``[1, 4+nc, N]`` — Ultralytics YOLOv8/YOLO11: cx, cy, w, h in input pixels,
  then a score per class, no objectness;
- ``yolov5``: one output ``[1, N, 5+nc]`` with N = 3 anchors × the cells of strides 8, 16, 32 — cx, cy,
  w, h in input pixels, objectness, class scores;
- ``yolox``: one output ``[1, N, 5+nc]`` with N = the cells of strides 8, 16, 32 — YOLOX's raw head:
  offsets within the cell and log sizes (decoded here with the grid and strides), objectness, class scores;
- ``ssd``: outputs named ``*box*`` ``[1, N, 4]`` (ymin, xmin, ymax, xmax as fractions of the input),
  ``*score*`` ``[1, N]`` and ``*class*`` ``[1, N]`` (label indices), as TensorFlow's detection API exports.

The frame is letterboxed to the model's input (YOLOX's way for YOLOX: top-left, BGR 0–255; the others:
centred, RGB 0–1, or RGB 0–255 for uint8 inputs); boxes are mapped back to frame pixels. Labels come
from the model's metadata (``names``, as Ultralytics writes it), else a text file beside the model with
one label per line (``yolo11n.onnx`` → ``yolo11n.txt``), else COCO's 80 classes when the model has 80.
"""

from __future__ import annotations

import ast
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    import onnxruntime

Layout = Literal["yolov8", "yolov5", "yolox", "ssd"]

COCO80 = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)

_STRIDES = (8, 16, 32)
_DYNAMIC_SIZE = 640  # input side used when the model leaves it open
_PAD = 114  # the grey YOLO letterboxes with


class ModelError(ValueError):
    """The model cannot be used; the message says why without echoing file contents."""


@dataclass(frozen=True)
class ModelInfo:
    layout: Layout
    input_name: str
    input_size: tuple[int, int]  # width, height
    channels_first: bool
    uint8_input: bool
    labels: tuple[str, ...]
    outputs: tuple[str, ...]  # ssd: the names of the boxes, scores, classes outputs; else the one output


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x, y, w, h in frame pixels, clipped to the frame
    class_id: int
    label: str
    confidence: float


def inspect_model(path: Path) -> ModelInfo:
    """What the model at ``path`` takes and gives; ModelError when the agent cannot use it. Cached per
    file version, so the create-time check and the task's start read a model once."""
    stat = path.stat()
    return _inspect(path, stat.st_mtime_ns, stat.st_size)


def new_session(path: Path, threads: int) -> onnxruntime.InferenceSession:
    # Imported here, not at the top: ONNX Runtime costs ~37 MiB per process, and only the worker that
    # runs a model needs it (the main process only validates configs).
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One task's worker calls the model; more intra-op threads would fight the stream decoders.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # its warnings about unused initialisers are not the operator's business
    try:
        return onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own exception types for every kind of bad file
        raise ModelError(f"ONNX Runtime cannot load it ({type(exc).__name__})") from None


@lru_cache(maxsize=16)
def _inspect(path: Path, mtime_ns: int, size: int) -> ModelInfo:
    session = new_session(path, 1)
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ModelError(f"it takes {len(inputs)} inputs; an image detector takes one")
    shape = list(inputs[0].shape)
    if len(shape) != 4 or 3 not in (shape[1], shape[3]):
        raise ModelError("its input is not one image of 3 channels ([1, 3, H, W] or [1, H, W, 3])")
    channels_first = shape[1] == 3
    height, width = (shape[2], shape[3]) if channels_first else (shape[1], shape[2])
    input_size = (width if isinstance(width, int) else _DYNAMIC_SIZE,
                  height if isinstance(height, int) else _DYNAMIC_SIZE)
    element = inputs[0].type
    if element not in ("tensor(float)", "tensor(uint8)"):
        raise ModelError(f"its input is {element}; float32 and uint8 inputs are supported")
    uint8_input = element == "tensor(uint8)"
    blank = np.zeros((1, 3, input_size[1], input_size[0]) if channels_first else (1, input_size[1], input_size[0], 3),
                     np.uint8 if uint8_input else np.float32)
    names = tuple(output.name for output in session.get_outputs())
    try:
        results = session.run(None, {inputs[0].name: blank})
    except Exception as exc:
        raise ModelError(f"a trial run failed ({type(exc).__name__})") from None
    shapes = {name: tuple(np.asarray(result).shape) for name, result in zip(names, results, strict=True)}
    layout, classes, outputs = _layout(shapes, input_size)
    labels = _labels(session, path, classes)
    return ModelInfo(layout, inputs[0].name, input_size, channels_first, uint8_input, labels, outputs)


def _layout(shapes: dict[str, tuple[int, ...]],
            input_size: tuple[int, int]) -> tuple[Layout, int | None, tuple[str, ...]]:
    """(layout, number of classes when the output says, the outputs to read) from the output shapes."""
    described = ", ".join(f"{list(shape)}" for shape in shapes.values())
    unknown = ModelError(f"its outputs ({described}) are in no layout the agent decodes: YOLOv8/YOLO11 "
                         "[1, 4+nc, N], YOLOv5 or YOLOX [1, N, 5+nc], or SSD boxes/scores/classes")
    if len(shapes) == 1:
        (name, shape), = shapes.items()
        if len(shape) != 3 or shape[0] != 1:
            raise unknown
        cells = sum((input_size[0] // s) * (input_size[1] // s) for s in _STRIDES)
        _, rows, cols = shape
        if 4 < rows < cols:
            return "yolov8", rows - 4, (name,)
        if cols > 5 and rows == cells:
            return "yolox", cols - 5, (name,)
        if cols > 5 and rows == 3 * cells:
            return "yolov5", cols - 5, (name,)
        raise unknown
    by_role: dict[str, str] = {}
    for name in shapes:
        role = next((r for r in ("box", "score", "class") if r in name.lower()), None)
        if role is not None and role not in by_role:
            by_role[role] = name
    if set(by_role) != {"box", "score", "class"}:
        raise unknown
    boxes, scores, classes = (shapes[by_role[r]] for r in ("box", "score", "class"))
    if len(boxes) != 3 or boxes[2] != 4 or scores != boxes[:2] or classes != boxes[:2] or boxes[0] != 1:
        raise unknown
    return "ssd", None, (by_role["box"], by_role["score"], by_role["class"])


def _labels(session: onnxruntime.InferenceSession, path: Path, classes: int | None) -> tuple[str, ...]:
    labels: tuple[str, ...] | None = None
    names = session.get_modelmeta().custom_metadata_map.get("names")
    if names:
        try:
            parsed = ast.literal_eval(names)  # Ultralytics writes a dict literal: {0: 'person', …}
        except (ValueError, SyntaxError):
            raise ModelError("its metadata 'names' is not a list or dict of labels") from None
        if isinstance(parsed, dict):
            labels = tuple(str(parsed[i]) for i in sorted(parsed))
        elif isinstance(parsed, list | tuple):
            labels = tuple(str(name) for name in parsed)
    beside = path.with_suffix(".txt")
    if labels is None and beside.is_file():
        labels = tuple(line.strip() for line in beside.read_text(encoding="utf-8").splitlines() if line.strip())
    if labels is None:
        labels = COCO80 if classes in (None, len(COCO80)) else tuple(str(i) for i in range(classes or 0))
    if classes is not None and len(labels) != classes:
        raise ModelError(f"it has {classes} classes but {len(labels)} labels")
    return labels


def letterbox(bgr: NDArray[Any], size: tuple[int, int], *, centred: bool) -> tuple[NDArray[Any], float, int, int]:
    """The image scaled to fit ``size`` (width, height) keeping its shape, padded with grey; with the
    scale and the padding's left and top."""
    height, width = bgr.shape[:2]
    scale = min(size[0] / width, size[1] / height)
    scaled_w, scaled_h = max(1, round(width * scale)), max(1, round(height * scale))
    left = (size[0] - scaled_w) // 2 if centred else 0
    top = (size[1] - scaled_h) // 2 if centred else 0
    resized = cv2.resize(bgr, (scaled_w, scaled_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    padded = cv2.copyMakeBorder(resized, top, size[1] - scaled_h - top, left, size[0] - scaled_w - left,
                                cv2.BORDER_CONSTANT, value=(_PAD, _PAD, _PAD))
    return padded, scale, left, top


class OnnxDetector:
    """One model session for one task's worker thread."""

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        self.info = inspect_model(path)
        self._session = new_session(path, threads)

    @property
    def labels(self) -> tuple[str, ...]:
        return self.info.labels

    def detect(self, bgr: NDArray[Any], *, confidence: float, iou: float,
               classes: frozenset[int] | None = None) -> list[Detection]:
        """Objects in a BGR frame scoring at least ``confidence``, overlaps of one class suppressed above
        ``iou``; only ``classes`` (label indices) when given."""
        info = self.info
        yolox = info.layout == "yolox"
        image, scale, left, top = letterbox(bgr, info.input_size, centred=not yolox)
        if not yolox:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        tensor: NDArray[Any] = image if info.uint8_input else image.astype(np.float32) * (1.0 if yolox else 1 / 255)
        if info.channels_first:
            tensor = tensor.transpose(2, 0, 1)
        outputs = self._session.run(list(info.outputs), {info.input_name: np.ascontiguousarray(tensor[None])})
        corners, scores, class_ids = _decode(info, [np.asarray(o) for o in outputs])
        keep = scores >= confidence
        if classes is not None:
            keep &= np.isin(class_ids, list(classes))
        corners, scores, class_ids = corners[keep], scores[keep], class_ids[keep]
        if scores.size == 0:
            return []
        corners = (corners - (left, top, left, top)) / scale  # input pixels → frame pixels
        height, width = bgr.shape[:2]
        corners = np.clip(corners, 0, (width, height, width, height))
        boxes = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
        chosen = cv2.dnn.NMSBoxesBatched(boxes.tolist(), scores.tolist(), class_ids.tolist(), confidence, iou)
        found = []
        for i in np.array(chosen, dtype=np.int64).reshape(-1):
            x0, y0, x1, y1 = (round(float(v)) for v in corners[i])
            if x1 - x0 < 1 or y1 - y0 < 1:
                continue
            class_id = int(class_ids[i])
            label = info.labels[class_id] if class_id < len(info.labels) else str(class_id)
            found.append(Detection((x0, y0, x1 - x0, y1 - y0), class_id, label, float(scores[i])))
        return found


def _decode(info: ModelInfo, outputs: list[NDArray[Any]]) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Corners (x0, y0, x1, y1 in input pixels), best score and its class per candidate."""
    if info.layout == "ssd":
        boxes, ssd_scores, classes = (o.reshape(o.shape[1:]) for o in outputs)
        width, height = info.input_size
        corners = boxes[:, [1, 0, 3, 2]].astype(np.float64) * (width, height, width, height)
        return corners, ssd_scores.astype(np.float64), np.rint(classes).astype(np.int64)
    raw: NDArray[np.float64] = outputs[0][0].astype(np.float64)
    if info.layout == "yolov8":
        raw = raw.T  # [N, 4+nc]
        class_scores = raw[:, 4:]
    else:
        class_scores = raw[:, 5:] * raw[:, 4:5]  # objectness × class score
        if info.layout == "yolox":
            grid, strides = _yolox_grid(info.input_size)
            raw = raw.copy()
            raw[:, :2] = (raw[:, :2] + grid) * strides
            raw[:, 2:4] = np.exp(np.minimum(raw[:, 2:4], 20.0)) * strides
    class_ids: NDArray[np.int64] = class_scores.argmax(axis=1)  # the layouts guarantee one class at least
    scores: NDArray[np.float64] = class_scores[np.arange(len(raw)), class_ids]
    centre, extent = raw[:, :2], raw[:, 2:4]
    return np.concatenate([centre - extent / 2, centre + extent / 2], axis=1), scores, class_ids


@lru_cache(maxsize=8)
def _yolox_grid(input_size: tuple[int, int]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each YOLOX candidate's cell (x, y) and stride, in the head's order: stride 8 row by row, then 16, 32."""
    cells, strides = [], []
    for stride in _STRIDES:
        rows, cols = input_size[1] // stride, input_size[0] // stride
        ys, xs = np.mgrid[0:rows, 0:cols]
        cells.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        strides.append(np.full((rows * cols, 1), stride))
    return np.concatenate(cells).astype(np.float64), np.concatenate(strides).astype(np.float64)
