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
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.capacity import OUT, WebhookProcess, box_jiffies, ensure_clip  # noqa: E402
from bench.proctree import tree_cpu  # noqa: E402
from bench.rtsp_farm import RtspFarm  # noqa: E402
from tests.fixtures.ports import free_port  # noqa: E402
from tests.fixtures.rtsp import established_connections  # noqa: E402

TOKEN = "shared-camera-bench"
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


class Agent:
    """A real ``edge-agent run`` with a temp state dir and its REST API on a free port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        config = directory / "agent.toml"
        config.write_text(f'node_id = "shared-bench"\nstate_dir = "{directory / "state"}"\n'
                          f'[api]\nlisten = "127.0.0.1:{self.port}"\ntoken = "{TOKEN}"\n[log]\nlevel = "WARNING"\n')
        self._log = (directory / "agent.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen([sys.executable, "-m", "agent", "--config", str(config), "run"],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers={"X-Auth-Token": TOKEN},
                                   timeout=10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"edge-agent exited with {self.process.returncode}; see {self._log.name}")
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("edge-agent did not come up")

    def create(self, service: str, url: str, webhook: str) -> str:
        body = {"name": service.replace("-", "_"), "input": {"type": "url", "data": [{"url": url, "index": 0}]},
                "output": {"webhook": {"url": webhook, "headers": {"Authorization": "Bearer shared-bench"}}},
                "config": {"common": {}}, "service_version": "1.0"}
        response = self.client.post(f"/v2/p1/services/{service}/tasks", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"creating a {service} task: {response.status_code} {response.text}")
        task_id: str = response.json()["tasks"][0]["id"]
        return task_id

    def running(self, task_id: str) -> bool:
        view = self.client.get(f"/v2/p1/tasks/{task_id}").json()
        return bool(view["inputs"]) and all(entry["state"] == "RUNNING" for entry in view["inputs"])

    def metrics(self) -> list[tuple[str, dict[str, str], float]]:
        text = self.client.get("/metrics").text
        return [(sample.name, sample.labels, sample.value)
                for family in text_string_to_metric_families(text) for sample in family.samples]

    def stop(self) -> None:
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self._log.close()


def frames_processed(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, float]:
    return {labels["service_name"]: value for name, labels, value in samples
            if name == "edge_agent_task_frames_processed_total"}


def run(scenario: tuple[str, ...], clip: Path, receiver: WebhookProcess, warmup: float, window: float) -> Result:
    farm = RtspFarm(clip, mounts=1, processes=1)
    farm.start()
    url = farm.urls()[0]
    port = urlsplit(url).port or 554
    with tempfile.TemporaryDirectory(prefix="shared-camera-") as directory:
        agent = Agent(Path(directory))
        try:
            ids = [agent.create(service, url, receiver.url) for service in scenario]
            deadline = time.monotonic() + 60
            while not all(agent.running(task_id) for task_id in ids):
                if time.monotonic() > deadline:
                    raise TimeoutError("inputs did not all reach RUNNING")
                time.sleep(0.5)
            time.sleep(warmup)
            clients: list[int] = []
            stop = threading.Event()

            def count() -> None:
                while not stop.wait(0.5):
                    clients.append(established_connections(port))

            counter = threading.Thread(target=count, daemon=True)
            before = frames_processed(agent.metrics())
            busy0, total0 = box_jiffies()
            cpu0, t0 = tree_cpu(agent.process.pid), time.monotonic()
            counter.start()
            time.sleep(window)
            cpu1, t1 = tree_cpu(agent.process.pid), time.monotonic()
            busy1, total1 = box_jiffies()
            stop.set()
            counter.join()
            samples = agent.metrics()
        finally:
            agent.stop()
            farm.stop()
    after = frames_processed(samples)
    consumers = [v for name, _, v in samples if name == "edge_agent_stream_consumers"]
    fps = [v for name, _, v in samples if name == "edge_agent_stream_fps_decoded"]
    modes = [labels["mode"] for name, labels, v in samples if name == "edge_agent_stream_decode_mode" and v == 1.0]
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
    clip = ensure_clip()
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
