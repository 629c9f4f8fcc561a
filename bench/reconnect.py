"""A camera that comes back: how long from its RTSP server answering again to the first frame?

Issue 16 point 5. One real GStreamer RTSP server (``tests/servers/rtsp_server.py``, a live 320x240
H.264 pattern) on a free loopback port and one ``VideoStream`` with the agent's defaults
(``STREAM_RECONNECT`` backoff, a port probe every second while down). The server is killed and
started again on the same port, once per outage length; for each restart the bench measures the time
from the server answering (the first TCP connection it accepts, polled every 5 ms by the bench) to
the first sampled frame the stream hands its consumer, split at the stream's full attempt (probe
wait, then open → first frame), and counts the full attempts (resolves) while the server was down.
The outages' fractional parts differ so that the restarts fall at different points of the 1 s probe
cycle (whole-second outages would hit the same point every time).

    .venv/bin/python bench/reconnect.py            # outages 0.5 1.3 2.7 4.1 6.9 9.6 14.2 21.8 33.4 45.05 s
    .venv/bin/python bench/reconnect.py --outages 2.5 40.2 2.9 40.6
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent.settings import StreamSettings
from agent.sources.stream import StreamState, VideoStream
from agent.sources.target import StreamTarget
from tests.fixtures.ports import free_port
from tests.fixtures.rtsp import RtspServer

DEFAULT_OUTAGES = [0.5, 1.3, 2.7, 4.1, 6.9, 9.6, 14.2, 21.8, 33.4, 45.05]
ANSWER_POLL_S = 0.005
FRAME_TIMEOUT_S = 90.0


class FirstFrame:
    """Takes every frame the stream hands on and remembers when the first one after ``arm()`` came."""

    def __init__(self, stream: VideoStream, wakeup: threading.Event) -> None:
        self._stream = stream
        self._wakeup = wakeup
        self._armed = threading.Event()
        self._seen = threading.Event()
        self.at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-consumer", daemon=True)
        self._thread.start()

    def arm(self) -> None:
        self._seen.clear()
        self._armed.set()

    def wait(self, timeout: float) -> bool:
        return self._seen.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._wakeup.set()
        self._thread.join(2)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wakeup.wait(0.5)
            self._wakeup.clear()
            if self._stream.take() is not None and self._armed.is_set():
                self.at = time.monotonic()
                self._armed.clear()
                self._seen.set()


def record_answer(port: int, answers: list[float], deadline_s: float = 30.0) -> None:
    """Append the monotonic time of the first TCP connection 127.0.0.1:port accepts (polled every 5 ms)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                answers.append(time.monotonic())
                return
        except OSError:
            time.sleep(ANSWER_POLL_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outages", type=float, nargs="+", default=DEFAULT_OUTAGES,
                        help="outage lengths in seconds, one restart each")
    args = parser.parse_args()

    server = RtspServer(port=free_port())
    server.start()
    resolved_at: list[float] = []

    def resolve() -> StreamTarget:
        resolved_at.append(time.monotonic())
        return StreamTarget(server.url)

    wakeup = threading.Event()
    stream = VideoStream(0, resolve, StreamSettings(), 5.0, wakeup=wakeup, name="bench-camera")
    consumer = FirstFrame(stream, wakeup)
    stream.start()
    consumer.arm()
    if not consumer.wait(30):
        raise SystemExit("no first frame from the RTSP server")
    rows: list[tuple[float, float, float, int, int]] = []
    try:
        for outage in args.outages:
            time.sleep(2.0)  # frames flow for a while between outages
            server.stop()
            down_at = time.monotonic()
            resolves_at_kill, probes_at_kill = len(resolved_at), stream.status().probes
            while stream.status().state is StreamState.RUNNING and time.monotonic() - down_at < 30:
                time.sleep(0.01)
            time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
            consumer.arm()
            attempts_down = len(resolved_at) - resolves_at_kill  # before the restart: against a dead port
            result: list[float] = []
            poller = threading.Thread(target=record_answer, args=(server.port, result), name="bench-answer",
                                      daemon=True)
            poller.start()
            server.start()
            poller.join(35)
            if not consumer.wait(FRAME_TIMEOUT_S) or not result:
                raise SystemExit(f"no frame within {FRAME_TIMEOUT_S} s of restarting after a {outage} s outage")
            latency = consumer.at - result[0]
            attempt = resolved_at[-1] - result[0]
            probes = stream.status().probes - probes_at_kill
            rows.append((outage, latency, attempt, attempts_down, probes))
            print(f"outage {outage:5.2f} s: first frame {latency:5.2f} s after the server answered "
                  f"(full attempt after {attempt:4.2f} s; {attempts_down} full attempts and {probes} probes "
                  f"while down)", flush=True)
    finally:
        consumer.close()
        stream.stop()
        server.stop()
    latencies = [row[1] for row in rows]
    attempts = [row[2] for row in rows]
    print(f"\n{len(rows)} restarts: server answers → first frame median {statistics.median(latencies):.2f} s, "
          f"max {max(latencies):.2f} s (→ full attempt: median {statistics.median(attempts):.2f} s, "
          f"max {max(attempts):.2f} s); full attempts while down: {', '.join(str(row[3]) for row in rows)}")


if __name__ == "__main__":
    main()
