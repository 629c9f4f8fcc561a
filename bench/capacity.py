"""Capacity: how many 720p25 RTSP cameras one box analyses without falling behind, at 1 and at 5 fps.

For each target fps the bench steps the number of streams up (``--start``, ``--step``) until a step
fails, then bisects between the last pass and the first failure down to ``--resolution`` streams.
Every step is a fresh world:

- ``RtspFarm`` (bench/rtsp_farm.py): GStreamer RTSP servers (Debian's /usr/bin/python3) serving one
  generated mp4 — H.264 Main, 1280x720, 25 fps, 1 s GOP, no B-frames, ~2 Mbit/s — on N mount points,
  not re-encoded, paced in real time, one pipeline per client;
- the agent in a child process of this script (``capacity.py _agent``): ``AgentRuntime`` with a temp
  state dir, tasks created through its ``TaskService``, one task per camera, the algorithms split
  (even cameras ``intrusion-detection``, odd ``video-quality-diagnosis``, ``config.common.fps`` = the
  target), a webhook output to a real receiver in a third process; no MQTT (event_center off).
  In a child so that its CPU and RSS are its own (/proc/<pid>/stat, statm) while this script still
  reads every pipeline's ``PipelineStatus`` (it asks the child for a snapshot over a pipe);
- the task creations are spread over one GOP so that the cameras' keyframes are not all in phase.

After all inputs run, a warm-up, then a measurement window between two snapshots. A step passes when
the sampled frames processed are >= 99% of those due (window x fps x N), the p99 of the pipelines'
capture -> commit latency histogram (delta over the window) is < 500 ms and every input is RUNNING.

Experiments (bench-only, nothing in agent/ changes): ``--decoder-threads auto|single`` forces frame
threading on or off for full decode; ``--agents K`` deals the cameras over K agent processes (the
process model vs the GIL); ``--switch-interval`` sets ``sys.setswitchinterval`` in the agent.
Other people's jobs share the box: ``--quiet-pct`` waits for a calmer box before each step, and every
step records the CPU the others used. Figures and conclusions: docs/benchmarks.md, "Capacity: cameras per box".

    .venv/bin/python bench/capacity.py --fps 1 --start 16 --step 16
    .venv/bin/python bench/capacity.py --fps 5 --start 8 --step 4 --decoder-threads auto
    .venv/bin/python bench/capacity.py --fps 5 --streams 20        # one point only
    .venv/bin/python bench/capacity.py --fps 1 --streams 64 --agents 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.rtsp_farm import RtspFarm, proc_cpu_seconds, proc_rss_bytes  # noqa: E402
from tests.fixtures.ports import free_port  # noqa: E402

OUT = REPO / "bench" / "out"
CLIP_SECONDS = 180  # longer than start-up + warm-up + window: a clip's end would be a reconnect
CLIP = OUT / f"h264_1280x720_25fps_gop25_2M_{CLIP_SECONDS}s.mp4"
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


# --- the clip ----------------------------------------------------------------------------------------
def ensure_clip() -> Path:
    """A 720p25 H.264 clip like an IP camera's main stream: 1 s GOP, no B-frames, ~2 Mbit/s, sensor noise."""
    if CLIP.exists():
        return CLIP
    OUT.mkdir(parents=True, exist_ok=True)
    part = CLIP.with_suffix(".part.mp4")
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
         "testsrc2=size=1280x720:rate=25", "-vf", "noise=alls=5:allf=t", "-t", str(CLIP_SECONDS),
         "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-pix_fmt", "yuv420p",
         "-b:v", "2M", "-maxrate", "2M", "-bufsize", "2M", "-g", "25", "-keyint_min", "25",
         "-sc_threshold", "0", "-bf", "0", "-an", "-movflags", "+faststart", str(part)],
        check=True,
    )
    part.rename(CLIP)
    return CLIP


# --- the agent child ---------------------------------------------------------------------------------
def force_decoder_threads(choice: str) -> None:
    """Bench-only: make the PyAV reader use frame threading (``auto``) or not (``single``) for full decode.

    The reader picks threading per decode mode (agent/sources/sampler.py): keyframe-only and sampled
    decode single-threaded, AUTO only when every frame is wanted. Remapping the modes handed to its
    ``_switch`` changes the threading without touching anything else (skip_frame is DEFAULT for both).
    """
    if choice == "default":
        return
    import agent.sources.pyav as pyav
    from agent.sources.sampler import DecodeMode

    original = pyav._switch
    swap = {DecodeMode.SAMPLED: DecodeMode.FULL} if choice == "auto" else {DecodeMode.FULL: DecodeMode.SAMPLED}

    def switch(decoder: Any, old: DecodeMode | None, new: DecodeMode, *args: Any, **kwargs: Any) -> Any:
        return original(decoder, swap.get(old, old) if old is not None else None, swap.get(new, new),
                        *args, **kwargs)

    setattr(pyav, "_switch", switch)  # noqa: B010 - the reader looks the function up by this name


def task_body(index: int, url: str, fps: float, webhook: str) -> tuple[str, dict[str, Any]]:
    service = ALGORITHMS[index % 2]
    return service, {
        "name": f"cam{index}",
        "input": {"type": "url", "data": [{"url": url, "index": 0}]},
        "output": {"webhook": {"url": webhook, "headers": {"Authorization": "Bearer capacity-bench"}}},
        "config": {"common": {"fps": fps}},
        "service_version": "1.0",
    }


def snapshot(runtime: Any) -> dict[str, Any]:
    now = time.monotonic()
    pipelines = []
    for status in runtime.supervisor.pipelines():
        pipelines.append({
            "task_id": status.task_id,
            "service": status.service_name,
            "frames_processed": status.frames_processed,
            "events": status.events,
            "latency_buckets": [[bound, count] for bound, count in status.latency_buckets],
            "latency_sum": status.latency_sum,
            "latency_count": status.latency_count,
            "algorithm_buckets": [[bound, count] for bound, count in status.runner.latency_buckets],
            "algorithm_sum": status.runner.latency_sum,
            "algorithm_count": status.runner.latency_count,
            "inputs": [{"state": s.state.name, "fps_in": s.fps_in, "fps_out": s.fps_out,
                        "frames_decoded": s.frames_decoded, "frames_sampled": s.frames_sampled,
                        "dropped": s.dropped, "reconnects": s.reconnects, "keyframe_only": s.keyframe_only,
                        "last_error": s.last_error} for s in status.inputs],
        })
    return {"t": now, "pipelines": pipelines}


def run_agent(args: argparse.Namespace) -> None:
    """The child: an in-process agent; answers ``snap`` with one JSON line, ``quit`` stops it."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    force_decoder_threads(args.decoder_threads)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)
    from agent.runtime.app import AgentRuntime
    from agent.settings import AgentSettings

    urls = [u for u in args.urls.split(",") if u]
    state = Path(tempfile.mkdtemp(prefix="capacity-state-"))
    settings = AgentSettings(
        node_id="capacity-bench", state_dir=state,
        api={"listen": f"127.0.0.1:{free_port()}", "token": "capacity-bench-token"},
        limits={"max_tasks": len(urls) + 1, "max_inputs": len(urls) + 1},
        log={"level": "WARNING"},
    )
    runtime = AgentRuntime(settings, realtime_files=True)
    runtime.start()
    spread = 1.0 / max(1, len(urls))  # one GOP (1 s) over all cameras: keyframes out of phase
    for index, url in enumerate(urls):
        service, body = task_body(index, url, args.fps, args.webhook)
        runtime.service.create("bench", service, body)
        time.sleep(spread)
    print(json.dumps({"ready": True}), flush=True)
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "snap":
                print(json.dumps(snapshot(runtime)), flush=True)
            elif command == "quit":
                break
    finally:
        runtime.stop()
        shutil.rmtree(state, ignore_errors=True)


class AgentChild:
    def __init__(self, urls: list[str], fps: float, webhook: str, decoder_threads: str, log: Path,
                 switch_interval: float = 0.0) -> None:
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "_agent", "--urls", ",".join(urls), "--fps", str(fps),
             "--webhook", webhook, "--decoder-threads", decoder_threads, "--switch-interval", str(switch_interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )
        self._read(120.0)  # {"ready": true}

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("the agent child did not answer")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the agent child exited with {self.process.poll()}; see {self._log.name}")
        result: dict[str, Any] = json.loads(line)
        return result

    def snap(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("snap\n")
        self.process.stdin.flush()
        return self._read(30.0)

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(5)
        self._log.close()


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
    decoder_threads: str
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
    switch_interval: float = 0.0
    agents: int = 1  # agent processes the cameras were dealt over
    at: str = ""  # UTC time at the end of the step
    code: str = ""  # git HEAD when the step ran (+dirty: agent/ had uncommitted changes); others commit meanwhile


def measure(fps: float, streams: int, clip: Path, receiver: WebhookProcess, *, warmup: float, window: float,
            servers: int, decoder_threads: str, quiet_pct: float = 100.0, quiet_wait: float = 0.0,
            switch_interval: float = 0.0, agents: int = 1) -> StepResult:
    """One step; with ``agents`` > 1 the cameras are dealt over that many agent processes (a GIL experiment)."""
    if quiet_pct < 100:
        wait_quiet(quiet_pct, quiet_wait)
    code = code_version()
    farm = RtspFarm(clip, mounts=max(1, streams), processes=servers)
    farm.start()
    children: list[AgentChild] = []
    urls = farm.urls()[:streams]

    def snap_all() -> dict[str, Any]:
        snaps = [child.snap() for child in children]
        return {"t": snaps[0]["t"], "pipelines": [p for snap in snaps for p in snap["pipelines"]]}

    def agent_cpu() -> float:
        return sum(proc_cpu_seconds(child.process.pid) for child in children)

    try:
        for number in range(agents):
            log = OUT / f"capacity-agent-{fps:g}fps-{streams}-{number}.log"
            children.append(AgentChild(urls[number::agents], fps, receiver.url, decoder_threads, log,
                                       switch_interval))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every input RUNNING (or give up and measure what runs)
            states = [i["state"] for p in snap_all()["pipelines"] for i in p["inputs"]]
            if len(states) == streams and all(s == "RUNNING" for s in states):
                break
            time.sleep(1)
        time.sleep(warmup)
        load_before = loadavg()
        first, cpu0, srv0, rcv0, box0 = (snap_all(), agent_cpu(), farm.cpu_seconds(),
                                         proc_cpu_seconds(receiver.process.pid), box_jiffies())
        time.sleep(window)
        last, cpu1, srv1, rcv1, box1 = (snap_all(), agent_cpu(), farm.cpu_seconds(),
                                        proc_cpu_seconds(receiver.process.pid), box_jiffies())
        rss = sum(proc_rss_bytes(child.process.pid) for child in children)
        load_after = loadavg()
    finally:
        for child in children:
            child.stop()
        farm.stop()
    result = summarise(fps, streams, decoder_threads, first, last, cpu1 - cpu0, srv1 - srv0, rcv1 - rcv0,
                       box0, box1, rss, load_before, load_after)
    result.code = code
    result.switch_interval = switch_interval
    result.agents = agents
    result.at = time.strftime("%H:%M", time.gmtime())
    return result


def code_version() -> str:
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "agent"], capture_output=True,
                           text=True).stdout.strip()
    return head + ("+dirty" if dirty else "")


def summarise(fps: float, streams: int, decoder_threads: str, first: dict[str, Any], last: dict[str, Any],
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
        fps=fps, streams=streams, decoder_threads=decoder_threads, window_s=round(elapsed, 1), due=due,
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


def idle_rss(receiver: WebhookProcess) -> float:
    """RSS (MiB) of the agent child with no task: the baseline for RSS per stream."""
    child = AgentChild([], 1.0, receiver.url, "default", OUT / "capacity-agent-idle.log")
    try:
        time.sleep(3)
        return proc_rss_bytes(child.process.pid) / 2**20
    finally:
        child.stop()


# --- the search and the report -------------------------------------------------------------------------
HEADER = ("fps", "N", "threads", "processed/due", "worst", "p99 ms", "mean ms", "algo p99/mean ms", "kf-only",
          "fps_in", "dropped", "agent %cpu", "%cpu/stream", "RSS MiB", "MiB/stream", "servers %cpu", "others %",
          "load", "ok")


def row(result: StepResult, baseline_rss: float) -> tuple[str, ...]:
    per_stream_rss = (result.agent_rss_mib - baseline_rss) / max(1, result.streams)
    p99 = f"{result.p99_s * 1000:.0f}" if result.p99_s < 5.0 else ">5000"
    return (f"{result.fps:g}", str(result.streams), result.decoder_threads,
            f"{result.processed}/{result.due} = {result.ratio:.3f}", f"{result.worst_stream_ratio:.2f}", p99,
            f"{result.mean_latency_s * 1000:.0f}",
            f"{result.algorithm_p99_s * 1000:.0f}/{result.algorithm_mean_s * 1000:.0f}",
            f"{result.keyframe_only}/{result.streams}",
            f"{result.fps_in_mean:.1f}", str(result.dropped), f"{result.agent_cpu_pct:.0f}",
            f"{result.agent_cpu_pct_per_stream:.1f}", f"{result.agent_rss_mib:.0f}", f"{per_stream_rss:.1f}",
            f"{result.servers_cpu_pct:.0f}", f"{result.others_pct:.0f}",
            f"{result.load_before:.1f}→{result.load_after:.1f}", "PASS" if result.passed else "fail")


def print_table(results: list[StepResult], baseline_rss: float) -> None:
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for result in results:
        print("| " + " | ".join(row(result, baseline_rss)) + " |", flush=True)


def search(fps: float, args: argparse.Namespace, clip: Path, receiver: WebhookProcess,
           baseline_rss: float, results: list[StepResult]) -> int:
    """Largest passing N: step up from --start by --step until a failure, then bisect to --resolution."""
    def run(streams: int) -> bool:
        result = measure(fps, streams, clip, receiver, warmup=args.warmup, window=args.window,
                         servers=args.servers, decoder_threads=args.decoder_threads,
                         quiet_pct=args.quiet_pct, quiet_wait=args.quiet_wait,
                         switch_interval=args.switch_interval, agents=args.agents)
        results.append(result)
        print(" | ".join(row(result, baseline_rss)), flush=True)
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


def save(results: list[StepResult], baseline_rss: float, args: argparse.Namespace) -> None:
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
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("_agent", help="internal: the agent child process")
    child.add_argument("--urls", default="")
    child.add_argument("--fps", type=float, required=True)
    child.add_argument("--webhook", required=True)
    child.add_argument("--decoder-threads", choices=["default", "auto", "single"], default="default")
    child.add_argument("--switch-interval", type=float, default=0.0)
    parser.add_argument("--fps", type=float, nargs="+", default=[1.0, 5.0], help="target fps per stream")
    parser.add_argument("--streams", type=int, nargs="+", help="measure exactly these stream counts")
    parser.add_argument("--start", type=int, default=16)
    parser.add_argument("--step", type=int, default=16)
    parser.add_argument("--max", type=int, default=128)
    parser.add_argument("--resolution", type=int, default=4, help="bisect until pass and fail are this close")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds after every input runs")
    parser.add_argument("--window", type=float, default=40.0, help="measurement window, seconds")
    parser.add_argument("--servers", type=int, default=2, help="RTSP server processes")
    parser.add_argument("--decoder-threads", choices=["default", "auto", "single"], default="default",
                        help="default: the agent's own choice per decode mode; auto/single: forced for full decode")
    parser.add_argument("--quiet-pct", type=float, default=100.0,
                        help="before each step wait until the box is busier than this %% of all cores no more")
    parser.add_argument("--quiet-wait", type=float, default=300.0, help="longest wait for a quiet box, seconds")
    parser.add_argument("--switch-interval", type=float, default=0.0,
                        help="bench-only: sys.setswitchinterval in the agent (0 = Python's default, 5 ms)")
    parser.add_argument("--agents", type=int, default=1,
                        help="deal the cameras over this many agent processes (GIL experiment; RSS sums them)")
    parser.add_argument("--json", default="capacity.json", help="results file under bench/out/")
    args = parser.parse_args()
    if args.command == "_agent":
        run_agent(args)
        return
    clip = ensure_clip()
    info = machine()
    print(f"# machine: {info}; clip: {clip.name}; load {loadavg():.2f}", flush=True)
    receiver = WebhookProcess()
    results: list[StepResult] = []
    try:
        baseline_rss = idle_rss(receiver)
        print(f"# idle agent RSS {baseline_rss:.0f} MiB", flush=True)
        print(" | ".join(HEADER), flush=True)
        best: dict[float, int] = {}
        for fps in args.fps:
            best[fps] = search(fps, args, clip, receiver, baseline_rss, results)
        print()
        print_table(results, baseline_rss)
        print()
        cores = os.cpu_count() or 1
        for fps, streams in best.items():
            target = TARGETS.get(fps)
            versus = f" = {streams / target:.2f}x the target of {target}" if target else ""
            print(f"{fps:g} fps: largest sustained N = {streams}{versus}")
            # what the box could carry if nobody else used it: CPU per stream of the largest step measured
            largest = max((r for r in results if r.fps == fps), key=lambda r: r.streams, default=None)
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
