"""Which worker process runs a task: pure functions of what the main process knows.

A task's cost is the pixels per second its inputs make the decoder produce: decoding is the data plane's
real cost (docs/benchmarks.md), and it scales with picture size and with how many frames are decoded —
keyframes only when the task's rate allows it, every frame otherwise. A running input's measured size,
source rate and decode mode replace the assumptions below. A new task goes to the worker with the least
cost already placed, all its inputs together (one algorithm call takes a frame of each); a task whose
input names a source some worker already reads (``sources.source_key``) goes to that worker,
whose stream hub then decodes it once for all the tasks on it. A worker waiting out its restart backoff
takes nothing while another worker is up.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from agent.sources.sampler import DecodeMode, choose_decode_mode

K = TypeVar("K", bound=Hashable)  # what identifies a source (sources.source_key.SourceKey)

# What a camera usually sends when nothing was measured yet: 720p at 25 fps, a keyframe a second.
ASSUMED_WIDTH = 1280
ASSUMED_HEIGHT = 720
ASSUMED_SOURCE_FPS = 25.0
ASSUMED_KEYFRAME_INTERVAL_S = 1.0


@dataclass(frozen=True)
class InputMeasure:
    """What a running input has shown of itself; None where it has not (yet)."""

    width: int | None = None
    height: int | None = None
    source_fps: float | None = None
    keyframe_only: bool | None = None


def decoded_fps(target_fps: float, measure: InputMeasure = InputMeasure()) -> float:
    """Frames per second the decoder produces for an input analysed at ``target_fps``."""
    source = measure.source_fps if measure.source_fps and measure.source_fps > 0 else ASSUMED_SOURCE_FPS
    keyframe_only = measure.keyframe_only
    if keyframe_only is None:
        mode = choose_decode_mode(target_fps, source, ASSUMED_KEYFRAME_INTERVAL_S)
        keyframe_only = mode is DecodeMode.KEYFRAMES
    return min(source, 1.0 / ASSUMED_KEYFRAME_INTERVAL_S) if keyframe_only else source


def input_cost(target_fps: float, measure: InputMeasure = InputMeasure()) -> float:
    """Decoded pixels per second of one input."""
    width = measure.width or ASSUMED_WIDTH
    height = measure.height or ASSUMED_HEIGHT
    return float(width * height) * decoded_fps(target_fps, measure)


def task_cost(target_fps: float, measures: Sequence[InputMeasure]) -> float:
    """Decoded pixels per second of a task: the sum over its inputs (one measure per input)."""
    return sum(input_cost(target_fps, measure) for measure in measures)


def choose_worker(loads: Mapping[int, float], keys: Collection[K] = (),
                  key_owners: Mapping[K, int] | None = None, up: Collection[int] | None = None) -> int:
    """The worker for a new task: the one already reading one of its sources (``key_owners``: source key
    → worker), else the least loaded (ties: the lowest index). ``loads``: worker → placed cost; the workers
    in it are the candidates, and there must be one. ``up``: the workers that can take a task now (None:
    all); one waiting to be started again after it kept dying is not a candidate while another is up."""
    if not loads:
        raise ValueError("no worker to place on")
    candidates = [worker for worker in loads if up is None or worker in up] or list(loads)
    owners = key_owners or {}
    for key in keys:
        owner = owners.get(key)
        if owner is not None and owner in candidates:
            return owner
    return min(candidates, key=lambda worker: (loads[worker], worker))
