"""GET /metrics scraped from a real agent: files decoded by PyAV, the intrusion algorithm, the outbox, a
real webhook receiver, a dead webhook port, and the real broker for the MQTT gauges."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.outputs.router import RouterStatus
from agent.runtime.app import AgentRuntime
from agent.runtime.metrics import MetricsEndpoint, MetricSources
from agent.settings import AgentSettings
from tests.fixtures.mosquitto import Broker
from tests.fixtures.ports import free_port
from tests.fixtures.webhook import WebhookReceiver
from tests.runtime.scenes import intrusion_clip, intrusion_task
from tests.waiting import wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(runtime: AgentRuntime) -> tuple[Samples, str]:
    response = httpx.get(f"http://127.0.0.1:{runtime.settings.api.port}/metrics", timeout=10)
    assert response.status_code == 200
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples, response.headers["content-type"]


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))



@pytest.fixture
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("media")
    intrusion_clip(directory / "walk.mp4", seconds=14.0)  # still playing while the test looks
    return directory


def make_runtime(tmp_path: Path, media: Path, **settings: Any) -> AgentRuntime:
    config = AgentSettings(node_id="metrics-test", state_dir=tmp_path / "state", media_roots=[media],
                           api={"listen": f"127.0.0.1:{free_port()}", "token": "t0k3n-metrics"}, **settings)
    return AgentRuntime(config, realtime_files=True)


@pytest.mark.integration
def test_metrics_follow_inputs_tasks_and_sinks_of_a_running_agent(
        tmp_path: Path, media: Path, webhook_receiver: WebhookReceiver, runtimes: list[AgentRuntime]) -> None:
    runtime = make_runtime(tmp_path, media)
    runtimes.append(runtime)
    runtime.start()
    clip = str(media / "walk.mp4")
    good = runtime.service.create("p", "intrusion-detection", intrusion_task(clip, webhook_receiver.url))
    dead_url = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: every attempt fails
    dead = runtime.service.create("p", "intrusion-detection", intrusion_task(clip, dead_url, name="dead-sink"))

    def running(samples: Samples) -> bool:
        return all(value(samples, "edge_agent_input_state", task_id=t, input="0", state="running") == 1.0
                   for t in (good, dead))

    def both_running() -> tuple[Samples, str] | None:
        scraped = scrape(runtime)
        return scraped if running(scraped[0]) else None

    samples, content_type = wait_until(both_running, what="both inputs running")
    assert content_type.startswith("text/plain")
    assert value(samples, "edge_agent_tasks_running") == 2.0
    assert value(samples, "edge_agent_healthy") == 1.0
    assert value(samples, "edge_agent_build_info", version=__import__("agent").__version__,
                 node_id="metrics-test") == 1.0
    assert value(samples, "edge_agent_input_keyframe_only", task_id=good, input="0") == 0.0  # 5 fps of 25
    assert value(samples, "edge_agent_task_state", task_id=good, service_name="intrusion-detection",
                 state="RUNNING") == 1.0
    assert not [key for key in samples if key[0] == "edge_agent_mqtt_connected"]  # no [mqtt]

    webhook_receiver.wait_for(1, timeout=40)

    def settled() -> Samples | None:
        current, _ = scrape(runtime)
        delivered = value(current, "edge_agent_outbox_delivered_total", sink="webhook") or 0
        failed = value(current, "edge_agent_outbox_failed_total", sink="webhook") or 0
        return current if delivered >= 1 and failed >= 1 else None

    samples = wait_until(settled, what="one delivered and one failed webhook attempt")
    task = {"task_id": good, "service_name": "intrusion-detection"}
    decoded = value(samples, "edge_agent_input_frames_decoded_total", task_id=good, input="0")
    sampled = value(samples, "edge_agent_input_frames_sampled_total", task_id=good, input="0")
    assert decoded is not None and sampled is not None and 0 < sampled < decoded
    assert (value(samples, "edge_agent_input_fps_in", task_id=good, input="0") or 0) > 5  # a 25 fps file
    assert value(samples, "edge_agent_input_decode_errors_total", task_id=good, input="0") == 0
    assert value(samples, "edge_agent_input_reconnects_total", task_id=good, input="0") == 0
    events = value(samples, "edge_agent_task_events_total", **task)
    assert events is not None and events >= 1
    processed = value(samples, "edge_agent_task_frames_processed_total", **task)
    assert processed is not None and processed > 0
    # histograms: cumulative buckets ending in +Inf = _count; the per-frame one counts every processed frame
    for name in ("edge_agent_task_algorithm_latency_seconds", "edge_agent_task_capture_to_commit_seconds"):
        buckets = sorted(((float(dict(labels)["le"]), v) for (n, labels), v in samples.items()
                          if n == f"{name}_bucket" and dict(labels)["task_id"] == good))
        counts = [v for _, v in buckets]
        assert buckets[-1][0] == float("inf") and counts == sorted(counts)
        assert counts[-1] == value(samples, f"{name}_count", **task) and counts[-1] > 0
        assert (value(samples, f"{name}_sum", **task) or 0) > 0
    commit_count = value(samples, "edge_agent_task_capture_to_commit_seconds_count", **task)
    assert commit_count is not None and commit_count <= processed
    # the dead sink: events wait, the oldest one ages, attempts fail
    assert (value(samples, "edge_agent_outbox_backlog", sink="webhook") or 0) >= 1
    assert (value(samples, "edge_agent_outbox_oldest_undelivered_age_seconds", sink="webhook") or 0) > 0
    assert value(samples, "edge_agent_outbox_dead_letters_total", sink="webhook") == 0
    assert value(samples, "edge_agent_outbox_backlog", sink="mqtt") == 0
    assert (value(samples, "edge_agent_outbox_stored_bytes") or 0) > 0
    assert dead in {dict(labels).get("task_id") for (_, labels) in samples}
    # two tasks on one file: two streams (each task plays its file from the start), one consumer each
    assert value(samples, "edge_agent_streams_open") == 2.0
    streams = {dict(labels)["stream"]: v for (n, labels), v in samples.items() if n == "edge_agent_stream_consumers"}
    assert sorted(streams.values()) == [1.0, 1.0]
    modes = [dict(labels) for (n, labels), v in samples.items() if n == "edge_agent_stream_decode_mode" and v == 1.0]
    assert sorted(m["mode"] for m in modes) == ["sampled", "sampled"]  # 5 fps of a 25 fps file
    assert all(m["source"] == "file:walk.mp4" and m["backend"] == "pyav" for m in modes)

    # a finished task's series go away with its pipeline
    runtime.service.delete("p", dead)
    wait_until(lambda: value(scrape(runtime)[0], "edge_agent_tasks_running") == 1.0, what="one task left")
    remaining = scrape(runtime)[0]
    assert dead not in {dict(labels).get("task_id") for (_, labels) in remaining}


@pytest.mark.integration
def test_mqtt_connected_gauges_follow_the_broker(tmp_path: Path, media: Path, private_mosquitto: Broker,
                                                 runtimes: list[AgentRuntime]) -> None:
    runtime = make_runtime(tmp_path, media, mqtt={"host": private_mosquitto.host, "port": private_mosquitto.port})
    runtimes.append(runtime)
    runtime.start()
    connected = {"channel": "control"}, {"channel": "events"}
    wait_until(lambda: all(value(scrape(runtime)[0], "edge_agent_mqtt_connected", **c) == 1.0 for c in connected),
               what="both MQTT connections up")
    private_mosquitto.stop()
    wait_until(lambda: all(value(scrape(runtime)[0], "edge_agent_mqtt_connected", **c) == 0.0 for c in connected),
               what="both MQTT connections down")


def test_a_failing_part_leaves_the_rest_of_the_scrape() -> None:
    def broken_router() -> RouterStatus:
        raise RuntimeError("outbox closed")

    endpoint = MetricsEndpoint(MetricSources(node_id="n", started_at=time.time() - 5, healthy=lambda: False,
                                             pipelines=list, router=broken_router, control_connected=lambda: True))
    payload, content_type = endpoint.render()
    text = payload.decode()
    assert "text/plain" in content_type
    assert "edge_agent_healthy 0.0" in text
    assert 'edge_agent_mqtt_connected{channel="control"} 1.0' in text
    assert "edge_agent_tasks_running 0.0" in text
    assert "edge_agent_outbox_backlog" not in text  # left out, not faked
