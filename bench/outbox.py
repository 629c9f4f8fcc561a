"""Outbox throughput: events/s committed, and delivered to MQTT QoS 1, a local webhook, an S3 store (obs)
and DIS; with the delivering process's CPU time per delivered event (the cost next to webhook's).

Runs each measurement for synchronous=NORMAL and FULL and prints the figures with their ratio to the
targets (>= 2,000 events/s committed, >= 1,000 events/s delivered). A real Mosquitto and a real HTTP
receiver (a minimal ASGI app under uvicorn, in its own process so it does not share our GIL) run on
free loopback ports; the outbox lives on disk under --dir (not tmpfs: fsync must cost what it costs).
The same receiver process answers the obs PUTs (200 with an ETag, as S3 does) and the DIS PutRecords (every
record stored), so the figures are the agent's side, not a store's.

    .venv/bin/python bench/outbox.py [--events 5000] [--rounds 3] [--image-kb 0] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.algorithms.event import Event  # noqa: E402
from agent.outputs.router import ResultRouter  # noqa: E402
from agent.settings import AgentSettings, MqttSettings  # noqa: E402
from agent.sources.frame import FrameInfo  # noqa: E402
from agent.tasks.model import TaskOutput  # noqa: E402
from tests.fixtures.ports import free_port, wait_for_port  # noqa: E402

TARGET_COMMIT = 2000.0
TARGET_DELIVER = 1000.0
TASK_ID = "0123456789abcdef0123456789abcdef"

# The local webhook: a minimal ASGI app under uvicorn in its own process, so that the figure is ours and
# not http.server's (tests/fixtures/webhook.py is built for scripting faults, not for speed).
RECEIVER_APP = """
import json

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["path"].endswith("/records"):  # DIS PutRecords: every record stored
        count = len(json.loads(body)["records"])
        answer = json.dumps({"failed_record_count": 0, "records": [
            {"partition_id": "shardId-0000000000", "sequence_number": str(n)} for n in range(count)]}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
        return
    status = 200 if scope["method"] == "PUT" else 204  # an S3 PUT answers 200 with the object's ETag
    await send({"type": "http.response.start", "status": status, "headers": [(b"etag", b'"0"')]})
    await send({"type": "http.response.body", "body": b""})
"""


@contextmanager
def mosquitto(workdir: Path) -> Iterator[int]:
    port = free_port()
    conf = workdir / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    "max_queued_messages 1000000\nlog_type none\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def webhook_receiver(workdir: Path) -> Iterator[str]:
    port = free_port()
    (workdir / "bench_receiver.py").write_text(RECEIVER_APP)
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "--app-dir", str(workdir), "bench_receiver:app",
                                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                                "--no-access-log"])
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        process.terminate()
        process.wait(10)


def make_event(seq: int, image: bytes) -> Event:
    frame = FrameInfo(0, 9000 + seq, seq / 25, time.time(), 1920, 1080)
    items = ({"detection_id": seq, "category": "person", "confidence": 0.91,
              "bounding_box": {"x": 100, "y": 200, "width": 80, "height": 160}},)
    return Event(196609, 0, frame, items, images={"image": image} if image else {})


def settings_for(state: Path, mode: str, mqtt_port: int, hook: str) -> AgentSettings:
    receiver = hook.rsplit("/", 1)[0]
    keys = {"access_key": "BENCHAK", "secret_key": "bench-secret"}
    return AgentSettings(node_id="bench", state_dir=state, outbox={"synchronous": mode},
                         mqtt=MqttSettings(host="127.0.0.1", port=mqtt_port),
                         obs={"endpoint": receiver, "region": "us-east-1", "addressing": "path", **keys},
                         dis={"endpoint": receiver, "region": "r", "project_id": "bench", **keys})


def wait_drained(router: ResultRouter, sink: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while router.status().sink(sink).backlog > 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sink} backlog not drained")
        time.sleep(0.01)


def measure(state_root: Path, mode: str, mqtt_port: int, hook: str, count: int, image: bytes,
            costs: dict[str, list[float]]) -> dict[str, float]:
    events = [make_event(n, image) for n in range(count)]
    outputs = {
        "webhook": TaskOutput(webhook={"url": hook, "headers": {"X-Token": "bench"}, "data_category": ["image"]}),
        "mqtt": TaskOutput(event_center=True),
        "both": TaskOutput(webhook={"url": hook, "headers": {"X-Token": "bench"}, "data_category": ["image"]},
                           event_center=True),
        "obs": TaskOutput(obs={"bucket": "bench", "path": "events", "data_category": ["image"]}),
        "dis": TaskOutput(dis={"stream_name": "bench", "data_category": ["image"]}),
    }
    results: dict[str, float] = {}

    def fresh_router(name: str) -> ResultRouter:
        state = state_root / f"{mode}-{name}"
        return ResultRouter(settings_for(state, mode, mqtt_port, hook))

    def timed(action: Callable[[], None]) -> float:
        started = time.perf_counter()
        action()
        return time.perf_counter() - started

    # 1. commit: one submit (one transaction) per event, as a pipeline does per frame
    for name in ("webhook", "both"):
        router = fresh_router(f"commit-{name}")
        seconds = timed(lambda r=router, o=outputs[name]: [r.submit(TASK_ID, "bench", o, ["cam"], [e])
                                                           for e in events])
        results[f"commit ({name}), 1 event per submit"] = count / seconds
        router.stop()
    router = fresh_router("commit-batch")
    seconds = timed(lambda: [router.submit(TASK_ID, "bench", outputs["webhook"], ["cam"], events[i:i + 10])
                             for i in range(0, count, 10)])
    results["commit (webhook), 10 events per submit"] = count / seconds
    router.stop()

    # 2. delivery from a full outbox (committed first, then the delivery threads start); CPU time of this
    # process per delivered event (the receivers run elsewhere): what a sink costs the box
    for name in ("mqtt", "webhook", "obs", "dis"):
        router = fresh_router(f"deliver-{name}")
        router.submit(TASK_ID, "bench", outputs[name], ["cam"], events)
        cpu = time.process_time()
        seconds = timed(lambda r=router, n=name: (r.start(), wait_drained(r, n)))
        costs.setdefault(name, []).append((time.process_time() - cpu) / count * 1e6)
        results[f"delivered to {name} (backlog)"] = count / seconds
        router.stop()

    # 3. end to end: submit one event at a time while both sinks deliver
    router = fresh_router("e2e")
    router.start()

    def flow() -> None:
        for event in events:
            router.submit(TASK_ID, "bench", outputs["both"], ["cam"], [event])
        wait_drained(router, "mqtt")
        wait_drained(router, "webhook")

    results["end to end, both sinks (submit → last delivery)"] = count / timed(flow)
    router.stop()
    return results


def fsync_ms(directory: Path, count: int = 50) -> float:
    """Median time of one 4 KiB write + fdatasync in ``directory``: what a FULL commit must wait for."""
    times = []
    with tempfile.NamedTemporaryFile(dir=directory) as handle:
        for _ in range(count):
            started = time.perf_counter()
            handle.write(b"x" * 4096)
            handle.flush()
            os.fdatasync(handle.fileno())
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3, help="NORMAL and FULL alternate; the median is shown")
    parser.add_argument("--image-kb", type=int, default=0, help="JPEG size sent to the webhook (0: none)")
    parser.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where the outbox files go")
    args = parser.parse_args()
    image = bytes(range(256)) * (args.image_kb * 4)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print(f"events per measurement: {args.events}, rounds: {args.rounds}, image: {args.image_kb} KiB, "
          f"outbox dir: {args.dir}, load average before: {os.getloadavg()[0]:.1f}, "
          f"write+fdatasync: {fsync_ms(args.dir):.2f} ms")
    runs: dict[str, dict[str, list[float]]] = {"NORMAL": {}, "FULL": {}}
    costs: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-outbox-") as tmp, \
            mosquitto(Path(tmp)) as mqtt_port, webhook_receiver(Path(tmp)) as hook:
        for round_no in range(args.rounds):
            for mode in ("NORMAL", "FULL"):
                state = Path(tmp) / f"round{round_no}"
                for name, rate in measure(state, mode, mqtt_port, hook, args.events, image, costs).items():
                    runs[mode].setdefault(name, []).append(rate)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    width = max(len(name) for name in runs["NORMAL"])
    print(f"\nevents/s, median of {args.rounds} (best in brackets)")
    print(f"{'measurement':<{width}}  {'NORMAL':>14} {'FULL':>14}  {'FULL÷NORMAL':>11}  "
          f"{'NORMAL÷target':>13} {'FULL÷target':>11}")
    for name in runs["NORMAL"]:
        target = TARGET_COMMIT if name.startswith("commit") else TARGET_DELIVER
        normal, full = statistics.median(runs["NORMAL"][name]), statistics.median(runs["FULL"][name])
        cells = [f"{statistics.median(runs[mode][name]):6.0f} ({max(runs[mode][name]):5.0f})"
                 for mode in ("NORMAL", "FULL")]
        print(f"{name:<{width}}  {cells[0]:>14} {cells[1]:>14}  {full / normal:11.2f}  "
              f"{normal / target:13.2f} {full / target:11.2f}")
    print(f"\ntargets: commit >= {TARGET_COMMIT:.0f}/s, delivery >= {TARGET_DELIVER:.0f}/s")
    webhook_cost = statistics.median(costs["webhook"])
    print("\nCPU of the agent process per delivered event, median over both modes (µs; ÷ webhook)")
    for name, values in costs.items():
        print(f"  {name:<8} {statistics.median(values):7.0f}  {statistics.median(values) / webhook_cost:5.2f}")


if __name__ == "__main__":
    main()
