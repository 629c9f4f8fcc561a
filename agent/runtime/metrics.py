"""GET /metrics: a Prometheus collector that reads the running agent at scrape time.

No component holds a metric object: pipelines, streams, the runner and the outbox already keep their
counters (they need them for task status and diag), and the collector turns one snapshot of them into
metric families on a registry of its own. So a scrape costs nothing between scrapes, a retired task's
series simply disappear, and two agents in one process (tests) never share a global registry.

A part that fails to report (say, the outbox while it closes) is logged and left out of that scrape;
the other families are still served.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from agent import __version__
from agent.outputs.router import RouterStatus
from agent.redact import mask_text
from agent.runtime.pipeline import PipelineStatus
from agent.runtime.workers import WorkerInfo
from agent.sources.hub import SharedStreamStatus
from agent.sources.sampler import DecodeMode
from agent.sources.stream import StreamState
from agent.tasks.model import TaskState

log = logging.getLogger(__name__)

PREFIX = "edge_agent"
INPUT_LABELS = ("task_id", "input")
TASK_LABELS = ("task_id", "service_name")
STREAM_LABELS = ("stream", "source", "backend")  # stream: its name (unique); source: the camera, masked


@dataclass(frozen=True)
class MetricSources:
    """Where the collector reads from; every callable is called once per scrape."""

    node_id: str
    started_at: float  # epoch seconds
    healthy: Callable[[], bool]
    pipelines: Callable[[], Sequence[PipelineStatus]]
    router: Callable[[], RouterStatus]
    control_connected: Callable[[], bool | None]  # None: no [mqtt], no control channel
    workers: Callable[[], Sequence[WorkerInfo]] = field(default=lambda: ())  # the data-plane processes
    streams: Callable[[], Sequence[SharedStreamStatus]] = list  # the workers' open streams (one per camera)


def _buckets(cumulative: Iterable[tuple[float, int]]) -> list[tuple[str, float]]:
    """(upper bound, cumulative count) pairs in the exposition's spelling (``+Inf`` last)."""
    return [("+Inf" if bound == float("inf") else repr(float(bound)), float(count)) for bound, count in cumulative]


class AgentCollector(Collector):
    def __init__(self, sources: MetricSources) -> None:
        self._sources = sources

    def collect(self) -> Iterable[Metric]:
        yield from self._agent()
        for part in (self._pipelines, self._workers, self._streams, self._outbox):
            try:
                families = list(part())
            except Exception as exc:  # one failing part must not empty the whole scrape
                log.warning("metrics: %s left out of this scrape: %s", part.__name__.strip("_"),
                            mask_text(repr(exc)))
                continue
            yield from families

    # the agent as a whole --------------------------------------------------------------------------
    def _agent(self) -> Iterable[Metric]:
        sources = self._sources
        info = InfoMetricFamily(f"{PREFIX}_build", "Version and node id of this agent.",
                                labels=("version", "node_id"))
        info.add_metric((__version__, sources.node_id), {})
        yield info
        yield GaugeMetricFamily(f"{PREFIX}_start_time_seconds", "When the agent started (epoch seconds).",
                                value=sources.started_at)
        yield GaugeMetricFamily(f"{PREFIX}_uptime_seconds", "Seconds since the agent started.",
                                value=max(0.0, time.time() - sources.started_at))
        yield GaugeMetricFamily(f"{PREFIX}_healthy",
                                "1 while the supervisor loop and every task worker are turning (the watchdog's test).",
                                value=1.0 if sources.healthy() else 0.0)
        connected = GaugeMetricFamily(f"{PREFIX}_mqtt_connected",
                                      "1 while the MQTT connection is up; absent when no [mqtt] is configured.",
                                      labels=("channel",))
        control = sources.control_connected()
        if control is not None:
            connected.add_metric(("control",), 1.0 if control else 0.0)
        try:
            events = sources.router().mqtt_connected
        except Exception:  # the outbox part reports this failure; here only the gauge goes missing
            events = None
        if events is not None:
            connected.add_metric(("events",), 1.0 if events else 0.0)
        yield connected

    # tasks and their inputs --------------------------------------------------------------------------
    def _pipelines(self) -> Iterable[Metric]:
        pipelines = list(self._sources.pipelines())
        running = GaugeMetricFamily(f"{PREFIX}_tasks_running", "Tasks with a running pipeline.",
                                    value=len(pipelines))
        task_state = GaugeMetricFamily(f"{PREFIX}_task_state", "1 for the task's current state, 0 for the others.",
                                       labels=(*TASK_LABELS, "state"))
        events = CounterMetricFamily(f"{PREFIX}_task_events", "Events the task committed to the outbox.",
                                     labels=TASK_LABELS)
        frames = CounterMetricFamily(f"{PREFIX}_task_frames_processed",
                                     "Frames analysed and their events committed.", labels=TASK_LABELS)
        submit_errors = CounterMetricFamily(f"{PREFIX}_task_submit_errors",
                                            "Event batches that could not be committed (e.g. disk full).",
                                            labels=TASK_LABELS)
        failures = CounterMetricFamily(f"{PREFIX}_task_algorithm_failures",
                                       "Algorithm calls that raised or returned garbage.", labels=TASK_LABELS)
        slow = CounterMetricFamily(f"{PREFIX}_task_algorithm_slow_calls",
                                   "Algorithm calls longer than their budget.", labels=TASK_LABELS)
        algorithm_ok = GaugeMetricFamily(f"{PREFIX}_task_algorithm_healthy",
                                         "0 after repeated algorithm failures in a row.", labels=TASK_LABELS)
        algorithm_latency = HistogramMetricFamily(
            f"{PREFIX}_task_algorithm_latency_seconds", "Duration of one algorithm call.", labels=TASK_LABELS)
        commit_latency = HistogramMetricFamily(
            f"{PREFIX}_task_capture_to_commit_seconds",
            "Per analysed frame: from capture to its events committed to the outbox.", labels=TASK_LABELS)

        fps_in = GaugeMetricFamily(f"{PREFIX}_input_fps_in", "Source frames per second arriving (last 5 s).",
                                   labels=INPUT_LABELS)
        fps_out = GaugeMetricFamily(f"{PREFIX}_input_fps_out", "Sampled frames per second handed on (last 5 s).",
                                    labels=INPUT_LABELS)
        decoded = CounterMetricFamily(f"{PREFIX}_input_frames_decoded", "Frames decoded.", labels=INPUT_LABELS)
        sampled = CounterMetricFamily(f"{PREFIX}_input_frames_sampled", "Frames sampled for the algorithm.",
                                      labels=INPUT_LABELS)
        dropped = CounterMetricFamily(f"{PREFIX}_input_frames_dropped",
                                      "Sampled frames overwritten before the algorithm took them.",
                                      labels=INPUT_LABELS)
        decode_errors = CounterMetricFamily(f"{PREFIX}_input_decode_errors", "Packets that could not be decoded.",
                                            labels=INPUT_LABELS)
        reconnects = CounterMetricFamily(f"{PREFIX}_input_reconnects", "Reconnections after a failure or a stall.",
                                         labels=INPUT_LABELS)
        stalls = CounterMetricFamily(f"{PREFIX}_input_stalls", "Times the source sent nothing for too long.",
                                     labels=INPUT_LABELS)
        task_worker = GaugeMetricFamily(f"{PREFIX}_task_worker", "1 for the worker process running the task.",
                                        labels=("task_id", "worker"))
        keyframe_only = GaugeMetricFamily(f"{PREFIX}_input_keyframe_only",
                                          "1 while only keyframes are decoded (wanted fps ≤ keyframe rate).",
                                          labels=INPUT_LABELS)
        input_state = GaugeMetricFamily(f"{PREFIX}_input_state", "1 for the stream's current state, 0 for the others.",
                                        labels=(*INPUT_LABELS, "state"))

        for status in pipelines:
            task = (status.task_id, status.service_name)
            for state in TaskState:
                task_state.add_metric((*task, state.value), 1.0 if state is status.state else 0.0)
            events.add_metric(task, status.events)
            frames.add_metric(task, status.frames_processed)
            submit_errors.add_metric(task, status.submit_errors)
            runner = status.runner
            failures.add_metric(task, runner.failures)
            slow.add_metric(task, runner.slow_calls)
            algorithm_ok.add_metric(task, 1.0 if runner.healthy else 0.0)
            algorithm_latency.add_metric(task, _buckets(runner.latency_buckets), runner.latency_sum)
            commit_latency.add_metric(task, _buckets(status.latency_buckets), status.latency_sum)
            if status.worker is not None:
                task_worker.add_metric((status.task_id, str(status.worker)), 1.0)
            for stream in status.inputs:
                labels = (status.task_id, str(stream.input_index))
                fps_in.add_metric(labels, stream.fps_in)
                fps_out.add_metric(labels, stream.fps_out)
                decoded.add_metric(labels, stream.frames_decoded)
                sampled.add_metric(labels, stream.frames_sampled)
                dropped.add_metric(labels, stream.dropped)
                decode_errors.add_metric(labels, stream.decode_errors)
                reconnects.add_metric(labels, stream.reconnects)
                stalls.add_metric(labels, stream.stalls)
                keyframe_only.add_metric(labels, 1.0 if stream.keyframe_only else 0.0)
                for stream_state in StreamState:
                    input_state.add_metric((*labels, stream_state.value),
                                           1.0 if stream_state is stream.state else 0.0)
        yield from (running, task_state, events, frames, submit_errors, failures, slow, algorithm_ok,
                    algorithm_latency, commit_latency, task_worker, fps_in, fps_out, decoded, sampled, dropped,
                    decode_errors, reconnects, stalls, keyframe_only, input_state)

    # the data-plane worker processes ----------------------------------------------------------------
    def _workers(self) -> Iterable[Metric]:
        labels = ("worker",)
        up = GaugeMetricFamily(f"{PREFIX}_worker_up", "1 while the worker process is alive.", labels=labels)
        cpu = CounterMetricFamily(f"{PREFIX}_worker_cpu_seconds", "CPU time (user + system) of the worker process.",
                                  labels=labels)
        rss = GaugeMetricFamily(f"{PREFIX}_worker_resident_memory_bytes", "Resident memory of the worker process.",
                                labels=labels)
        tasks = GaugeMetricFamily(f"{PREFIX}_worker_tasks", "Tasks running on the worker.", labels=labels)
        restarts = CounterMetricFamily(f"{PREFIX}_worker_restarts", "Replacements started after the worker died.",
                                       labels=labels)
        backoff = GaugeMetricFamily(f"{PREFIX}_worker_restart_backoff_seconds",
                                    "Seconds until the replacement of a worker that keeps dying soon after it "
                                    "starts is started; 0 when the slot is not waiting.", labels=labels)
        for worker in self._sources.workers():
            label = (str(worker.index),)
            up.add_metric(label, 1.0 if worker.alive else 0.0)
            tasks.add_metric(label, len(worker.tasks))
            restarts.add_metric(label, worker.restarts)
            backoff.add_metric(label, worker.restart_in or 0.0)
            if worker.cpu_seconds is not None:
                cpu.add_metric(label, worker.cpu_seconds)
            if worker.rss_bytes is not None:
                rss.add_metric(label, worker.rss_bytes)
        yield from (up, cpu, rss, tasks, restarts, backoff)

    # the open streams, each decoded once for all its consumers ---------------------------------------
    def _streams(self) -> Iterable[Metric]:
        streams = list(self._sources.streams())
        open_ = GaugeMetricFamily(f"{PREFIX}_streams_open", "Source connections open (one per camera, shared by "
                                  "every task input that names it; files are never shared).", value=len(streams))
        consumers = GaugeMetricFamily(f"{PREFIX}_stream_consumers", "Task inputs served by this connection.",
                                      labels=STREAM_LABELS)
        fps_decoded = GaugeMetricFamily(f"{PREFIX}_stream_fps_decoded", "Frames decoded per second (last 5 s).",
                                        labels=STREAM_LABELS)
        mode = GaugeMetricFamily(f"{PREFIX}_stream_decode_mode",
                                 "1 for the decoder's current mode (the cheapest that serves every consumer).",
                                 labels=(*STREAM_LABELS, "mode"))
        for stream in streams:
            labels = (stream.name, stream.source, stream.backend)
            consumers.add_metric(labels, stream.consumers)
            fps_decoded.add_metric(labels, stream.fps_decoded)
            for decode_mode in DecodeMode:
                mode.add_metric((*labels, decode_mode.value), 1.0 if decode_mode.value == stream.decode_mode else 0.0)
        yield from (open_, consumers, fps_decoded, mode)

    # the outbox and its sinks ---------------------------------------------------------------------------
    def _outbox(self) -> Iterable[Metric]:
        router = self._sources.router()
        backlog = GaugeMetricFamily(f"{PREFIX}_outbox_backlog", "Events waiting for delivery (outbox depth).",
                                    labels=("sink",))
        oldest = GaugeMetricFamily(f"{PREFIX}_outbox_oldest_undelivered_age_seconds",
                                   "Age of the oldest undelivered event; 0 when nothing waits.", labels=("sink",))
        delivered = CounterMetricFamily(f"{PREFIX}_outbox_delivered", "Events delivered.", labels=("sink",))
        failed = CounterMetricFamily(f"{PREFIX}_outbox_failed", "Failed delivery attempts (each retry counts).",
                                     labels=("sink",))
        dead = CounterMetricFamily(f"{PREFIX}_outbox_dead_letters", "Events given up on (see /v2/…/dead-letters).",
                                   labels=("sink",))
        pruned = CounterMetricFamily(f"{PREFIX}_outbox_dead_letters_pruned",
                                     "Oldest dead letters removed to keep their table within its share of the cap.",
                                     labels=("sink",))
        dropped = CounterMetricFamily(f"{PREFIX}_outbox_dropped", "Oldest events dropped at the outbox size cap.",
                                      labels=("sink",))
        for sink in router.sinks:
            labels = (sink.sink,)
            backlog.add_metric(labels, sink.backlog)
            oldest.add_metric(labels, sink.oldest_undelivered_age_s or 0.0)
            delivered.add_metric(labels, sink.delivered)
            failed.add_metric(labels, sink.failed)
            dead.add_metric(labels, sink.dead_letters)
            pruned.add_metric(labels, sink.dead_letters_pruned)
            dropped.add_metric(labels, sink.dropped_at_cap)
        yield from (backlog, oldest, delivered, failed, dead, pruned, dropped)
        yield GaugeMetricFamily(f"{PREFIX}_outbox_stored_bytes", "Bytes the undelivered events take.",
                                value=router.stored_bytes)
        yield GaugeMetricFamily(f"{PREFIX}_outbox_max_bytes", "The outbox size cap (outbox.max_bytes).",
                                value=router.max_bytes)


class MetricsEndpoint:
    """The registry behind GET /metrics; ``render`` is the hook ``create_app(metrics=...)`` takes."""

    def __init__(self, sources: MetricSources) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(sources))
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds: what capacity planning reads
        ProcessCollector(registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
