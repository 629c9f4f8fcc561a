"""bench-read-frame: reads each sampled frame as BGR and reports nothing (bench/product_clip.py).

The peers it is compared with (a cv2 read loop, an ``ffmpeg -f rawvideo -pix_fmt bgr24`` pipe) hand
over BGR pixels, so this algorithm asks for the same: the agent's cost to get a sampled frame into
an algorithm's hands, and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from agent.algorithms.base import Algorithm, AlgorithmConfig
from agent.algorithms.event import Event
from agent.sources.frame import Frame


class ReadFrameConfig(AlgorithmConfig):
    fps: float = Field(5.0, gt=0, le=30, description="Frames per second to read, per input.")


class ReadFrame(Algorithm):
    service_name = "bench-read-frame"
    versions = ("1.0",)
    event_type = 900002
    Config = ReadFrameConfig
    color = "bgr"
    summary = "Reads each sampled frame as BGR; reports nothing (benchmark plugin)."

    config: ReadFrameConfig

    def process(self, frames: Mapping[int, Frame]) -> list[Event]:
        for frame in frames.values():
            if frame.bgr.size == 0:  # converts the frame, as an algorithm that looks at it would
                raise ValueError("an empty frame")
        return []
