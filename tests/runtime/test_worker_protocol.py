"""Every message between the main process and a worker survives the pipe as it was sent."""

from __future__ import annotations

import multiprocessing
from typing import Any, get_args

from agent.algorithms.event import Event
from agent.runtime.pipeline import PipelineStatus
from agent.runtime.worker_protocol import (
    Committed,
    EventsBatch,
    FromWorker,
    Reconnect,
    Resolved,
    ResolveRequest,
    Shutdown,
    Started,
    StartTask,
    StatusReport,
    Stopped,
    StopTask,
    StreamsReport,
    ToWorker,
    WorkerConfig,
    WorkerReady,
)
from agent.settings import StreamSettings
from agent.sources.frame import FrameInfo
from agent.sources.hub import SharedStreamStatus
from agent.sources.stream import StreamState
from agent.sources.target import StreamTarget
from agent.tasks.model import TaskState, parse_create
from agent.tasks.store import Desired, TaskError, TaskRecord
from tests.runtime.scenes import intrusion_task
from tests.runtime.test_task_state import runner, stream


def record() -> TaskRecord:
    spec = parse_create(intrusion_task("rtsp://user:pw@cam.local/main", "http://127.0.0.1:9/hook"))
    return TaskRecord("a" * 32, "p", "intrusion-detection", spec, TaskState.RUNNING, Desired.RUNNING,
                      status="2 input(s) running", error=TaskError("VIAS.00010004", "x"), created_at=1, updated_at=2)


def status() -> PipelineStatus:
    return PipelineStatus(task_id="a" * 32, service_name="intrusion-detection", state=TaskState.RUNNING,
                          status="1 input(s) running", inputs=(stream(0, StreamState.RUNNING),), runner=runner(),
                          frames_processed=7, events=3, submit_errors=0,
                          latency_buckets=((0.1, 5), (float("inf"), 7)), latency_sum=0.4, latency_count=7, worker=1)


def event() -> Event:
    frame = FrameInfo(input_index=0, pts=3600, stream_time=0.04, captured_at=1_764_000_000.5, width=320, height=240)
    return Event(event_type=196609, input_index=0, frame=frame,
                 event_set=({"bounding_box": {"x": 1, "y": 2, "w": 3, "h": 4}, "detection_id": 1},),
                 images={"image": b"\xff\xd8jpeg"}, item_images=({"crop": b"\xff\xd8crop"},))


MESSAGES: list[Any] = [
    StartTask(1, record()),
    StopTask(1),
    Reconnect(1, 0, "the camera moved"),
    Committed(5),
    Committed(6, error="OperationalError: database or disk is full"),
    Resolved(7, StreamTarget("rtsp://cam.local/main", transport="tcp", options={"stimeout": "5"})),
    Resolved(8, None, error="VCN login refused", retryable=False),
    Shutdown(),
    WorkerReady(4242),
    Started(1, status=status()),
    Started(2, error="cannot load algorithm x 1.0: no such algorithm is installed"),
    Stopped(1),
    StatusReport(1, status()),
    StreamsReport((SharedStreamStatus("stream-1a2b3c4d-0", "rtsp://***@cam.local/main", "pyav", 3, StreamState.RUNNING,
                                      "keyframes", 1.0),)),
    EventsBatch(5, 1, (event(), event())),
    ResolveRequest(7, 1, 0),
]


def test_every_message_kind_round_trips_through_a_pipe_unchanged() -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    try:
        for message in MESSAGES:
            ours.send(message)
            assert theirs.recv() == message
    finally:
        ours.close()
        theirs.close()
    kinds = {type(message) for message in MESSAGES}
    assert kinds == set(get_args(ToWorker)) | set(get_args(FromWorker))


def test_the_worker_config_round_trips() -> None:
    ours, theirs = multiprocessing.Pipe(duplex=True)
    config = WorkerConfig(1, StreamSettings(rtsp_transport="udp", stall_timeout_s=3.0), False, "DEBUG", "json", 1.0)
    try:
        ours.send(config)
        assert theirs.recv() == config
    finally:
        ours.close()
        theirs.close()
