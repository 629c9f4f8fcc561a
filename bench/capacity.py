"""Capacity: how many 720p25 RTSP cameras one box analyses without falling behind, at 1 and at 5 fps.

For each target fps the bench steps the number of streams up (``--start``, ``--step``) until a step
fails, then bisects between the last pass and the first failure down to ``--resolution`` streams.
Every step is a fresh world:

- ``RtspFarm`` (bench/rtsp_farm.py): GStreamer RTSP servers (Debian's /usr/bin/python3) serving one
  generated mp4 — H.264 Main, 1280x720, 25 fps, 1 s GOP, no B-frames, ~2 Mbit/s — on N mount points,
  not re-encoded, paced in real time, one pipeline per client;
- the agent as a user runs it: ``python -m agent --config … run`` of this tree's code (PYTHONPATH), a
  temp state dir, ``[runtime] workers`` from ``--workers``; tasks created through its REST API, one per
  camera, the algorithms split (even cameras ``intrusion-detection``, odd ``video-quality-diagnosis``,
  ``config.common.fps`` = the target), a webhook output to a real receiver in another process; no MQTT
  (event_center off). Every figure — frames processed, the capture → commit histogram, input states,
  the agent's CPU and RSS (main process + every worker) — is read from its ``/metrics``;
- the task creations are spread over one GOP so that the cameras' keyframes are not all in phase.

After all inputs run, a warm-up, then a measurement window between two snapshots. A step passes when
the sampled frames processed are >= 99% of those due (window x fps x N), the p99 of the pipelines'
capture -> commit latency histogram (delta over the window) is < 500 ms and every input is RUNNING.

``--workers 1 2`` searches each value in turn (same session, same box); ``--agents K`` deals the
cameras over K agent processes. Other people's jobs share the box: ``--quiet-pct`` waits for a calmer
box before each step, and every step records the CPU the others used. Figures and conclusions:
docs/benchmarks.md, "Capacity: cameras per box".

    .venv/bin/python bench/capacity.py --fps 1 --start 16 --step 16
    .venv/bin/python bench/capacity.py --fps 5 --start 8 --step 4 --workers 1 2
    .venv/bin/python bench/capacity.py --fps 5 --streams 20        # one point only
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client.samples import Sample

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.agent_process import BenchAgent  # noqa: E402
from bench.clips import OUT, Clip, ensure  # noqa: E402
from bench.rtsp_farm import RtspFarm, proc_cpu_seconds  # noqa: E402
from tests.fixtures.ports import free_port  # noqa: E402

# like an IP camera's main stream: 1 s GOP, no B-frames, Main profile, ~2 Mbit/s, sensor noise; longer than
# start-up + warm-up + window: a clip's end would be a reconnect
CLIP = Clip(1280, 720, seconds=180, gop=25, bitrate="2M", profile="main", maxrate="2M", noise=5)
TARGETS = {1.0: 48, 5.0: 20}
MIN_RATIO = 0.99
MAX_P99_S = 0.5
ALGORITHMS = ("intrusion-detection", "video-quality-diagnosis")

RECEIVER = """
import sys
sys.path.insert(0, {repo!r})
from tests.fixtures.webhook import WebhookReceiver
receiver = WebhookReceiver({port})
receiver.start()
print("ready", flush=True)
sys.stdin.read()
"""


# --- the agent ----------------------------------------------------------------------------------------
def task_body(index: int, url: str, fps: float, webhook: str) -> tuple[str, dict[str, Any]]:
    service = ALGORITHMS[index % 2]
    return service, {
        "name": f"cam{index}",
        "input": {"type": "url", "data": [{"url": url, "index": 0}]},
        "output": {"webhook": {"url": webhook, "headers": {"Authorization": "Bearer capacity-bench"}}},
        "config": {"common": {"fps": fps}},
        "service_version": "1.0",
    }


def start_agent(urls: list[str], fps: float, webhook: str, workers: str, log: Path) -> BenchAgent:
    """A real ``edge-agent run`` with one task per camera URL, created through its REST API."""
    workers_toml = f'"{workers}"' if workers == "auto" else workers
    agent = BenchAgent(f"[limits]\nmax_tasks = {len(urls) + 1}\nmax_inputs = {len(urls) + 1}\n"
                       f'[log]\nlevel = "WARNING"\n[runtime]\nworkers = {workers_toml}\n', log=log, up_within=120)
    try:
        spread = 1.0 / max(1, len(urls))  # one GOP (1 s) over all cameras: keyframes out of phase
        for index, url in enumerate(urls):
            agent.create(*task_body(index, url, fps, webhook))
            time.sleep(spread)
    except BaseException:
        agent.stop()
        raise
    return agent


def scrape(agent: BenchAgent) -> dict[str, Any]:
    """One scrape of /metrics as the figures summarise() reads: per task and input, CPU and RSS."""
    return {"t": time.monotonic(), **parse_metrics(agent.metrics())}


_TASK_COUNTERS = {"edge_agent_task_frames_processed_total": "frames_processed",
                  "edge_agent_task_events_total": "events"}
_HISTOGRAMS = {"edge_agent_task_capture_to_commit_seconds": "latency",
               "edge_agent_task_algorithm_latency_seconds": "algorithm"}
_INPUT_VALUES = {"edge_agent_input_fps_in": "fps_in", "edge_agent_input_fps_out": "fps_out",
                 "edge_agent_input_frames_decoded_total": "frames_decoded",
                 "edge_agent_input_frames_sampled_total": "frames_sampled",
                 "edge_agent_input_frames_dropped_total": "dropped", "edge_agent_input_reconnects_total": "reconnects",
                 "edge_agent_input_keyframe_only": "keyframe_only"}
# the agent's CPU and memory: the main process plus every worker (the forkserver the workers fork from idles)
_CPU = ("process_cpu_seconds_total", "edge_agent_worker_cpu_seconds_total")
_RSS = ("process_resident_memory_bytes", "edge_agent_worker_resident_memory_bytes")


def parse_metrics(samples: list[Sample]) -> dict[str, Any]:
    tasks: dict[str, dict[str, Any]] = {}
    cpu = rss = 0.0

    def task(task_id: str) -> dict[str, Any]:
        return tasks.setdefault(task_id, {
            "task_id": task_id, "service": "", "frames_processed": 0, "events": 0, "inputs": {},
            "latency_buckets": [], "latency_sum": 0.0, "latency_count": 0,
            "algorithm_buckets": [], "algorithm_sum": 0.0, "algorithm_count": 0})

    for sample in samples:
        name, labels, value = sample.name, sample.labels, sample.value
        if name in _CPU:
            cpu += value
        elif name in _RSS:
            rss += value
        task_id = labels.get("task_id")
        if task_id is None:
            continue
        if "input" in labels:
            entry = task(task_id)["inputs"].setdefault(int(labels["input"]), {"state": "?"})
            if name == "edge_agent_input_state" and value == 1.0:
                entry["state"] = labels["state"].upper()
            elif name in _INPUT_VALUES:
                entry[_INPUT_VALUES[name]] = value if "fps" in name else int(value)
            continue
        if name in _TASK_COUNTERS:
            task(task_id)[_TASK_COUNTERS[name]] = int(value)
            task(task_id)["service"] = labels.get("service_name", "")
        for base, key in _HISTOGRAMS.items():
            if name == f"{base}_bucket":
                task(task_id)[f"{key}_buckets"].append([float(labels["le"]), int(value)])
            elif name == f"{base}_sum":
                task(task_id)[f"{key}_sum"] = value
            elif name == f"{base}_count":
                task(task_id)[f"{key}_count"] = int(value)
    pipelines = []
    for entry in tasks.values():
        entry["inputs"] = [entry["inputs"][index] for index in sorted(entry["inputs"])]
        for key in ("latency_buckets", "algorithm_buckets"):
            entry[key].sort()
        pipelines.append(entry)
    return {"pipelines": pipelines, "cpu_seconds": cpu, "rss_bytes": rss}


class WebhookProcess:
    def __init__(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-c", RECEIVER.format(repo=str(REPO), port=self.port)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.process.stdout.readline()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


# --- measuring -----------------------------------------------------------------------------------------
def box_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # without guest time, already counted in user
    return total - idle, total


def wait_quiet(max_busy_pct: float, timeout: float) -> float:
    """Wait (up to ``timeout`` s) until the box's CPU use over 5 s is below ``max_busy_pct`` % of all cores.

    Other people's jobs share the box: a step started in the middle of someone's test run measures them.
    Returns the last 5 s busy share seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        busy0, total0 = box_jiffies()
        time.sleep(5)
        busy1, total1 = box_jiffies()
        busy = (busy1 - busy0) / max(1, total1 - total0) * 100.0
        if busy <= max_busy_pct or time.monotonic() >= deadline:
            return busy
        print(f"# box busy {busy:.0f}% (load {loadavg():.1f}): waiting for it to calm down", flush=True)


def loadavg() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def quantile(buckets: list[tuple[float, int]], q: float) -> float:
    """Linear interpolation inside the bucket that holds quantile ``q`` (cumulative Prometheus buckets)."""
    total = buckets[-1][1]
    if total == 0:
        return 0.0
    rank = q * total
    lower_bound, lower_count = 0.0, 0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound  # beyond the last bound: report the last finite bound (a lower limit)
            width = count - lower_count
            return lower_bound + (bound - lower_bound) * ((rank - lower_count) / width if width else 1.0)
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass
class StepResult:
    fps: float
    streams: int
    workers: str  # [runtime] workers of each agent process
    window_s: float
    due: int
    processed: int
    ratio: float
    worst_stream_ratio: float
    p99_s: float
    p99_bucket_ok: bool  # cumulative count at the 0.5 s bound >= 99 %
    mean_latency_s: float
    running: int
    keyframe_only: int
    fps_in_mean: float
    dropped: int
    reconnects: int
    events: int
    agent_cpu_pct: float  # % of one core
    agent_cpu_pct_per_stream: float
    agent_rss_mib: float
    servers_cpu_pct: float
    receiver_cpu_pct: float
    box_busy_pct: float  # of both cores, everything on the box
    others_pct: float  # box busy minus agent, servers, receiver (other users of the box), of both cores
    load_before: float
    load_after: float
    passed: bool
    algorithm_p99_s: float = 0.0  # the algorithm call alone (AlgorithmRunner's histogram), wall time
    algorithm_mean_s: float = 0.0
    agents: int = 1  # agent processes the cameras were dealt over
    at: str = ""  # UTC time at the end of the step
    code: str = ""  # git HEAD when the step ran (+dirty: agent/ had uncommitted changes); others commit meanwhile


def measure(fps: float, streams: int, clip: Path, receiver: WebhookProcess, *, warmup: float, window: float,
            servers: int, workers: str, quiet_pct: float = 100.0, quiet_wait: float = 0.0,
            agents: int = 1) -> StepResult:
    """One step; with ``agents`` > 1 the cameras are dealt over that many agent processes."""
    if quiet_pct < 100:
        wait_quiet(quiet_pct, quiet_wait)
    code = code_version()
    farm = RtspFarm(clip, mounts=max(1, streams), processes=servers)
    farm.start()
    children: list[BenchAgent] = []
    urls = farm.urls()[:streams]

    def snap_all() -> dict[str, Any]:
        snaps = [scrape(child) for child in children]
        return {"t": snaps[0]["t"], "pipelines": [p for snap in snaps for p in snap["pipelines"]],
                "cpu_seconds": sum(snap["cpu_seconds"] for snap in snaps),
                "rss_bytes": sum(snap["rss_bytes"] for snap in snaps)}

    try:
        for number in range(agents):
            log = OUT / f"capacity-agent-{fps:g}fps-{streams}-w{workers}-{number}.log"
            children.append(start_agent(urls[number::agents], fps, receiver.url, workers, log))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every input RUNNING (or give up and measure what runs)
            states = [i["state"] for p in snap_all()["pipelines"] for i in p["inputs"]]
            if len(states) == streams and all(s == "RUNNING" for s in states):
                break
            time.sleep(1)
        time.sleep(warmup)
        load_before = loadavg()
        first, srv0, rcv0, box0 = (snap_all(), farm.cpu_seconds(), proc_cpu_seconds(receiver.process.pid),
                                   box_jiffies())
        time.sleep(window)
        last, srv1, rcv1, box1 = (snap_all(), farm.cpu_seconds(), proc_cpu_seconds(receiver.process.pid),
                                  box_jiffies())
        load_after = loadavg()
    finally:
        for child in children:
            child.stop()
        farm.stop()
    result = summarise(fps, streams, workers, first, last, last["cpu_seconds"] - first["cpu_seconds"],
                       srv1 - srv0, rcv1 - rcv0, box0, box1, int(last["rss_bytes"]), load_before, load_after)
    result.code = code
    result.agents = agents
    result.at = time.strftime("%H:%M", time.gmtime())
    return result


def code_version() -> str:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "agent"], capture_output=True,
                           text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def summarise(fps: float, streams: int, workers: str, first: dict[str, Any], last: dict[str, Any],
              agent_cpu: float, servers_cpu: float, receiver_cpu: float, box0: tuple[int, int],
              box1: tuple[int, int], rss: int, load_before: float, load_after: float) -> StepResult:
    elapsed = last["t"] - first["t"]
    before = {p["task_id"]: p for p in first["pipelines"]}
    processed = 0
    worst = float("inf")
    buckets: dict[float, int] = {}
    latency_sum = 0.0
    latency_count = 0
    algorithm: dict[float, int] = {}
    algorithm_sum = 0.0
    algorithm_count = 0
    running = keyframe_only = dropped = reconnects = events = 0
    fps_in: list[float] = []
    for pipeline in last["pipelines"]:
        old = before.get(pipeline["task_id"])
        done = pipeline["frames_processed"] - (old["frames_processed"] if old else 0)
        processed += done
        worst = min(worst, done / (elapsed * fps) if elapsed > 0 else 0.0)
        old_buckets = {b: c for b, c in old["latency_buckets"]} if old else {}
        for bound, count in pipeline["latency_buckets"]:
            buckets[bound] = buckets.get(bound, 0) + count - old_buckets.get(bound, 0)
        latency_sum += pipeline["latency_sum"] - (old["latency_sum"] if old else 0.0)
        latency_count += pipeline["latency_count"] - (old["latency_count"] if old else 0)
        events += pipeline["events"] - (old["events"] if old else 0)
        old_algorithm = {b: c for b, c in old.get("algorithm_buckets", [])} if old else {}
        for bound, count in pipeline.get("algorithm_buckets", []):
            algorithm[bound] = algorithm.get(bound, 0) + count - old_algorithm.get(bound, 0)
        algorithm_sum += pipeline.get("algorithm_sum", 0.0) - (old.get("algorithm_sum", 0.0) if old else 0.0)
        algorithm_count += pipeline.get("algorithm_count", 0) - (old.get("algorithm_count", 0) if old else 0)
        for index, status in enumerate(pipeline["inputs"]):
            old_input = old["inputs"][index] if old else None
            running += status["state"] == "RUNNING"
            keyframe_only += bool(status["keyframe_only"])
            fps_in.append(status["fps_in"])
            dropped += status["dropped"] - (old_input["dropped"] if old_input else 0)
            reconnects += status["reconnects"] - (old_input["reconnects"] if old_input else 0)
    cumulative = sorted(buckets.items())
    due = round(elapsed * fps * streams)
    ratio = processed / due if due else 0.0
    p99 = quantile(cumulative, 0.99)
    at_limit = dict(cumulative).get(MAX_P99_S, 0)
    p99_ok = latency_count > 0 and at_limit >= MIN_RATIO * latency_count
    box_busy = (box1[0] - box0[0]) / max(1, box1[1] - box0[1]) * 100.0  # of all CPUs
    cores = os.cpu_count() or 1
    ours = (agent_cpu + servers_cpu + receiver_cpu) / elapsed * 100.0 / cores
    agent_pct = agent_cpu / elapsed * 100.0
    return StepResult(
        fps=fps, streams=streams, workers=workers, window_s=round(elapsed, 1), due=due,
        processed=processed, ratio=round(ratio, 4), worst_stream_ratio=round(worst if streams else 0.0, 3),
        p99_s=round(p99, 3), p99_bucket_ok=p99_ok,
        mean_latency_s=round(latency_sum / latency_count, 4) if latency_count else 0.0,
        running=running, keyframe_only=keyframe_only,
        fps_in_mean=round(sum(fps_in) / len(fps_in), 2) if fps_in else 0.0,
        dropped=dropped, reconnects=reconnects, events=events,
        agent_cpu_pct=round(agent_pct, 1), agent_cpu_pct_per_stream=round(agent_pct / max(1, streams), 2),
        agent_rss_mib=round(rss / 2**20, 1), servers_cpu_pct=round(servers_cpu / elapsed * 100.0, 1),
        receiver_cpu_pct=round(receiver_cpu / elapsed * 100.0, 1), box_busy_pct=round(box_busy, 1),
        others_pct=round(max(0.0, box_busy - ours), 1), load_before=load_before, load_after=load_after,
        passed=ratio >= MIN_RATIO and p99_ok and running == streams,
        algorithm_p99_s=round(quantile(sorted(algorithm.items()), 0.99), 3) if algorithm else 0.0,
        algorithm_mean_s=round(algorithm_sum / algorithm_count, 4) if algorithm_count else 0.0,
    )


def idle_rss(receiver: WebhookProcess, workers: str) -> float:
    """RSS (MiB) of an agent with no task, main process and workers: the baseline for RSS per stream."""
    with start_agent([], 1.0, receiver.url, workers, OUT / f"capacity-agent-idle-w{workers}.log") as agent:
        time.sleep(3)
        return float(scrape(agent)["rss_bytes"]) / 2**20


# --- the search and the report -------------------------------------------------------------------------
HEADER = ("fps", "N", "workers", "processed/due", "worst", "p99 ms", "mean ms", "algo p99/mean ms", "kf-only",
          "fps_in", "dropped", "agent %cpu", "%cpu/stream", "RSS MiB", "MiB/stream", "servers %cpu", "others %",
          "load", "ok")


def row(result: StepResult, baseline_rss: float) -> tuple[str, ...]:
    per_stream_rss = (result.agent_rss_mib - baseline_rss) / max(1, result.streams)
    p99 = f"{result.p99_s * 1000:.0f}" if result.p99_s < 5.0 else ">5000"
    return (f"{result.fps:g}", str(result.streams), result.workers,
            f"{result.processed}/{result.due} = {result.ratio:.3f}", f"{result.worst_stream_ratio:.2f}", p99,
            f"{result.mean_latency_s * 1000:.0f}",
            f"{result.algorithm_p99_s * 1000:.0f}/{result.algorithm_mean_s * 1000:.0f}",
            f"{result.keyframe_only}/{result.streams}",
            f"{result.fps_in_mean:.1f}", str(result.dropped), f"{result.agent_cpu_pct:.0f}",
            f"{result.agent_cpu_pct_per_stream:.1f}", f"{result.agent_rss_mib:.0f}", f"{per_stream_rss:.1f}",
            f"{result.servers_cpu_pct:.0f}", f"{result.others_pct:.0f}",
            f"{result.load_before:.1f}→{result.load_after:.1f}", "PASS" if result.passed else "fail")


def print_table(results: list[StepResult], baseline_rss: dict[str, float]) -> None:
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for result in results:
        print("| " + " | ".join(row(result, baseline_rss[result.workers])) + " |", flush=True)


def search(fps: float, workers: str, args: argparse.Namespace, clip: Path, receiver: WebhookProcess,
           baseline_rss: dict[str, float], results: list[StepResult]) -> int:
    """Largest passing N: step up from --start by --step until a failure, then bisect to --resolution."""
    def run(streams: int) -> bool:
        result = measure(fps, streams, clip, receiver, warmup=args.warmup, window=args.window,
                         servers=args.servers, workers=workers, quiet_pct=args.quiet_pct,
                         quiet_wait=args.quiet_wait, agents=args.agents)
        results.append(result)
        print(" | ".join(row(result, baseline_rss[workers])), flush=True)
        save(results, baseline_rss, args)
        return result.passed

    if args.streams:
        best = 0
        for streams in args.streams:
            if run(streams):
                best = max(best, streams)
        return best
    passed, failed = 0, None
    streams = args.start
    while streams <= args.max:
        if run(streams):
            passed = streams
            streams += args.step
        else:
            failed = streams
            break
    while failed is not None and failed - passed > args.resolution:
        middle = (passed + failed) // 2
        if run(middle):
            passed = middle
        else:
            failed = middle
    return passed


def save(results: list[StepResult], baseline_rss: dict[str, float], args: argparse.Namespace) -> None:
    path = OUT / args.json
    path.write_text(json.dumps({"machine": machine(), "baseline_rss_mib": baseline_rss,
                                "command": " ".join(sys.argv), "results": [asdict(r) for r in results]},
                               indent=1))


def machine() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import av

    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(), "python": platform.python_version(),
            "pyav": av.__version__, "ffmpeg": ".".join(str(v) for v in av.library_versions["libavcodec"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, nargs="+", default=[1.0, 5.0], help="target fps per stream")
    parser.add_argument("--workers", nargs="+", default=["auto"],
                        help="[runtime] workers of the agent: each value is searched in turn (e.g. 1 2)")
    parser.add_argument("--streams", type=int, nargs="+", help="measure exactly these stream counts")
    parser.add_argument("--start", type=int, default=16)
    parser.add_argument("--step", type=int, default=16)
    parser.add_argument("--max", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=4, help="bisect until pass and fail are this close")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds after every input runs")
    parser.add_argument("--window", type=float, default=40.0, help="measurement window, seconds")
    parser.add_argument("--servers", type=int, default=2, help="RTSP server processes")
    parser.add_argument("--quiet-pct", type=float, default=100.0,
                        help="before each step wait until the box is busier than this %% of all cores no more")
    parser.add_argument("--quiet-wait", type=float, default=300.0, help="longest wait for a quiet box, seconds")
    parser.add_argument("--agents", type=int, default=1,
                        help="deal the cameras over this many agent processes (CPU and RSS sum them)")
    parser.add_argument("--json", default="capacity.json", help="results file under bench/out/")
    args = parser.parse_args()
    clip = ensure(CLIP)
    info = machine()
    print(f"# machine: {info}; clip: {clip.name}; load {loadavg():.2f}", flush=True)
    receiver = WebhookProcess()
    results: list[StepResult] = []
    try:
        baseline_rss = {workers: idle_rss(receiver, workers) for workers in args.workers}
        print(f"# idle agent RSS (main + workers) MiB by workers: {baseline_rss}", flush=True)
        print(" | ".join(HEADER), flush=True)
        best: dict[tuple[float, str], int] = {}
        for fps in args.fps:
            for workers in args.workers:
                best[(fps, workers)] = search(fps, workers, args, clip, receiver, baseline_rss, results)
        print()
        print_table(results, baseline_rss)
        print()
        cores = os.cpu_count() or 1
        for (fps, workers), streams in best.items():
            target = TARGETS.get(fps)
            versus = f" = {streams / target:.2f}x the target of {target}" if target else ""
            print(f"{fps:g} fps, workers {workers}: largest sustained N = {streams}{versus}")
            # what the box could carry if nobody else used it: CPU per stream of the largest step measured
            largest = max((r for r in results if r.fps == fps and r.workers == workers), key=lambda r: r.streams,
                          default=None)
            if largest is not None and largest.streams:
                per_stream = (largest.agent_cpu_pct + largest.servers_cpu_pct) / largest.streams
                print(f"  CPU per stream at N={largest.streams}: agent {largest.agent_cpu_pct_per_stream:.2f} % + "
                      f"servers {largest.servers_cpu_pct / largest.streams:.2f} % of a core; both cores would be "
                      f"full at N = {100 * cores / per_stream:.0f}")
    finally:
        receiver.stop()


if __name__ == "__main__":
    threading.current_thread().name = "capacity"
    main()
