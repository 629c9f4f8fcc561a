"""The messages between the main process and a data-plane worker process, over one duplex Pipe.

Every message is a frozen dataclass pickled by ``multiprocessing.connection``. The main process sends
commands (start, stop, reconnect an input, shut down) and answers (an events batch committed, an input
resolved); a worker sends reports (ready, a task started or stopped, a pipeline's status, an events
batch, a request to resolve an input). A task's messages carry the ``run_id`` the main process gave
that run of the task, so a late message from a stopped run can never be taken for its successor's.

Worker CPU and memory are not reported here: the main process reads them from /proc, which still
works when a worker is stuck.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.algorithms.event import Event
from agent.runtime.pipeline import PipelineStatus
from agent.settings import StreamSettings
from agent.sources.hub import SharedStreamStatus
from agent.sources.target import StreamTarget
from agent.tasks.store import TaskRecord


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process is started with (pickled into the new process)."""

    index: int  # the worker's slot, 0 … workers-1; a replacement after a crash keeps the slot
    stream: StreamSettings
    realtime_files: bool
    log_level: str
    log_format: str
    report_interval_s: float
    models_roots: tuple[Path, ...] = ()  # where object-detection models may be loaded from


# main → worker -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StartTask:
    run_id: int
    record: TaskRecord


@dataclass(frozen=True)
class StopTask:
    run_id: int


@dataclass(frozen=True)
class Reconnect:
    """The input's URL changed (an edgecamera moved): reconnect it, resolving again."""

    run_id: int
    input_index: int
    reason: str  # masked


@dataclass(frozen=True)
class Committed:
    """The answer to an EventsBatch: committed to the outbox, or not (``error``, masked)."""

    batch_id: int
    error: str | None = None


@dataclass(frozen=True)
class Resolved:
    """The answer to a ResolveRequest: a target, or the resolver's (masked) error."""

    request_id: int
    target: StreamTarget | None
    error: str | None = None
    retryable: bool = True


@dataclass(frozen=True)
class Shutdown:
    """Stop every pipeline (committing what they hold) and exit."""


# worker → main -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerReady:
    pid: int


@dataclass(frozen=True)
class Started:
    """A StartTask's outcome: running with its first ``status``, or ``error`` (user-facing, masked) when it
    cannot run at all."""

    run_id: int
    error: str | None = None
    status: PipelineStatus | None = None


@dataclass(frozen=True)
class Stopped:
    """The run stopped: its last events batch was answered before this was sent."""

    run_id: int


@dataclass(frozen=True)
class StatusReport:
    run_id: int
    status: PipelineStatus


@dataclass(frozen=True)
class StreamsReport:
    """The worker's open streams (each decoded once for every task input on it), sent with status reports."""

    streams: tuple[SharedStreamStatus, ...]


@dataclass(frozen=True)
class EventsBatch:
    """One commit of a pipeline: its Events, images already encoded. The pipeline waits for Committed."""

    batch_id: int
    run_id: int
    events: tuple[Event, ...]


@dataclass(frozen=True)
class ResolveRequest:
    request_id: int
    run_id: int
    input_index: int


ToWorker = StartTask | StopTask | Reconnect | Committed | Resolved | Shutdown
FromWorker = WorkerReady | Started | Stopped | StatusReport | StreamsReport | EventsBatch | ResolveRequest
