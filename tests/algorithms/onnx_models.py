"""Small ONNX detection models built with onnx.helper, so the tests need no download: graphs whose
outputs are known tensors in each layout the agent decodes, and one real convolution that finds dark
objects on a light frame."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CELLS_320 = 40 * 40 + 20 * 20 + 10 * 10  # candidates of strides 8, 16, 32 at 320×320: 2100


def save(path: Path, graph: onnx.GraphProto, metadata: dict[str, str] | None = None) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what every ONNX Runtime of the last years reads
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def constant_model(path: Path, outputs: dict[str, np.ndarray], *, input_shape: tuple[int, ...] = (1, 3, 320, 320),
                   input_type: int = TensorProto.FLOAT, metadata: dict[str, str] | None = None) -> Path:
    """A model whose outputs are these tensors whatever the image: the decoders' known answers."""
    nodes, infos = [], []
    for name, value in outputs.items():
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name + "_value")))
        infos.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype), value.shape))
    image = helper.make_tensor_value_info("images", input_type, input_shape)
    return save(path, helper.make_graph(nodes, "known", [image], infos), metadata)


def yolov8_output(boxes: list[tuple[float, float, float, float, int, float]], classes: int = 80,
                  candidates: int = CELLS_320) -> np.ndarray:
    """[1, 4+nc, N]: (cx, cy, w, h, class, score) per box in input pixels; every other candidate scores 0."""
    out = np.zeros((1, 4 + classes, candidates), np.float32)
    for index, (cx, cy, w, h, cls, score) in enumerate(boxes):
        out[0, :4, index * 7 + 3] = cx, cy, w, h  # spread over the candidates, as a real head's would be
        out[0, 4 + cls, index * 7 + 3] = score
    return out


def yolov5_output(boxes: list[tuple[float, float, float, float, float, int, float]], classes: int = 80) -> np.ndarray:
    """[1, 3·cells, 5+nc]: (cx, cy, w, h, objectness, class, class score) per box in input pixels."""
    out = np.zeros((1, 3 * CELLS_320, 5 + classes), np.float32)
    for index, (cx, cy, w, h, objectness, cls, score) in enumerate(boxes):
        out[0, index * 11 + 5, :5] = cx, cy, w, h, objectness
        out[0, index * 11 + 5, 5 + cls] = score
    return out


def dark_object_model(path: Path, labels: list[str] | None = None, size: int = 64, cell: int = 8,
                      grow: int = 4) -> Path:
    """A YOLOv8-layout model that really looks at the image: a 1×1 convolution turns RGB (0–1) into
    darkness (1 − mean), average pooling scores each ``cell``-pixel cell, and each cell's box is centred
    on the cell, ``grow`` cells wide and high (so NMS keeps the darkest of neighbouring cells). One class
    (``labels[0]``, from the model's metadata when given)."""
    grid = size // cell
    weights = numpy_helper.from_array(np.full((1, 3, 1, 1), -1 / 3, np.float32), "weights")
    bias = numpy_helper.from_array(np.ones(1, np.float32), "bias")
    ys, xs = np.mgrid[0:grid, 0:grid]
    geometry = np.stack([(xs.ravel() + 0.5) * cell, (ys.ravel() + 0.5) * cell,
                         np.full(grid * grid, grow * cell), np.full(grid * grid, grow * cell)])[None].astype(np.float32)
    shape = numpy_helper.from_array(np.array([1, 1, grid * grid], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["images", "weights", "bias"], ["darkness"]),
        helper.make_node("AveragePool", ["darkness"], ["pooled"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Reshape", ["pooled", "shape"], ["scores"]),
        helper.make_node("Constant", [], ["geometry"], value=numpy_helper.from_array(geometry, "geometry_value")),
        helper.make_node("Concat", ["geometry", "scores"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(nodes, "dark-objects", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                                     (1, 3, size, size))],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, (1, 5, grid * grid))],
                              initializer=[weights, bias, shape])
    metadata = {"names": repr(dict(enumerate(labels)))} if labels else None
    return save(path, graph, metadata)
