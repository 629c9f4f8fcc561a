"""Ingest benchmark: the agent's stream ingest side by side with the usual ways to read video.

    .venv/bin/python -m bench.ingest                       # everything, short soak (2 min)
    .venv/bin/python -m bench.ingest --soak-seconds 600    # RSS after 10 min vs after 1 min
    .venv/bin/python -m bench.ingest --only clips          # clips | live | open | memory | soak | packets

Generates 60 s 720p25 and 1080p25 H.264 clips (2 s GOP, no B-frames, like a camera) into
bench/out/ with ffmpeg, then measures, each in its own process, the CPU time (user + system of the
process and of its children, start-up excluded) of:

  ffmpeg-null     ``ffmpeg -threads 0 -i clip -f null -``            (decode only, the floor)
  agent-full      VideoStream at every frame, frames handed on, not converted
  agent-5 / 0.5   VideoStream at 5 / 0.5 fps, every sampled frame converted to BGR
  cv2-read        a plain ``cv2.VideoCapture.read()`` loop (every frame decoded and converted)
  ffmpeg-pipe-F   ``ffmpeg -i clip -r F -f rawvideo -pix_fmt bgr24 pipe:`` read into numpy (Frigate)

and the same on a live local RTSP stream (GStreamer, 720p25) for a fixed time. It also measures
RTSP open → first frame (the agent vs FFmpeg's default probing), RSS per added 720p stream, and RSS
of one stream after ``--soak-seconds`` vs after 60 s. Ratios are printed against the targets of
issue 5; docs/benchmarks.md records the results.

``--only packets`` compares ``VideoStream`` at 0.5 fps (keyframes only) with a bare PyAV loop on a
long 240p clip: what each packet costs in Python on top of FFmpeg (issue 12).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.clips import Clip, ensure

ROOT = Path(__file__).resolve().parent.parent
CLIPS = {"720p25": (1280, 720, "2M"), "1080p25": (1920, 1080, "4M")}  # 2 s GOP, no B-frames, like a camera


# --- measurement helpers -----------------------------------------------------------------------
def cpu_now() -> float:
    """CPU seconds of this process (all threads) plus its waited-for children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    import av
    import cv2

    return (f"{os.cpu_count()} × {model}, Linux {platform.release()}, Python {platform.python_version()}, "
            f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}), OpenCV {cv2.__version__}")


def make_clips(seconds: int) -> dict[str, Path]:
    return {name: ensure(Clip(width, height, seconds=seconds, gop=50, bitrate=bitrate), announce=True)
            for name, (width, height, bitrate) in CLIPS.items()}


# --- workers: each runs in its own process and prints one JSON line ----------------------------
def work_ffmpeg_null(source: str, fps: float, seconds: float) -> dict[str, Any]:
    command = ["ffmpeg", "-v", "error", "-threads", "0"]
    if source.startswith("rtsp://"):
        command += ["-rtsp_transport", "tcp"]
    command += ["-i", source]
    if seconds:
        command += ["-t", str(seconds)]
    subprocess.run([*command, "-f", "null", "-"], check=True)
    return {"frames": None}


def work_ffmpeg_pipe(source: str, fps: float, seconds: float) -> dict[str, Any]:
    import numpy as np

    width, height = (int(v) for v in os.environ["BENCH_SIZE"].split("x"))
    command = ["ffmpeg", "-v", "error"]
    if source.startswith("rtsp://"):
        command += ["-rtsp_transport", "tcp"]
    command += ["-i", source]
    if seconds:
        command += ["-t", str(seconds)]
    command += ["-r", str(fps), "-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:"]
    size = width * height * 3
    frames = 0
    with subprocess.Popen(command, stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        while True:
            data = process.stdout.read(size)
            if len(data) < size:
                break
            image = np.frombuffer(data, np.uint8).reshape(height, width, 3)
            frames += int(image[0, 0, 0] >= 0)
    return {"frames": frames}


def work_cv2_read(source: str, fps: float, seconds: float) -> dict[str, Any]:
    import cv2

    if source.startswith("rtsp://"):
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "rtsp_transport;tcp"
    capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG)
    frames = 0
    deadline = time.monotonic() + seconds if seconds else None
    while deadline is None or time.monotonic() < deadline:
        ok, _image = capture.read()
        if not ok:
            break
        frames += 1
    capture.release()
    return {"frames": frames}


def work_agent(source: str, fps: float, seconds: float, backend: str = "pyav") -> dict[str, Any]:
    from agent.settings import StreamSettings
    from agent.sources.stream import StreamState, VideoStream
    from agent.sources.target import StreamTarget

    is_file = not source.startswith("rtsp://")
    wakeup = threading.Event()
    stream = VideoStream(0, lambda: StreamTarget(source, is_file=is_file), StreamSettings(), fps,
                         backend=backend, realtime_files=False, wakeup=wakeup)
    convert = fps > 0  # full rate: frames handed on as decoded (the algorithm decides what to view)
    frames = 0
    deadline = time.monotonic() + seconds if seconds else None
    stream.start()
    try:
        while deadline is None or time.monotonic() < deadline:
            wakeup.wait(0.2)
            wakeup.clear()
            frame = stream.take()
            if frame is not None:
                frames += 1
                if convert:
                    _ = frame.bgr
            elif is_file and stream.status().state is StreamState.ENDED:
                break
    finally:
        status = stream.status()
        stream.stop()
    return {"frames": frames, "keyframe_only": status.keyframe_only, "decoded": status.frames_decoded}


def work_agent_opencv(source: str, fps: float, seconds: float) -> dict[str, Any]:
    return work_agent(source, fps, seconds, backend="opencv")


def work_pyav_keyframes(source: str, fps: float, seconds: float) -> dict[str, Any]:
    """The keyframe-only floor: demux every packet, decode only keyframes, convert them as the agent does."""
    import av

    from agent.sources.frame import Frame, FrameInfo

    packets = frames = 0
    with av.open(source) as container:
        stream = container.streams.video[0]
        decoder = stream.codec_context
        decoder.thread_count = 1
        decoder.skip_frame = "NONKEY"
        for packet in container.demux(stream):
            packets += 1
            if packet.is_keyframe:
                for frame in decoder.decode(packet):
                    info = FrameInfo(0, frame.pts, None, 0.0, frame.width, frame.height)
                    frames += int(Frame(info, frame).bgr.size > 0)
    return {"frames": frames, "packets": packets}


WORKERS: dict[str, Callable[[str, float, float], dict[str, Any]]] = {
    "ffmpeg-null": work_ffmpeg_null,
    "ffmpeg-pipe": work_ffmpeg_pipe,
    "cv2-read": work_cv2_read,
    "agent": work_agent,
    "agent-opencv": work_agent_opencv,
    "pyav-keyframes": work_pyav_keyframes,
}


def run_worker(name: str, source: str, size: str, fps: float, seconds: float, repeat: int) -> dict[str, Any]:
    """Run a worker in a fresh process ``repeat`` times; keep the run with the least CPU."""
    best: dict[str, Any] | None = None
    for _ in range(repeat):
        output = subprocess.run(
            [sys.executable, "-m", "bench.ingest", "--worker", name, "--source", source, "--fps", str(fps),
             "--seconds", str(seconds)],
            check=True, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "BENCH_SIZE": size},
        ).stdout.strip().splitlines()[-1]
        result = json.loads(output)
        if best is None or result["cpu_s"] < best["cpu_s"]:
            best = result
    assert best is not None
    return best


def worker_main(name: str, source: str, fps: float, seconds: float) -> None:
    import av  # noqa: F401  (imports are start-up, not work)
    import cv2  # noqa: F401
    import numpy  # noqa: F401

    import agent.sources.stream  # noqa: F401

    cpu, wall = cpu_now(), time.monotonic()
    result = WORKERS[name](source, fps, seconds)
    result.update(cpu_s=round(cpu_now() - cpu, 3), wall_s=round(time.monotonic() - wall, 3))
    print(json.dumps(result), flush=True)


# --- comparisons -------------------------------------------------------------------------------
def compare(label: str, source: str, size: str, seconds: float, repeat: int) -> list[str]:
    """The three CPU comparisons of issue 5 on one input; returns report lines."""
    runs: dict[str, dict[str, Any]] = {}
    plan = [
        ("ffmpeg-null", "ffmpeg-null", 0.0),
        ("agent-full", "agent", 0.0),
        ("agent-5", "agent", 5.0),
        ("cv2-read", "cv2-read", 0.0),
        ("ffmpeg-pipe-5", "ffmpeg-pipe", 5.0),
        ("agent-0.5", "agent", 0.5),
        ("ffmpeg-pipe-0.5", "ffmpeg-pipe", 0.5),
        ("agent-opencv-5", "agent-opencv", 5.0),
    ]
    for key, worker, fps in plan:
        runs[key] = run_worker(worker, source, size, fps, seconds, repeat)
        extra = {k: v for k, v in runs[key].items() if k not in ("cpu_s", "wall_s")}
        print(f"  {label:14} {key:16} cpu {runs[key]['cpu_s']:7.2f} s  wall {runs[key]['wall_s']:7.2f} s  {extra}",
              flush=True)
    cpu = {key: run["cpu_s"] for key, run in runs.items()}
    peer_5 = min(cpu["cv2-read"], cpu["ffmpeg-pipe-5"])
    peer_05 = min(cpu["cv2-read"], cpu["ffmpeg-pipe-0.5"])
    lines = [
        f"| {label} | 1. full rate: agent / ffmpeg -f null | {cpu['agent-full']:.2f} / {cpu['ffmpeg-null']:.2f} s "
        f"| **{cpu['agent-full'] / cpu['ffmpeg-null']:.2f}×** | ≤ 1.10× |",
        f"| {label} | 2. 5 fps + BGR: agent / best peer (cv2 {cpu['cv2-read']:.2f}, pipe {cpu['ffmpeg-pipe-5']:.2f}) "
        f"| {cpu['agent-5']:.2f} / {peer_5:.2f} s | **{cpu['agent-5'] / peer_5:.2f}×** | ≤ 0.85× |",
        f"| {label} | 3. 0.5 fps + BGR: agent / best peer (cv2 {cpu['cv2-read']:.2f}, pipe "
        f"{cpu['ffmpeg-pipe-0.5']:.2f}) | {cpu['agent-0.5']:.2f} / {peer_05:.2f} s "
        f"| **{cpu['agent-0.5'] / peer_05:.2f}×** | ≤ 0.15× |",
        f"| {label} | OpenCV backend at 5 fps + BGR / agent PyAV at 5 fps | {cpu['agent-opencv-5']:.2f} / "
        f"{cpu['agent-5']:.2f} s | {cpu['agent-opencv-5'] / cpu['agent-5']:.2f}× | (documented as slower) |",
    ]
    for line in lines:
        print(line, flush=True)
    return lines


def make_packets_clip(minutes: int) -> Path:
    """A long small clip (320x240, 25 fps, 2 s GOP): many packets, cheap keyframes."""
    return ensure(Clip(320, 240, seconds=minutes * 60, gop=50, bitrate="300k"), announce=True)


def per_packet(minutes: int, repeat: int) -> list[str]:
    """Python per packet on the keyframe-only path: VideoStream at 0.5 fps vs the bare PyAV loop.

    The clip is small so that decoding is cheap and what is left is per-packet work; the difference
    divided by the packets is what every packet of every stream costs on top of FFmpeg.
    """
    clip = str(make_packets_clip(minutes))
    bare = run_worker("pyav-keyframes", clip, "320x240", 0.5, 0.0, repeat)
    agent = run_worker("agent", clip, "320x240", 0.5, 0.0, repeat)
    packets = bare["packets"]
    extra_us = (agent["cpu_s"] - bare["cpu_s"]) / packets * 1e6
    share = extra_us * 25 * 96 / 1e6 * 100  # 96 cameras at 25 packets/s
    print(f"  bare {bare}\n  agent {agent}", flush=True)
    line = (f"| keyframe-only path, {packets} packets (240p25, {minutes} min, 0.5 fps) | agent {agent['cpu_s']:.2f} s"
            f" / bare PyAV loop {bare['cpu_s']:.2f} s | **{extra_us:.1f} µs per packet** on top of FFmpeg "
            f"| at 96 cameras × 25 packets/s: {share:.1f} % of a core |")
    print(line, flush=True)
    return [line]


def live_server(**kwargs: Any) -> Any:
    from tests.fixtures.ports import free_port
    from tests.fixtures.rtsp import RtspServer

    server = RtspServer(port=free_port(), **kwargs)
    server.start()
    return server


def open_to_first_frame(url: str, trials: int) -> list[str]:
    import av

    from agent.settings import StreamSettings
    from agent.sources.stream import VideoStream
    from agent.sources.target import StreamTarget

    agent_s, default_s = [], []
    for _ in range(trials):
        wakeup = threading.Event()
        stream = VideoStream(0, lambda: StreamTarget(url), StreamSettings(), 5.0, wakeup=wakeup)
        started = time.monotonic()
        stream.start()
        while stream.take() is None and time.monotonic() - started < 10:
            wakeup.wait(0.5)
            wakeup.clear()
        agent_s.append(time.monotonic() - started)
        stream.stop()

        started = time.monotonic()
        with av.open(url, options={"rtsp_transport": "tcp"}) as container:
            next(container.decode(video=0))
        default_s.append(time.monotonic() - started)
    line = (f"| RTSP open → first frame, 720p25 live, {trials} trials | agent (fpsprobesize=0) median "
            f"**{statistics.median(agent_s):.2f} s** (max {max(agent_s):.2f}) | FFmpeg default probing median "
            f"{statistics.median(default_s):.2f} s | target ≤ 0.5 s |")
    print(line, flush=True)
    return [line]


def rss_per_stream(url: str, streams: int, settle: float) -> list[str]:
    from agent.settings import StreamSettings
    from agent.sources.stream import VideoStream
    from agent.sources.target import StreamTarget

    stop = threading.Event()
    running: list[VideoStream] = []

    def consume() -> None:  # convert every sampled frame, like an algorithm would
        while not stop.is_set():
            for stream in list(running):
                frame = stream.take()
                if frame is not None:
                    _ = frame.bgr
            stop.wait(0.05)

    consumer = threading.Thread(target=consume, name="bench-consumer")
    consumer.start()
    time.sleep(settle)
    samples = [rss_mib()]
    for index in range(streams):
        stream = VideoStream(index, lambda: StreamTarget(url), StreamSettings(), 5.0, name=f"bench{index}")
        stream.start()
        running.append(stream)
        time.sleep(settle)
        samples.append(rss_mib())
        print(f"  {index + 1} streams: RSS {samples[-1]:.1f} MiB", flush=True)
    stop.set()
    consumer.join(5)
    for stream in running:
        stream.stop()
    deltas = [b - a for a, b in itertools.pairwise(samples)]
    line = (f"| RSS per added 720p25 stream (5 fps + BGR), {streams} streams | mean **{statistics.mean(deltas):.1f} "
            f"MiB**, max {max(deltas):.1f} MiB (RSS {samples[0]:.0f} → {samples[-1]:.0f} MiB) | target ≤ 40 MB |")
    print(line, flush=True)
    return [line]


def soak(url: str, seconds: float) -> list[str]:
    from agent.settings import StreamSettings
    from agent.sources.stream import VideoStream
    from agent.sources.target import StreamTarget

    wakeup = threading.Event()
    stream = VideoStream(0, lambda: StreamTarget(url), StreamSettings(), 5.0, wakeup=wakeup)
    started = time.monotonic()
    stream.start()
    at_1min: float | None = None
    next_print = 60.0
    while (elapsed := time.monotonic() - started) < seconds:
        wakeup.wait(0.5)
        wakeup.clear()
        frame = stream.take()
        if frame is not None:
            _ = frame.bgr
        if at_1min is None and elapsed >= 60:
            at_1min = rss_mib()
        if elapsed >= next_print:
            print(f"  soak {elapsed:.0f} s: RSS {rss_mib():.1f} MiB, {stream.status().frames_sampled} frames",
                  flush=True)
            next_print += 60
    final = rss_mib()
    status = stream.status()
    stream.stop()
    assert at_1min is not None, "the soak must run longer than a minute"
    growth = 100 * (final - at_1min) / at_1min
    line = (f"| RSS of one 720p25 stream (5 fps + BGR): after 1 min {at_1min:.1f} MiB, after {seconds / 60:.0f} min "
            f"{final:.1f} MiB | growth **{growth:+.1f}%** ({status.frames_sampled} frames, {status.reconnects} "
            f"reconnects) | target ≤ 5% |")
    print(line, flush=True)
    return [line]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["clips", "live", "open", "memory", "soak", "packets"], action="append")
    parser.add_argument("--packets-minutes", type=int, default=10, help="length of the per-packet clip")
    parser.add_argument("--clip-seconds", type=int, default=60)
    parser.add_argument("--live-seconds", type=float, default=20.0, help="length of each live RTSP run")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement (least CPU kept)")
    parser.add_argument("--trials", type=int, default=5, help="open → first frame trials")
    parser.add_argument("--streams", type=int, default=4, help="streams for RSS per stream")
    parser.add_argument("--soak-seconds", type=float, default=120.0)
    parser.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--fps", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args.worker, args.source, args.fps, args.seconds)
        return

    parts = set(args.only or ["clips", "live", "open", "memory", "soak"])
    print(f"machine: {machine()}", flush=True)
    lines: list[str] = []
    if "packets" in parts:
        lines += per_packet(args.packets_minutes, args.repeat)
    if "clips" in parts:
        for label, clip in make_clips(args.clip_seconds).items():
            width, height, _ = CLIPS[label]
            lines += compare(f"{label} clip {args.clip_seconds} s", str(clip), f"{width}x{height}", 0.0, args.repeat)
    needs_server = parts & {"live", "open", "memory", "soak"}
    if needs_server:
        server = live_server(size=(1280, 720), fps=25, gop=50, kbps=2000)
        shared = live_server(size=(1280, 720), fps=25, gop=50, kbps=2000, shared=True)
        try:
            if "live" in parts:
                lines += compare(f"720p25 live RTSP {args.live_seconds:g} s", server.url, "1280x720",
                                 args.live_seconds, args.repeat)
            if "open" in parts:
                lines += open_to_first_frame(server.url, args.trials)
            if "memory" in parts:
                lines += rss_per_stream(shared.url, args.streams, settle=6.0)
            if "soak" in parts:
                lines += soak(shared.url, args.soak_seconds)
        finally:
            server.stop()
            shared.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
