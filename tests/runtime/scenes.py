"""Clips for runtime tests: a block walking into the right half of the frame (an intrusion scene)."""

from __future__ import annotations

from pathlib import Path

from tests.algorithms.video import encode, moving_block, textured_background

WIDTH, HEIGHT, FPS = 320, 240, 25
# the zone: the right half of the frame, in 0–1 coordinates
RIGHT_HALF = [[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]


def intrusion_clip(path: Path, seconds: float = 6.0) -> Path:
    background = textured_background(WIDTH, HEIGHT)
    frames = [background.copy() for _ in range(FPS)]  # a still second first: the background model settles
    frames += list(moving_block(background, seconds - 1.0, FPS, start=(10, 90), end=(260, 90)))
    return encode(path, frames, fps=FPS)


def intrusion_task(url: str, webhook_url: str | None = None, *, event_center: bool = False,
                   name: str = "intrusion", fps: float = 5.0) -> dict[str, object]:
    output: dict[str, object] = {}
    if webhook_url is not None:
        output["webhook"] = {"url": webhook_url, "headers": {"Authorization": "Bearer hook-secret-77"}}
    if event_center:
        output["event_center"] = True
    return {
        "name": name,
        "input": {"type": "url", "data": [{"url": url, "index": 0}]},
        "output": output,
        "config": {"common": {"rois": [RIGHT_HALF], "fps": fps, "min_area": 400}},
        "service_version": "1.0",
    }
