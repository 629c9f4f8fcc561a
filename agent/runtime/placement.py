"""Which worker process runs a task: pure functions of what the main process knows.

A task's cost is the pixels per second its inputs make the decoder produce: decoding is the data plane's
real cost (docs/benchmarks.md), and it scales with picture size and with how many frames are decoded —
keyframes only when the task's rate allows it, every frame otherwise. A running input's measured size,
source rate and decode mode replace the assumptions below. A new task goes to the worker with the least
cost already placed, all its inputs together (one algorithm call takes a frame of each); a task whose
input names a source some worker already reads goes to that worker, so that a source can later be
decoded once for all the tasks on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from agent.sources.sampler import DecodeMode, choose_decode_mode
from agent.tasks.model import TaskInputData, TaskInputVcn

# What a camera usually sends when nothing was measured yet: 720p at 25 fps, a keyframe a second.
ASSUMED_WIDTH = 1280
ASSUMED_HEIGHT = 720
ASSUMED_SOURCE_FPS = 25.0
ASSUMED_KEYFRAME_INTERVAL_S = 1.0
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "rtmps": 443, "http": 80, "https": 443}


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


def source_key(kind: str, data: TaskInputData, vcn: TaskInputVcn | None) -> str:
    """What identifies the source an input reads, whichever task names it.

    A URL is compared normalised (scheme and host lower-cased, default port dropped) with its
    credentials, which only a hash of the key keeps: keys are safe to log and to label metrics with.
    """
    if kind == "video_source" and data.video_source_id:
        return f"video_source:{data.video_source_id}"
    if kind == "edgecamera" and data.id:
        return f"edgecamera:{data.id}"
    if kind == "vcn" and vcn is not None:
        identity = f"{vcn.ip.lower()}:{vcn.port}:{vcn.username}:{data.device_id}:{data.stream_type or 1}"
        return f"vcn:{_digest(identity)}"
    url = data.url or ""
    if kind == "restful":
        headers = sorted((data.headers or {}).items())
        return f"restful:{_digest(f'{normalise_url(url)} {data.rtsp_path_in_response} {headers}')}"
    return f"{kind}:{_digest(normalise_url(url))}"


def normalise_url(url: str) -> str:
    """``RTSP://Cam:554/x`` and ``rtsp://cam/x`` are one source; credentials and path are kept as written."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return url.strip()
    scheme = parts.scheme.lower()
    if not parts.netloc:
        return url.strip()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + host
    if port is not None and port != _DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def choose_worker(loads: Mapping[int, float], keys: Collection[str] = (),
                  key_owners: Mapping[str, int] | None = None) -> int:
    """The worker for a new task: the one already reading one of its sources (``key_owners``: source key
    → worker), else the least loaded (ties: the lowest index). ``loads``: worker → placed cost; only the
    workers in it are candidates, and there must be one."""
    if not loads:
        raise ValueError("no worker to place on")
    owners = key_owners or {}
    for key in keys:
        owner = owners.get(key)
        if owner is not None and owner in loads:
            return owner
    return min(loads, key=lambda worker: (loads[worker], worker))
