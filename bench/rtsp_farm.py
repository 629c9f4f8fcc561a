#!/usr/bin/python3
"""A farm of loopback RTSP cameras for the capacity bench: one mp4 served on many mount points.

Two halves in one file:

- run as a script with Debian's ``/usr/bin/python3`` (it needs ``gi`` from python3-gi), it is one
  GStreamer RTSP server process serving ``--file`` on ``/cam0 … /cam{N-1}``, not re-encoded
  (``filesrc ! qtdemux ! h264parse ! rtph264pay``) and paced in real time by the server's clock. Every
  client gets its own pipeline (unshared media), so each connection starts at the beginning of the
  file like a camera that was just connected. Prints ``READY <port>`` once it listens.
- imported from the project's virtualenv, ``RtspFarm`` starts a few such processes on free loopback
  ports (spreading the mounts over them) and reads their CPU time from ``/proc``.

    /usr/bin/python3 bench/rtsp_farm.py --file bench/out/clip.mp4 --mounts 32 [--port 0]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
READY_TIMEOUT_S = 20.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as handle:
        raw = handle.read().decode()
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


def proc_rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as handle:
        return int(handle.read().split()[1]) * PAGE_SIZE


@dataclass
class RtspFarm:
    """``processes`` GStreamer RTSP servers sharing ``mounts`` mount points of one file."""

    file: Path
    mounts: int
    processes: int = 2
    _procs: list[subprocess.Popen[str]] = field(default_factory=list)
    _ports: list[int] = field(default_factory=list)

    def urls(self) -> list[str]:
        """Mount ``i`` lives on server ``i % processes``."""
        return [f"rtsp://127.0.0.1:{self._ports[i % len(self._ports)]}/cam{i // len(self._ports)}"
                for i in range(self.mounts)]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def cpu_seconds(self) -> float:
        return sum(proc_cpu_seconds(pid) for pid in self.pids)

    def rss_bytes(self) -> int:
        return sum(proc_rss_bytes(pid) for pid in self.pids)

    def start(self) -> None:
        count = max(1, min(self.processes, self.mounts))
        per_process = -(-self.mounts // count)
        for _ in range(count):
            process = subprocess.Popen(
                [SYSTEM_PYTHON, str(Path(__file__).resolve()), "--file", str(self.file),
                 "--mounts", str(per_process), "--port", "0"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )
            self._procs.append(process)
            self._ports.append(self._wait_ready(process))

    @staticmethod
    def _wait_ready(process: subprocess.Popen[str]) -> int:
        assert process.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"RTSP farm server exited with {process.returncode}")
            ready, _, _ = select.select([process.stdout], [], [], 0.2)
            if ready:
                line = process.stdout.readline()
                if line.startswith("READY "):
                    return int(line.split()[1])
        process.kill()
        raise TimeoutError(f"RTSP farm server not ready after {READY_TIMEOUT_S} s")

    def stop(self) -> None:
        for process in self._procs:
            if process.poll() is None:
                process.terminate()
        for process in self._procs:
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(5)
            for pipe in (process.stdin, process.stdout):
                if pipe is not None:
                    pipe.close()
        self._procs.clear()
        self._ports.clear()


def serve(file: Path, mounts: int, port: str) -> None:
    """The server process: GStreamer's RTSP server with ``mounts`` unshared file factories."""
    import gi  # type: ignore[import-not-found]

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer  # type: ignore[import-not-found]

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    server.set_backlog(256)
    launch = f"( filesrc location={file} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    points = server.get_mount_points()
    for index in range(mounts):
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(False)
        points.add_factory(f"/cam{index}", factory)
    if not server.attach(None):
        sys.exit(f"cannot listen on port {port}")
    print(f"READY {server.get_bound_port()}", flush=True)
    loop = GLib.MainLoop()
    # the launcher holds our stdin: when it goes away (even killed), so do we — no orphaned servers
    GLib.io_add_watch(GLib.IOChannel.unix_new(sys.stdin.fileno()), GLib.PRIORITY_DEFAULT,
                      GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
                      lambda *_: loop.quit() or False)
    loop.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, required=True, help="H.264 mp4 to serve (not re-encoded)")
    parser.add_argument("--mounts", type=int, default=1, help="mount points /cam0 … /cam{N-1}")
    parser.add_argument("--port", default="0", help="0 picks a free port (printed on the READY line)")
    args = parser.parse_args()
    serve(args.file.resolve(), args.mounts, args.port)


if __name__ == "__main__":
    main()
