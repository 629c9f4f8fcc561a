"""Three tasks on one camera: one RTSP connection, and the agent's CPU against the costliest task alone.

Each scenario is a fresh world: one loopback RTSP camera (``RtspFarm``: GStreamer serving the
capacity bench's clip — H.264 Main, 1280x720, 25 fps, 1 s GOP, ~2 Mbit/s — paced in real time, not
re-encoded), a real ``edge-agent run`` process (``python -m agent --config … run``, as a user runs it)
and a webhook receiver in a third process. Tasks are created through the REST API with their
algorithm's defaults (intrusion-detection 5 fps, video-quality-diagnosis 1 fps, face-detection 2 fps).
After every input is RUNNING and a warm-up, the agent's CPU (/proc/<pid>/stat, all its threads) is
read over a window while the camera's established TCP connections are counted from /proc/net/tcp
(the agent talks RTSP over TCP: one connection per client). The shared streams' decode mode and
decoded fps come from the agent's /metrics.

Scenarios: each algorithm alone, then all three on the one camera; ``--repeat`` runs the round again
(the median counts: other people's jobs share the box, and the CPU they used is recorded).

    .venv/bin/python bench/shared_camera.py --warmup 15 --window 40 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client.samples import Sample

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.agent_process import BenchAgent  # noqa: E402
from bench.capacity import CLIP, WebhookProcess, box_jiffies  # noqa: E402
from bench.clips import OUT, ensure  # noqa: E402
from bench.proctree import tree_cpu  # noqa: E402
from bench.rtsp_farm import RtspFarm  # noqa: E402
from tests.fixtures.rtsp import established_connections  # noqa: E402
from tests.waiting import wait_until  # noqa: E402

ALGORITHMS = ("intrusion-detection", "video-quality-diagnosis", "face-detection")
TARGET_RATIO = 1.3


@dataclass
class Result:
    scenario: str
    cpu_pct: float  # of one core, the agent's process tree (main + workers) over the window
    clients_min: int
    clients_max: int
    streams: int
    consumers: int
    decode_mode: str
    fps_decoded: float
    frames_processed: dict[str, float]  # per algorithm, over the window
    others_busy_pct: float  # of the whole box, not counting the agent


def task_body(service: str, url: str, webhook: str) -> dict[str, Any]:
    return {"name": service.replace("-", "_"), "input": {"type": "url", "data": [{"url": url, "index": 0}]},
            "output": {"webhook": {"url": webhook, "headers": {"Authorization": "Bearer shared-bench"}}},
            "config": {"common": {}}, "service_version": "1.0"}


def running(agent: BenchAgent, task_id: str) -> bool:
    inputs = agent.task(task_id)["inputs"]
    return bool(inputs) and all(entry["state"] == "RUNNING" for entry in inputs)


def frames_processed(samples: list[Sample]) -> dict[str, float]:
    return {sample.labels["service_name"]: sample.value for sample in samples
            if sample.name == "edge_agent_task_frames_processed_total"}


def run(scenario: tuple[str, ...], clip: Path, receiver: WebhookProcess, warmup: float, window: float) -> Result:
    farm = RtspFarm(clip, mounts=1, processes=1)
    farm.start()
    url = farm.urls()[0]
    port = urlsplit(url).port or 554
    try:
        with BenchAgent('[log]\nlevel = "WARNING"\n') as agent:
            ids = [agent.create(service, task_body(service, url, receiver.url)) for service in scenario]
            wait_until(lambda: all(running(agent, task_id) for task_id in ids), 60, "every input RUNNING",
                       interval=0.5)
            time.sleep(warmup)
            clients: list[int] = []
            stop = threading.Event()

            def count() -> None:
                while not stop.wait(0.5):
                    clients.append(established_connections(port))

            counter = threading.Thread(target=count, daemon=True)
            before = frames_processed(agent.metrics())
            busy0, total0 = box_jiffies()
            cpu0, t0 = tree_cpu(agent.pid), time.monotonic()
            counter.start()
            time.sleep(window)
            cpu1, t1 = tree_cpu(agent.pid), time.monotonic()
            busy1, total1 = box_jiffies()
            stop.set()
            counter.join()
            samples = agent.metrics()
    finally:
        farm.stop()
    after = frames_processed(samples)
    consumers = [sample.value for sample in samples if sample.name == "edge_agent_stream_consumers"]
    fps = [sample.value for sample in samples if sample.name == "edge_agent_stream_fps_decoded"]
    modes = [sample.labels["mode"] for sample in samples
             if sample.name == "edge_agent_stream_decode_mode" and sample.value == 1.0]
    cpu = cpu1 - cpu0
    cores = os.cpu_count() or 1
    box_s = (total1 - total0) / cores / os.sysconf("SC_CLK_TCK")  # wall seconds the jiffies span
    others = max(0.0, (busy1 - busy0) / max(1, total1 - total0) * 100.0 - cpu / max(box_s, 1e-6) / cores * 100.0)
    return Result(
        scenario="+".join(scenario), cpu_pct=round(cpu / (t1 - t0) * 100.0, 1), clients_min=min(clients),
        clients_max=max(clients), streams=len(consumers), consumers=int(sum(consumers)),
        decode_mode=",".join(modes), fps_decoded=round(sum(fps), 1),
        frames_processed={k: after.get(k, 0.0) - before.get(k, 0.0) for k in after},
        others_busy_pct=round(others, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=40.0)
    parser.add_argument("--repeat", type=int, default=1, help="rounds of all scenarios (the median counts)")
    args = parser.parse_args()
    clip = ensure(CLIP)
    scenarios = [(name,) for name in ALGORITHMS] + [ALGORITHMS]
    receiver = WebhookProcess()
    results: list[Result] = []
    try:
        for round_ in range(args.repeat):
            for scenario in scenarios:
                result = run(scenario, clip, receiver, args.warmup, args.window)
                results.append(result)
                print(f"round {round_ + 1}: {json.dumps(asdict(result))}", flush=True)
    finally:
        receiver.stop()
    median = {"+".join(s): statistics.median(r.cpu_pct for r in results if r.scenario == "+".join(s))
              for s in scenarios}
    costliest = max(median[name] for name in ALGORITHMS)
    together = median["+".join(ALGORITHMS)]
    shared = [r for r in results if r.scenario == "+".join(ALGORITHMS)]
    print("\nscenario | agent CPU % of a core (median) | RTSP clients (min–max) | decode mode | decoded fps")
    for scenario in scenarios:
        name = "+".join(scenario)
        rows = [r for r in results if r.scenario == name]
        print(f"{name} | {median[name]:.1f} | {min(r.clients_min for r in rows)}–{max(r.clients_max for r in rows)}"
              f" | {rows[-1].decode_mode} | {rows[-1].fps_decoded}")
    ratio = together / costliest if costliest else float("inf")
    one_connection = all(r.clients_min == r.clients_max == 1 for r in shared)
    print(f"\nthree tasks: {ratio:.2f}x the costliest alone (target <= {TARGET_RATIO}x); "
          f"one RTSP connection: {one_connection}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "shared_camera.json").write_text(json.dumps(
        {"results": [asdict(r) for r in results], "ratio": ratio, "one_connection": one_connection}, indent=2))


if __name__ == "__main__":
    main()
