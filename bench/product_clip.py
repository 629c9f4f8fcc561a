"""The product on one clip, as a user runs it, against the usual ways to read the same clip (issue 12).

    .venv/bin/python -m bench.product_clip                   # 5 fps and 0.5 fps, one round
    .venv/bin/python -m bench.product_clip --rounds 3        # repeat (the box is shared: see the load)
    .venv/bin/python -m bench.product_clip --fps 0.5 --profile py-spy   # also a py-spy profile of the agent

Each round, for each rate F:

  agent        a real ``edge-agent run`` process (config with ``media_roots`` naming the clip's folder), a
               task created through its REST API on a 60 s 720p25 H.264 clip (2 s GOP, no B-frames,
               ``testsrc2`` + noise) with ``bench-read-frame`` (bench/read_frame_plugin: reads every sampled
               frame as BGR, reports nothing) at ``fps = F``. CPU = user + system of the agent's whole
               process tree (every process whose ppid chain leads to it, plus what it reaped) from just
               before the create to the first poll that shows SUCCEEDED (polled from 2 s before the
               clip's end on: a poll costs the agent ~3 ms). Files play at their native rate (the
               agent's default): the run takes the clip's 60 s, like the user's.
  cv2-read     ``cv2.VideoCapture.read()`` every frame, keeping every 25/F-th: the plain "cv2 read loop"
               the issue names (every frame is also converted to BGR).
  cv2-grab     ``cv2.VideoCapture``: ``grab()`` every frame, ``retrieve()`` (decode → BGR) only every
               25/F-th one — what a competent user writes to sample at F: the strongest peer.
  ffmpeg-pipe  ``ffmpeg -i clip -r F -f rawvideo -pix_fmt bgr24 pipe:`` read into numpy (Frigate's way).
  pyav-floor   not a peer: the agent's decoding alone (bare PyAV, single-threaded or keyframes only, each
               GOP decoded up to its last sampled frame, sampled frames converted by ``Frame.bgr`` with
               OpenCV on one thread, as in a worker): the least the agent's design can cost.

The peers run as fast as they can (no pacing: that is their best case), each in a fresh process, in
the same minute as the agent. Before the first measurement a short task warms the agent up (it
imports PyAV when its first stream starts; ``--cold`` measures that too). Printed: the ratio agent /
best peer against the targets (≤ 0.85× at 5 fps, ≤ 0.15× at 0.5 fps), once against every peer and once
against the pair the issue names (cv2 read loop, ffmpeg pipe), and the load average before and after
each measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.agent_process import BenchAgent  # noqa: E402
from bench.clips import OUT, Clip, ensure  # noqa: E402
from bench.proctree import tree_cpu  # noqa: E402

PLUGIN = ROOT / "bench" / "read_frame_plugin"
PLUGIN_SITE = OUT / "read_frame_plugin_site"
WIDTH, HEIGHT, SOURCE_FPS = 1280, 720, 25
# like a camera's main stream: 2 s GOP, no B-frames, Main profile, 2 Mbit/s, sensor noise
CLIP = Clip(WIDTH, HEIGHT, seconds=60, gop=50, bitrate="2M", fps=SOURCE_FPS, profile="main", maxrate="2M", noise=5)
TARGETS = {5.0: 0.85, 0.5: 0.15}
SERVICE = "bench-read-frame"


# --- set-up ------------------------------------------------------------------------------------------
def ensure_plugin() -> Path:
    """The bench plugin installed into a folder of its own (put on the agent's PYTHONPATH only).

    Installed with pip, like a user's plugin, but not into the shared venv, so other people's agents
    and tests never see a ``bench-read-frame`` algorithm.
    """
    marker = PLUGIN_SITE / ".source-mtime"
    newest = str(max(p.stat().st_mtime for p in PLUGIN.rglob("*") if p.is_file()))
    if marker.exists() and marker.read_text() == newest:
        return PLUGIN_SITE
    shutil.rmtree(PLUGIN_SITE, ignore_errors=True)
    with tempfile.TemporaryDirectory() as build:  # setuptools writes build/ and *.egg-info next to the source
        source = Path(build) / "plugin"
        shutil.copytree(PLUGIN, source)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                        "--target", str(PLUGIN_SITE), str(source)], check=True)
    marker.write_text(newest)
    return PLUGIN_SITE


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# --- the agent ---------------------------------------------------------------------------------------------
def task_body(clip: Path, fps: float) -> dict[str, Any]:
    return {
        "name": f"clip-{round(fps * 10)}dfps",
        "input": {"type": "url", "data": [{"url": str(clip), "index": 0}]},
        # nothing is ever reported; an output is mandatory
        "output": {"webhook": {"url": "http://127.0.0.1:9/unused", "headers": {"X-Bench": "1"}}},
        "config": {"common": {"fps": fps}},
        "service_version": "1.0",
    }


def run_agent(agent: BenchAgent, clip: Path, fps: float, *, poll_s: float, profile: str | None,
              profile_out: Path | None) -> dict[str, Any]:
    """One task from create to SUCCEEDED; the agent's tree CPU over exactly that span."""
    spy: subprocess.Popen[bytes] | None = None
    if profile == "py-spy":
        assert profile_out is not None
        spy = subprocess.Popen([shutil.which("py-spy") or "py-spy", "record", "--pid", str(agent.pid),
                                "--subprocesses",  # the worker processes decode; the main process does not
                                "--rate", "200", "--nonblocking", "--threads", "--format", "raw",
                                "--output", str(profile_out)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached before the task starts
    cpu0, wall0 = tree_cpu(agent.pid), time.monotonic()
    task_id = agent.create(SERVICE, task_body(clip, fps))
    # each poll is a request the agent serves (~3 ms of its CPU): look only when the end is near
    time.sleep(CLIP.seconds - 2)
    while True:
        task = agent.task(task_id)
        if task["state"] == "SUCCEEDED":
            break
        if task["state"] in ("FAILED", "ABNORMAL") or time.monotonic() - wall0 > 4 * CLIP.seconds:
            raise RuntimeError(f"task {task['state']}: {task.get('status')}")
        time.sleep(poll_s)
    cpu, wall = tree_cpu(agent.pid) - cpu0, time.monotonic() - wall0
    if spy is not None:
        spy.send_signal(2)  # SIGINT: py-spy writes its file and exits
        spy.wait(30)
    inputs = task.get("inputs") or [{}]
    agent.delete(task_id)
    return {"cpu_s": round(cpu, 3), "wall_s": round(wall, 2), "decode_mode": inputs[0].get("decode_mode")}


def warm_up(agent: BenchAgent, clip: Path) -> None:
    """One short task first: the agent imports its decoder (PyAV) when the first stream starts (about
    0.1–0.2 s of CPU, once per process), which is start-up, not the task's work (the peers' imports are
    not measured either)."""
    task_id = agent.create(SERVICE, task_body(clip, 0.5))
    deadline = time.monotonic() + 30
    while agent.task(task_id)["state"] != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    agent.delete(task_id)
    time.sleep(2.0)


def idle_cpu(agent: BenchAgent, seconds: float) -> float:
    """The agent's tree CPU over ``seconds`` with no task: what pacing a file for that long costs at least."""
    cpu0 = tree_cpu(agent.pid)
    time.sleep(seconds)
    return tree_cpu(agent.pid) - cpu0


# --- the peers: each in a fresh process, printing one JSON line ----------------------------------------
def peer_cv2_read(clip: str, fps: float) -> int:
    import cv2

    step = max(1, round(SOURCE_FPS / fps))
    capture = cv2.VideoCapture(clip, cv2.CAP_FFMPEG)
    frames = index = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if index % step == 0:
            frames += int(image.size > 0)
        index += 1
    capture.release()
    return frames


def peer_cv2_grab(clip: str, fps: float) -> int:
    import cv2

    step = max(1, round(SOURCE_FPS / fps))
    capture = cv2.VideoCapture(clip, cv2.CAP_FFMPEG)
    frames = index = 0
    while capture.grab():
        if index % step == 0:
            ok, image = capture.retrieve()
            frames += int(ok and image.size > 0)
        index += 1
    capture.release()
    return frames


def peer_ffmpeg_pipe(clip: str, fps: float) -> int:
    import numpy as np

    size = WIDTH * HEIGHT * 3
    frames = 0
    with subprocess.Popen(["ffmpeg", "-v", "error", "-i", clip, "-r", f"{fps:g}", "-f", "rawvideo",
                           "-pix_fmt", "bgr24", "pipe:"], stdout=subprocess.PIPE) as process:
        assert process.stdout is not None
        while len(data := process.stdout.read(size)) == size:
            image = np.frombuffer(data, np.uint8).reshape(HEIGHT, WIDTH, 3)
            frames += int(image.size > 0)
    return frames


def floor_pyav(clip: str, fps: float) -> int:
    """Not a peer: the agent's own decoding with nothing around it, the floor its design can reach.

    A bare PyAV loop decoding as the agent would (single-threaded; keyframes only when the rate
    allows), converting every sampled frame with the agent's ``Frame.bgr``.
    """
    import av
    import cv2

    from agent.sources.frame import Frame, FrameInfo

    cv2.setNumThreads(1)
    step = max(1, round(SOURCE_FPS / fps))
    keyframes_only = fps * 2.0 <= 1.0  # the clip's 2 s GOP
    last_wanted_in_gop = (CLIP.gop - 1) // step * step  # the frames after it are needed by no sampled one
    frames = index = 0
    with av.open(clip) as container:
        stream = container.streams.video[0]
        decoder = stream.codec_context
        decoder.thread_count = 1
        if keyframes_only:
            decoder.skip_frame = "NONKEY"
        for packet in container.demux(stream):
            if keyframes_only and not packet.is_keyframe:
                continue
            if not keyframes_only and index % CLIP.gop > last_wanted_in_gop:
                index += 1
                continue
            for frame in decoder.decode(packet):
                if keyframes_only or index % step == 0:
                    info = FrameInfo(0, frame.pts, None, 0.0, frame.width, frame.height)
                    frames += int(Frame(info, frame).bgr.size > 0)
                index += 1
    return frames


PEERS = {"cv2-read": peer_cv2_read, "cv2-grab": peer_cv2_grab, "ffmpeg-pipe": peer_ffmpeg_pipe}
ISSUE_PEERS = ("cv2-read", "ffmpeg-pipe")  # "the better of a cv2 read loop and ffmpeg -r F -f rawvideo"
REFERENCES = {"pyav-floor": floor_pyav}


def peer_main(name: str, clip: str, fps: float) -> None:
    import resource

    import av  # noqa: F401  (imports are start-up, not work)
    import cv2  # noqa: F401
    import numpy  # noqa: F401

    import agent.sources.frame  # noqa: F401

    def cpu() -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime

    cpu0, wall0 = cpu(), time.monotonic()
    frames = {**PEERS, **REFERENCES}[name](clip, fps)
    print(json.dumps({"cpu_s": round(cpu() - cpu0, 3), "wall_s": round(time.monotonic() - wall0, 2),
                      "frames": frames}), flush=True)


def run_peer(name: str, clip: Path, fps: float) -> dict[str, Any]:
    output = subprocess.run([sys.executable, "-m", "bench.product_clip", "--peer", name, "--clip", str(clip),
                             "--fps", str(fps)], check=True, capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


# --- main ------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fps", type=float, action="append", help="sampling rates (default: 5 and 0.5)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between task polls near the clip's end")
    parser.add_argument("--idle-seconds", type=float, default=0.0,
                        help="also measure the idle agent's CPU over this long (0: skip)")
    parser.add_argument("--profile", choices=["py-spy"], help="record the agent with py-spy (bench/out/)")
    parser.add_argument("--cold", action="store_true",
                        help="no warm-up task: the first measured task also pays the decoder's import")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="run the agent from this checkout (e.g. `git archive REV agent | tar -x -C DIR`)")
    parser.add_argument("--peer", choices=sorted([*PEERS, *REFERENCES]), help=argparse.SUPPRESS)
    parser.add_argument("--clip", help=argparse.SUPPRESS)
    args = parser.parse_args()
    rates = args.fps or [5.0, 0.5]
    if args.peer:
        peer_main(args.peer, args.clip, rates[0])
        return

    clip, plugin_site = ensure(CLIP), ensure_plugin()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    code = commit if args.code.resolve() == ROOT else str(args.code)
    print(f"clip {clip.name}, agent code {code}, {os.cpu_count()} CPUs", flush=True)
    lines = []
    # the clip's folder is a media root: files play only from there
    with BenchAgent(top=f'media_roots = ["{clip.parent}"]\n', code=args.code.resolve(),
                    python_path=[plugin_site]) as agent:
        time.sleep(3.0)  # start-up settles (imports, first report) before anything is measured
        if not args.cold:
            warm_up(agent, clip)
        if args.idle_seconds:
            load = loadavg()
            idle = idle_cpu(agent, args.idle_seconds)
            print(f"idle agent: {idle:.2f} s CPU in {args.idle_seconds:g} s (load {load:.1f})", flush=True)
        for round_ in range(1, args.rounds + 1):
            for fps in rates:
                load0 = loadavg()
                out = OUT / f"product_clip_{fps:g}fps_{round_}.pyspy.txt" if args.profile else None
                mine = run_agent(agent, clip, fps, poll_s=args.poll, profile=args.profile, profile_out=out)
                peers = {name: run_peer(name, clip, fps) for name in PEERS}
                floor = run_peer("pyav-floor", clip, fps)
                load1 = loadavg()
                best = min(peers, key=lambda name: peers[name]["cpu_s"])  # the floor is no peer
                ratio = mine["cpu_s"] / peers[best]["cpu_s"]
                issue_ratio = mine["cpu_s"] / min(peers[name]["cpu_s"] for name in ISSUE_PEERS)
                target = TARGETS.get(fps)
                verdict = "" if target is None else ("met" if ratio <= target else "MISSED")
                issue_verdict = "" if target is None else ("met" if issue_ratio <= target else "MISSED")
                print(f"  {fps:g} fps round {round_}: agent {mine}", flush=True)
                for name, peer in {**peers, "pyav-floor": floor}.items():
                    print(f"  {fps:g} fps round {round_}: {name} {peer}", flush=True)
                line = (f"| {time.strftime('%H:%M', time.gmtime())} | {fps:g} | {mine['cpu_s']:.2f} "
                        f"({mine['wall_s']:.0f} s, {mine['decode_mode']}) | "
                        f"{peers['cv2-read']['cpu_s']:.2f} | {peers['cv2-grab']['cpu_s']:.2f} | "
                        f"{peers['ffmpeg-pipe']['cpu_s']:.2f} | "
                        f"{floor['cpu_s']:.2f} ({floor['cpu_s'] / peers[best]['cpu_s']:.2f}×) | "
                        f"**{ratio:.2f}×** {verdict} | {issue_ratio:.2f}× {issue_verdict} | "
                        f"≤ {target if target is not None else '—'}× | {load0:.1f} → {load1:.1f} |")
                print(line, flush=True)
                lines.append(line)
    print("| time UTC | fps | agent CPU s | cv2-read s | cv2-grab s | ffmpeg-pipe s | PyAV floor s (/ best peer) "
          "| agent / best peer | agent / better of cv2-read, ffmpeg-pipe | target | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
