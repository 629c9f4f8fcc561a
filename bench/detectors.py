"""Cost and hits of the built-in detectors (issue 14).

1. Face detection per 640×360 frame: OpenCV's Haar cascade (as face-detection runs it: scale 1.2,
   3 neighbours, faces from 40 px) against BlazeFace short range and full range (letterbox, network,
   decoding, NMS), on a textured scene with a real face (scikit-image's astronaut) pasted in.
2. Object detection per 640×360 frame (letterbox, ONNX Runtime with one thread as the agent runs it,
   decoding, NMS) at 320 and 640 input, with a model of YOLO-nano size this script builds (random
   weights: a backbone of SiLU convolutions down to stride 32 and YOLOv8-layout heads on strides
   8/16/32; FLOPs and parameters printed, about YOLO11n's 6.5 GFLOPs and 2.6 M at 640).
3. Face detectors on real photographs (tests/algorithms/face_photos.py): faces found and false
   detections, through face-detection with its defaults.

    .venv/bin/python bench/detectors.py [--frames 40]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from agent.algorithms.blazeface import FULL_RANGE, SHORT_RANGE, BlazeFace  # noqa: E402
from agent.algorithms.classic import FaceCascade  # noqa: E402
from agent.algorithms.onnx_detector import OnnxDetector  # noqa: E402
from tests.algorithms import face_photos, video  # noqa: E402


def per_call_ms(call: Callable[[], Any], frames: int) -> tuple[float, float]:
    """Median and 90th percentile of one call, in ms, after two warm-up calls."""
    call()
    call()
    times = []
    for _ in range(frames):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def face_scene() -> np.ndarray:
    scene = video.textured_background(640, 360)
    astronaut = face_photos.photo("astronaut")[40:240, 130:330]  # head and shoulders, face ~95 px
    scene[80:280, 220:420] = astronaut
    return scene


def face_costs(frames: int) -> None:
    scene = face_scene()
    gray = cv2.cvtColor(scene, cv2.COLOR_BGR2GRAY)
    cascade = FaceCascade()
    short, full = BlazeFace(SHORT_RANGE), BlazeFace(FULL_RANGE)
    print(f"\n## 1. Face detection per 640×360 frame (OpenCV threads: {cv2.getNumThreads()})\n")
    print("| detector | faces found | median ms | p90 ms |")
    print("| --- | --- | --- | --- |")
    for name, call in (
        ("Haar cascade (contrib CascadeClassifier)",
         lambda: cascade.detect(gray, scale_factor=1.2, min_neighbours=3, min_size=40)),
        ("BlazeFace short range (128×128)", lambda: short.detect(scene)),
        ("BlazeFace full range (192×192)", lambda: full.detect(scene)),
    ):
        median, p90 = per_call_ms(call, frames)
        print(f"| {name} | {len(call())} | {median:.1f} | {p90:.1f} |")


def yolo_nano_like(path: Path, size: int) -> tuple[int, float]:
    """Write the bench model for ``size``×``size`` input; return its parameters and GFLOPs."""
    rng = np.random.default_rng(0)
    nodes: list[onnx.NodeProto] = []
    weights: list[onnx.TensorProto] = []
    params = 0
    flops = 0.0
    names = itertools.count()

    def conv(x: str, cin: int, cout: int, k: int, stride: int, side: int, act: bool = True,
             bias: float = 0.0) -> tuple[str, int]:
        nonlocal params, flops
        n = next(names)
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(1.0 / (cin * k * k))).astype(np.float32)
        weights.extend([numpy_helper.from_array(w, f"w{n}"),
                        numpy_helper.from_array(np.full(cout, bias, np.float32), f"b{n}")])
        params += w.size + cout
        out_side = side // stride
        flops += 2.0 * k * k * cin * cout * out_side * out_side
        nodes.append(helper.make_node("Conv", [x, f"w{n}", f"b{n}"], [f"c{n}"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not act:
            return f"c{n}", out_side
        nodes.append(helper.make_node("Sigmoid", [f"c{n}"], [f"s{n}"]))
        nodes.append(helper.make_node("Mul", [f"c{n}", f"s{n}"], [f"a{n}"]))  # SiLU, as YOLO uses
        return f"a{n}", out_side

    x, side = conv("images", 3, 16, 3, 2, size)
    x, side = conv(x, 16, 32, 3, 2, side)
    x, side = conv(x, 32, 32, 3, 1, side)
    levels = []
    for cin, cout in ((32, 64), (64, 128), (128, 256)):
        x, side = conv(x, cin, cout, 3, 2, side)
        for _ in range(3):
            x, side = conv(x, cout, cout, 3, 1, side)
        levels.append((x, cout, side))
    heads = []
    for x, channels, level_side in levels:
        h, _ = conv(x, channels, 64, 3, 1, level_side)
        # Box rows then 80 class rows; a negative class bias keeps random scores under the confidence, as
        # on a frame with nothing to detect (NMS then has nothing to do, the usual case).
        box, _ = conv(h, 64, 4, 1, 1, level_side, act=False)
        cls, _ = conv(h, 64, 80, 1, 1, level_side, act=False, bias=-8.0)
        n = next(names)
        nodes.append(helper.make_node("Sigmoid", [cls], [f"p{n}"]))
        nodes.append(helper.make_node("Concat", [box, f"p{n}"], [f"h{n}"], axis=1))
        weights.append(numpy_helper.from_array(np.array([1, 84, -1], np.int64), f"shape{n}"))
        nodes.append(helper.make_node("Reshape", [f"h{n}", f"shape{n}"], [f"r{n}"]))
        heads.append(f"r{n}")
    nodes.append(helper.make_node("Concat", heads, ["output0"], axis=2))
    candidates = sum((size // s) ** 2 for s in (8, 16, 32))
    graph = helper.make_graph(nodes, "yolo-nano-like",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, (1, 3, size, size))],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, (1, 84, candidates))],
                              initializer=weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return params, flops / 1e9


def object_costs(frames: int) -> None:
    scene = face_scene()
    print("\n## 2. Object detection per 640×360 frame (ONNX Runtime, CPU, 1 intra-op thread)\n")
    print("| input | model | parameters | GFLOPs | median ms | p90 ms |")
    print("| --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as folder:
        for size in (320, 640):
            path = Path(folder) / f"nano{size}.onnx"
            params, gflops = yolo_nano_like(path, size)
            detector = OnnxDetector(path, threads=1)
            median, p90 = per_call_ms(lambda d=detector: d.detect(scene, confidence=0.4, iou=0.45), frames)
            print(f"| {size}×{size} | YOLO-nano-sized, YOLOv8 layout | {params / 1e6:.2f} M | {gflops:.1f} | "
                  f"{median:.1f} | {p90:.1f} |")


def photo_counts() -> None:
    print("\n## 3. Face detectors on real photographs (face-detection defaults; IoU ≥ "
          f"{face_photos.MATCH_IOU} with the written-down box)\n")
    print("| detector | astronaut + cameraman found | false on 5 photos | LFW faces found (of 100) | "
          "false on LFW faces | false on LFW non-faces (100) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in ("blazeface-full", "blazeface", "haar"):
        counts = face_photos.count(face_photos.face_detection(name))
        photos, faces, others = counts["photos"], counts["lfw faces"], counts["lfw non-faces"]
        print(f"| {name} | {photos.found}/{photos.faces} | {photos.false} | {faces.found} | {faces.false} | "
              f"{others.false} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=40, help="timed calls per measurement")
    args = parser.parse_args()
    print(f"# bench/detectors.py --frames {args.frames}: {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, OpenCV {cv2.__version__}, load {os.getloadavg()[0]:.1f}")
    face_costs(args.frames)
    object_costs(args.frames)
    photo_counts()


if __name__ == "__main__":
    main()
