"""``edge-agent demo``: the whole agent, end to end, on one box with nothing else installed.

1. A synthetic camera scene (agent.demo_scene) is written with PyAV into a temporary media root.
2. A complete agent (the same AgentRuntime ``edge-agent run`` builds) starts in this process: REST API
   on a free loopback port with a generated token, no broker, a temporary state directory.
3. The task is created through that REST API, like any client would: a ``url`` input naming the clip,
   the intrusion algorithm with the scene's zone as its ROI, and a webhook output to a receiver that
   this process runs on another free loopback port.

The clip is a local file under ``media_roots`` rather than an HTTP or RTSP stream: files are played at
their native rate, so the pipeline sees it as a live camera, while the demo needs no streaming server
(RTSP serving would need GStreamer or ffmpeg) and ends by itself when the clip does (the task SUCCEEDS).

Events are printed as the receiver gets them; at the end a summary (frames decoded, events, capture →
delivery latency) and a JPEG of one event with its boxes and the zone drawn on the frame it was found in.
"""

from __future__ import annotations

import json
import secrets as random_secrets
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TextIO

import cv2
import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from agent.demo_scene import MAX_SECONDS, MIN_SECONDS, Scene, frame_at, render_scene

PROJECT = "demo"
SERVICE = "intrusion-detection"
_POLL_S = 0.5
_FINISHED = {"SUCCEEDED"}
_BROKEN = {"FAILED", "START_FAILED", "ABNORMAL"}


@dataclass(frozen=True)
class DemoOptions:
    seconds: float = 12.0
    keep: bool = False  # keep the state directory (tasks.db, outbox.db, the clip) for a look afterwards
    output: Path | None = None  # where the annotated JPEG goes; default: a new temporary folder


@dataclass(frozen=True)
class Delivery:
    received_at: float  # epoch seconds
    envelope: dict[str, Any]
    authorized: bool  # the webhook's header arrived as configured

    @property
    def latency_s(self) -> float:
        return self.received_at - float(self.envelope["frame"]["captured_at_ms"]) / 1000.0


@dataclass
class StreamFigures:
    """The last /metrics figures of the demo task (kept after its pipeline retires)."""

    decoded: int = 0
    sampled: int = 0
    decode_errors: int = 0
    fps_in: float = 0.0
    state: str = "not_started"
    commit_latencies: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count)


# the local sink -------------------------------------------------------------------------------------
class _Receiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, expected_auth: str, on_delivery: Callable[[Delivery], None]) -> None:
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)
        self.expected_auth = expected_auth
        self.on_delivery = on_delivery


class _ReceiverHandler(BaseHTTPRequestHandler):
    server: _Receiver

    def log_message(self, format: str, *args: Any) -> None:  # the demo prints events, not access lines
        return

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        received = time.time()
        try:
            envelope = json.loads(body)
        except ValueError:
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        authorized = self.headers.get("Authorization") == self.server.expected_auth
        self.send_response(200 if authorized else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()
        if authorized:
            self.server.on_delivery(Delivery(received, envelope, authorized))


class EventSink:
    """The webhook receiver of the demo, in a named thread; calls ``on_delivery`` for every event."""

    def __init__(self, on_delivery: Callable[[Delivery], None]) -> None:
        self.auth = f"Bearer {random_secrets.token_urlsafe(16)}"
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._on_delivery = on_delivery
        self._server = _Receiver(self.auth, self._record)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="demo-webhook", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/events"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def _record(self, delivery: Delivery) -> None:
        with self._lock:
            self._deliveries.append(delivery)
        self._on_delivery(delivery)


# output ----------------------------------------------------------------------------------------------
class Progress:
    """One rewritten status line on a terminal; a line every few seconds otherwise (logs stay readable)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._last = 0.0
        self._open = False

    def say(self, text: str) -> None:
        self.clear()
        print(text, file=self._stream, flush=True)

    def update(self, text: str) -> None:
        if self._tty:
            self._stream.write("\r\033[K" + text)
            self._stream.flush()
            self._open = True
        elif time.monotonic() - self._last >= 3.0:
            self._last = time.monotonic()
            print(text, file=self._stream, flush=True)

    def clear(self) -> None:
        if self._open:
            self._stream.write("\r\033[K")
            self._stream.flush()
            self._open = False


def describe_event(delivery: Delivery, scene: Scene, started: float) -> str:
    envelope = delivery.envelope
    boxes = [item.get("bounding_box", {}) for item in envelope["data"]["event_set"]]
    where = ", ".join(f"{b.get('w')}x{b.get('h')} at ({b.get('x')},{b.get('y')})" for b in boxes)
    at = envelope["frame"]["captured_at_ms"] / 1000.0 - started
    return (f"event  t={at:5.1f} s  intrusion: {len(boxes)} object(s) in the zone: {where}  "
            f"(delivered {delivery.latency_s * 1000:.0f} ms after capture)")


def annotate(image: np.ndarray[Any, Any], scene: Scene, delivery: Delivery) -> np.ndarray[Any, Any]:
    """The event's frame with the zone shaded and outlined, each object boxed and numbered."""
    out = image.copy()
    zone = scene.zone_pixels()
    shade = out.copy()
    cv2.fillPoly(shade, [zone], (0, 0, 255))
    out = cv2.addWeighted(shade, 0.25, out, 0.75, 0)
    cv2.polylines(out, [zone], isClosed=True, color=(0, 0, 255), thickness=2)
    cv2.putText(out, "restricted zone", (int(zone[0][0]) + 4, int(zone[0][1]) - 6), cv2.FONT_HERSHEY_SIMPLEX,
                0.5, (0, 0, 255), 1, cv2.LINE_AA)
    for item in delivery.envelope["data"]["event_set"]:
        box = item["bounding_box"]
        x, y, w, h = int(box["x"]), int(box["y"]), int(box["w"]), int(box["h"])
        cv2.rectangle(out, (x, y), (x + w, y + h), (0, 255, 0), 2)
        cv2.putText(out, f"object {item.get('detection_id', '?')}", (x, max(12, y - 5)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, (0, 255, 0), 1, cv2.LINE_AA)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(delivery.envelope["frame"]["captured_at_ms"] / 1000))
    cv2.putText(out, f"intrusion  {stamp}", (8, scene.height - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (255, 255, 255), 1, cv2.LINE_AA)
    return out


# the agent ---------------------------------------------------------------------------------------------
def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _task_body(scene: Scene, sink: EventSink) -> dict[str, Any]:
    return {
        "name": "demo-intrusion",
        "description": "edge-agent demo: a synthetic camera, objects entering a restricted zone",
        "input": {"type": "url", "data": [{"url": str(scene.path), "index": 0, "stream_name": "demo-camera"}]},
        "output": {"webhook": {"url": sink.url, "headers": {"Authorization": sink.auth}}},
        "config": {"common": {"rois": [[list(point) for point in scene.zone]], "fps": 5, "min_area": 0.004,
                              "cooldown_s": 30}},
        "service_version": "1.0",
    }


def _read_figures(text: str, task_id: str, figures: StreamFigures) -> None:
    commit: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("task_id") != task_id:
                continue
            name = sample.name
            if name == "edge_agent_input_frames_decoded_total":
                figures.decoded = int(sample.value)
            elif name == "edge_agent_input_frames_sampled_total":
                figures.sampled = int(sample.value)
            elif name == "edge_agent_input_decode_errors_total":
                figures.decode_errors = int(sample.value)
            elif name == "edge_agent_input_fps_in":
                figures.fps_in = sample.value
            elif name == "edge_agent_input_state" and sample.value == 1.0:
                figures.state = sample.labels["state"]
            elif name == "edge_agent_task_capture_to_commit_seconds_bucket":
                commit.append((float(sample.labels["le"]), sample.value))
    if commit:
        figures.commit_latencies = sorted(commit)


def _quantile_bound(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """The smallest histogram bound below which a ``q`` share of observations fall."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    total = cumulative[-1][1]
    return next(bound for bound, count in cumulative if count >= q * total)


def run_demo(options: DemoOptions, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the demo; 0 when events were delivered and the annotated JPEG written."""
    from agent.logging_setup import configure_logging
    from agent.runtime.app import AgentRuntime
    from agent.settings import AgentSettings

    if not MIN_SECONDS <= options.seconds <= MAX_SECONDS:
        print(f"edge-agent demo: --seconds must be {MIN_SECONDS:g} to {MAX_SECONDS:g}", file=err)
        return 2
    progress = Progress(err)
    work = Path(tempfile.mkdtemp(prefix="edge-agent-demo-"))
    output = options.output or Path(tempfile.mkdtemp(prefix="edge-agent-demo-output-"))
    runtime: AgentRuntime | None = None
    sink: EventSink | None = None
    api: httpx.Client | None = None
    try:
        progress.say(f"[1/4] drawing a {options.seconds:g} s synthetic camera scene with PyAV …")
        began = time.monotonic()
        scene = render_scene(work / "media" / "yard.mp4", options.seconds)
        progress.say(f"      {scene.frames} frames, {scene.width}x{scene.height} @ {scene.fps} fps, {scene.codec},"
                     f" in {time.monotonic() - began:.1f} s")

        configure_logging("WARNING", "text", stream=err)  # the agent's own warnings stay visible
        settings = AgentSettings(
            node_id="demo", state_dir=work / "state", media_roots=[work / "media"], mqtt=None,
            api={"listen": f"127.0.0.1:{_free_loopback_port()}", "token": random_secrets.token_urlsafe(24)},
        )
        token = settings.api.resolved_token() or ""
        progress.say(f"[2/4] starting the agent: REST API on http://{settings.api.listen}, state in {work}")
        runtime = AgentRuntime(settings, realtime_files=True)
        runtime.start()

        t0 = time.time()
        printed = threading.Lock()

        def show(delivery: Delivery) -> None:
            with printed:
                progress.clear()
                print(describe_event(delivery, scene, t0), file=out, flush=True)

        sink = EventSink(show)
        sink.start()
        api = httpx.Client(base_url=f"http://{settings.api.listen}", headers={"X-Auth-Token": token}, timeout=10)
        reply = api.post(f"/v2/{PROJECT}/services/{SERVICE}/tasks", json=_task_body(scene, sink))
        if reply.status_code != 200:
            print(f"edge-agent demo: the agent refused the task: {reply.text}", file=err)
            return 1
        task_id = reply.json()["tasks"][0]["id"]
        t0 = time.time()
        progress.say(f"[3/4] task {task_id} created through POST /v2/{PROJECT}/services/{SERVICE}/tasks;"
                     f" events below as the webhook receives them")

        figures = StreamFigures()
        state = "STARTING"
        deadline = time.monotonic() + scene.seconds + 60.0
        while time.monotonic() < deadline:
            state = api.get(f"/v2/{PROJECT}/tasks/{task_id}").json().get("state", state)
            _read_figures(api.get("/metrics").text, task_id, figures)
            played = min(scene.seconds, figures.decoded / scene.fps)
            with printed:
                progress.update(f"      playing {played:4.1f}/{scene.seconds:g} s · {figures.decoded} frames decoded"
                                f" · {len(sink.deliveries)} event(s) delivered · task {state}")
            if state in _FINISHED or state in _BROKEN:
                break
            time.sleep(_POLL_S)
        progress.clear()
        if state not in _FINISHED:
            detail = api.get(f"/v2/{PROJECT}/tasks/{task_id}").json()
            print(f"edge-agent demo: the task ended {state}: {detail.get('status') or detail}", file=err)
            return 1
        drained = time.monotonic() + 15.0
        while time.monotonic() < drained:
            if api.get("/healthz").json()["outbox"]["webhook"]["backlog"] == 0:
                break
            time.sleep(0.2)

        progress.say("[4/4] summary")
        return _summary(scene, figures, sink.deliveries, output, out)
    finally:
        if api is not None:
            api.close()  # an open keep-alive connection would hold up the API server's shutdown
        if sink is not None:
            sink.stop()
        if runtime is not None:
            runtime.stop()
        if options.keep:
            progress.say(f"state directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def _summary(scene: Scene, figures: StreamFigures, deliveries: list[Delivery], output: Path, out: TextIO) -> int:
    latencies = sorted(d.latency_s * 1000 for d in deliveries)
    print("", file=out)
    print(f"  scene            {scene.seconds:g} s, {scene.frames} frames, {scene.width}x{scene.height}"
          f" @ {scene.fps} fps ({scene.codec})", file=out)
    print(f"  frames decoded   {figures.decoded} of {scene.frames} (analysed: {figures.sampled},"
          f" decode errors: {figures.decode_errors})", file=out)
    print(f"  events           {len(deliveries)} delivered to the webhook", file=out)
    if latencies:
        print(f"  latency          capture → delivery: min {latencies[0]:.0f} ms, median"
              f" {statistics.median(latencies):.0f} ms, max {latencies[-1]:.0f} ms", file=out)
    p95 = _quantile_bound(figures.commit_latencies, 0.95)
    if p95 is not None:
        print(f"                   capture → committed to the outbox: 95 % within {p95 * 1000:.0f} ms"
              f" (/metrics histogram)", file=out)
    if not deliveries:
        print("edge-agent demo: no event was delivered; run with --keep and look at the state directory",
              file=out)
        return 1
    annotated = next(((d, image) for d in deliveries if isinstance(d.envelope["frame"].get("pts"), int)
                      and (image := frame_at(scene.path, d.envelope["frame"]["pts"])) is not None), None)
    if annotated is None:
        print("edge-agent demo: could not find the frame of any event in the clip", file=out)
        return 1
    delivery, image = annotated
    output.mkdir(parents=True, exist_ok=True)
    path = output / "demo-event.jpg"
    if not cv2.imwrite(str(path), annotate(image, scene, delivery)):
        print(f"edge-agent demo: could not write {path}", file=out)
        return 1
    print(f"  annotated event  {path}", file=out)
    return 0
