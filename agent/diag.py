"""``edge-agent diag``: every check an operator needs to find a fault in one look.

Config, state directory, broker (connect, subscribe, round trip), REST API, then per task and input the
resolution, an open of the stream and a decode sample, and per sink its reachability and outbox. Each
check is OK, WARN or FAIL with a one-line hint; the exit code is 1 when anything FAILs.

It works with the agent stopped (it reads the config and the state directory) and with it running (it
asks the API: /healthz, /metrics and a token check, and reads the task store, which SQLite's WAL mode
lets two processes share). It never writes to the state directory except one temporary file for the
writability test, and it opens the stores only as the user who owns them, so that a ``sudo edge-agent
diag`` cannot leave root-owned WAL files that a running agent could not write. Probes run one after the
other, so a decode sample measures what this box decodes for one stream, not what four at once would.

Every string that leaves this module goes through ``mask_text``; passwords in URLs are registered first.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

from agent.redact import mask_text, mask_url, secrets
from agent.settings import AgentSettings, StreamSettings, config_path, load_settings
from agent.sources.target import StreamTarget

GIB = 1 << 30
MIB = 1 << 20
FREE_DISK_FAIL = 100 * MIB
FREE_DISK_WARN = 1 * GIB
OLDEST_WARN_S = 60.0
OLDEST_FAIL_S = 3600.0
LONG_GOP_S = 5.0
CORE_SHARE_WARN = 0.8  # decode cost at the stream's rate, as a share of one core
SLOW_SOURCE_SHARE = 0.5  # a live source delivering less than this share of its declared rate


class Level(str, Enum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    area: str  # config, state, api, broker, task, input, stream, sink, outbox
    subject: str  # what was checked, e.g. "task cam-yard (1a2b3c4d) input 0"
    level: Level
    detail: str  # one line: what was found (masked)
    hint: str | None = None  # one line: what to do about it (masked)
    data: Mapping[str, Any] = field(default_factory=dict)  # the figures behind the detail, for --json

    def as_dict(self) -> dict[str, Any]:
        return {"area": self.area, "subject": self.subject, "status": self.level.value, "detail": self.detail,
                "hint": self.hint, "data": dict(self.data)}


def _check(area: str, subject: str, level: Level, detail: str, hint: str | None = None,
           **data: object) -> Check:
    """A check with every string masked (secrets known to the registry, URL credentials, token params)."""
    safe = {key: mask_text(value) if isinstance(value, str) else value for key, value in data.items()}
    return Check(area, mask_text(subject), level, mask_text(detail), mask_text(hint) if hint else None, safe)


@dataclass(frozen=True)
class DiagOptions:
    config: str | None = None
    as_json: bool = False
    url: str | None = None  # probe this one stream instead of the tasks
    timeout_s: float = 5.0  # per network check
    sample_s: float = 5.0  # decoding per stream probe
    project: str = "default"


class Progress:
    """Long probes say what they are doing on stderr (the table or JSON on stdout stays clean)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def __call__(self, text: str) -> None:
        print(f"diag: {mask_text(text)}", file=self._stream, flush=True)


# --- config and state ---------------------------------------------------------------------------------
def check_config(options: DiagOptions) -> tuple[Check, AgentSettings | None]:
    from pydantic import ValidationError

    path = config_path(options.config)
    where = str(path) if path is not None else "built-in defaults and EDGE_AGENT_* environment"
    try:
        settings = load_settings(options.config)
    except FileNotFoundError as exc:
        return _check("config", "config", Level.FAIL, str(exc),
                      "Pass --config with the agent's file, or set EDGE_AGENT_CONFIG."), None
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        key = ".".join(str(part) for part in first["loc"]) or "(file)"
        return _check("config", "config", Level.FAIL, f"{where}: invalid at {key}: {first['msg']}",
                      "Fix that key; docs/configuration.md lists every key and its rules.", key=key), None
    except (OSError, ValueError) as exc:  # unreadable file, TOML syntax error
        return _check("config", "config", Level.FAIL, f"{where}: {type(exc).__name__}: {exc}",
                      "Check the file's TOML syntax and that this user may read it."), None
    _register_settings_secrets(settings)
    if path is None:
        return _check("config", "config", Level.WARN, "no config file: using built-in defaults",
                      "Pass --config (e.g. /etc/edge-agent/agent.toml) to check the agent's own settings."), settings
    return _check("config", "config", Level.OK, f"{path} is valid (node {settings.node_id})",
                  path=str(path), node_id=settings.node_id), settings


def _register_settings_secrets(settings: AgentSettings) -> None:
    try:
        secrets.add(settings.api.resolved_token())
        if settings.mqtt is not None:
            secrets.add(settings.mqtt.resolved_password())
            if settings.mqtt.control_token is not None:
                secrets.add(settings.mqtt.control_token.get_secret_value())
    except OSError:
        pass  # an unreadable secret file is reported by the check that needs it
    for source in settings.video_sources:
        if source.url:
            _register_url(source.url)
    for camera in settings.cameras:
        _register_url(camera.url)


def _register_url(url: str) -> None:
    try:
        password = urlsplit(url).password
    except ValueError:
        return
    if password:
        secrets.add(password, unquote(password))


def check_state_dir(settings: AgentSettings) -> Check:
    state = settings.state_dir
    if not state.exists():
        return _check("state", "state dir", Level.WARN, f"{state} does not exist yet",
                      "The agent creates it at its first start; systemd's StateDirectory= does too.",
                      path=str(state))
    try:
        with tempfile.NamedTemporaryFile(dir=state, prefix=".diag-"):
            pass
    except OSError as exc:
        return _check("state", "state dir", Level.FAIL, f"{state} is not writable: {exc.strerror}",
                      f"Run diag as the agent's user (sudo -u {_owner(state)} edge-agent diag), or fix the "
                      "directory's owner.", path=str(state))
    free = shutil.disk_usage(state).free
    detail = f"{state}: writable, {free / GIB:.1f} GiB free"
    data: dict[str, Any] = {"path": str(state), "free_bytes": free}
    if free < FREE_DISK_FAIL:
        return _check("state", "state dir", Level.FAIL, detail,
                      "Free disk space: the outbox cannot commit events on a full disk.", **data)
    if free < min(FREE_DISK_WARN, settings.outbox.max_bytes):
        return _check("state", "state dir", Level.WARN, detail,
                      "Less free space than the outbox may use (outbox.max_bytes); free some or lower it.", **data)
    return _check("state", "state dir", Level.OK, detail, **data)


def _owner(path: Path) -> str:
    try:
        import pwd

        return pwd.getpwuid(path.stat().st_uid).pw_name
    except (KeyError, OSError, ImportError):
        return "edge-agent"


def _store_access(settings: AgentSettings, name: str) -> tuple[Path | None, Check | None]:
    """The store file if diag may open it: it exists and this user owns it (see the module docstring)."""
    path = settings.state_dir / name
    if not path.is_file():
        return None, None
    try:
        owner_uid = path.stat().st_uid
    except OSError as exc:
        return None, _check("state", name, Level.FAIL, f"cannot read {path}: {exc.strerror}",
                            "Run diag as the agent's user.")
    if owner_uid != os.geteuid():
        user = _owner(path)
        return None, _check("state", name, Level.WARN, f"{path} belongs to {user}; not opened as another user",
                            f"Run diag as the agent's user: sudo -u {user} edge-agent diag")
    return path, None


# --- the running agent ----------------------------------------------------------------------------------
@dataclass
class AgentView:
    """What the running agent says about itself."""

    health: dict[str, Any]
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.get((name, frozenset(labels.items())))

    def input_state(self, task_id: str, index: int) -> str | None:
        for (name, labels), value in self.metrics.items():
            found = dict(labels)
            if (name == "edge_agent_input_state" and value == 1.0 and found.get("task_id") == task_id
                    and found.get("input") == str(index)):
                return found.get("state")
        return None


def _api_base(settings: AgentSettings) -> str:
    host = settings.api.host
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"http://[{host}]:{settings.api.port}" if ":" in host else f"http://{host}:{settings.api.port}"


def check_api(settings: AgentSettings, options: DiagOptions) -> tuple[list[Check], AgentView | None]:
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from agent.api_token import api_token

    base = _api_base(settings)
    try:
        started = time.monotonic()
        response = httpx.get(f"{base}/healthz", timeout=options.timeout_s)
        elapsed_ms = (time.monotonic() - started) * 1000
    except httpx.ConnectError:
        return [_check("api", "REST API", Level.WARN, f"nothing listens on {settings.api.listen}: agent not running",
                       "Start it (systemctl start edge-agent); diag went on from the config and state dir.")], None
    except httpx.HTTPError as exc:
        return [_check("api", "REST API", Level.FAIL, f"{settings.api.listen}: {type(exc).__name__}: {exc}",
                       "Something holds the port without answering: a hung agent? journalctl -u edge-agent")], None
    try:
        health = response.json()
    except ValueError:
        health = None
    if response.status_code != 200 or not isinstance(health, dict) or health.get("status") != "ok":
        return [_check("api", "REST API", Level.FAIL,
                       f"{settings.api.listen} answers HTTP {response.status_code}, but not as edge-agent",
                       "Another program uses api.listen's port: change api.listen or stop the other program.")], None
    checks: list[Check] = []
    detail = (f"up on {settings.api.listen} in {elapsed_ms:.0f} ms: version {health.get('version')}, "
              f"uptime {health.get('uptime_s')} s, {health.get('running_tasks')} running task(s)")
    if health.get("healthy") is False:
        checks.append(_check("api", "REST API", Level.WARN, detail + ", NOT healthy",
                             "The supervisor or a task worker is stuck; see journalctl -u edge-agent.", **health))
    else:
        checks.append(_check("api", "REST API", Level.OK, detail, **{k: v for k, v in health.items()
                                                                    if not isinstance(v, dict)}))
    try:
        token = api_token(settings, create=False)
    except OSError as exc:
        token = None
        checks.append(_check("api", "API token", Level.WARN, f"cannot read the token file: {exc.strerror}",
                             "Run diag as the agent's user, who may read api.token_file."))
    if token:
        secrets.add(token)
        reply = httpx.get(f"{base}/v2/{options.project}/tasks", headers={"X-Auth-Token": token},
                          timeout=options.timeout_s)
        if reply.status_code == 200:
            checks.append(_check("api", "API token", Level.OK, "accepted"))
        elif reply.status_code == 401:
            checks.append(_check("api", "API token", Level.FAIL, "the running agent rejects this config's token",
                                 "The agent runs with another config or token file: compare api.token/token_file."))
        else:
            checks.append(_check("api", "API token", Level.WARN, f"task list answered HTTP {reply.status_code}"))
    metrics: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    try:
        text = httpx.get(f"{base}/metrics", timeout=options.timeout_s).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                metrics[(sample.name, frozenset(sample.labels.items()))] = sample.value
    except (httpx.HTTPError, ValueError) as exc:
        checks.append(_check("api", "metrics", Level.WARN, f"/metrics unreadable: {type(exc).__name__}"))
    return checks, AgentView(health, metrics)


# --- the broker -------------------------------------------------------------------------------------------
def check_broker(settings: AgentSettings, options: DiagOptions, view: AgentView | None,
                 progress: Progress) -> list[Check]:
    mqtt_settings = settings.mqtt
    if mqtt_settings is None:
        return [_check("broker", "broker", Level.OK, "not configured: REST only, no event_center output")]
    where = f"{mqtt_settings.host}:{mqtt_settings.port}"
    progress(f"connecting to the broker {where} …")
    result = _mqtt_round_trip(settings, options.timeout_s)
    checks = [result]
    if view is not None and result.level is Level.OK:
        for channel in ("control", "events"):
            connected = view.value("edge_agent_mqtt_connected", channel=channel)
            if connected == 0.0:
                checks.append(_check("broker", f"agent's {channel} connection", Level.WARN,
                                     "the running agent is not connected, though the broker answers diag",
                                     "It reconnects with backoff; if it stays down, see journalctl -u edge-agent "
                                     "(credentials or client id clash?)."))
    return checks


def _mqtt_round_trip(settings: AgentSettings, timeout_s: float) -> Check:
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    config = settings.mqtt
    assert config is not None
    where = f"{config.host}:{config.port}"
    v5 = config.protocol == "5"
    # a client id of its own: reusing the agent's would disconnect the running agent
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-agent-diag-{uuid.uuid4().hex[:12]}",
                         protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311)
    try:
        password = config.resolved_password()
    except OSError as exc:
        return _check("broker", "broker", Level.FAIL, f"cannot read mqtt.password_file: {exc.strerror}",
                      "Run diag as the agent's user, or fix the file's permissions.")
    if config.username is not None:
        secrets.add(password)
        client.username_pw_set(config.username, password)
    if config.tls is not None:
        try:
            client.tls_set(ca_certs=str(config.tls.ca_file) if config.tls.ca_file else None,
                           certfile=str(config.tls.cert_file) if config.tls.cert_file else None,
                           keyfile=str(config.tls.key_file) if config.tls.key_file else None,
                           cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ValueError, ssl.SSLError) as exc:
            return _check("broker", "broker", Level.FAIL, f"TLS set-up failed: {exc}",
                          "Check mqtt.tls.ca_file, cert_file and key_file.")
        client.tls_insecure_set(config.tls.insecure)
    topic = f"{settings.topic_prefix}/diag/{uuid.uuid4().hex}"
    connected, subscribed, echoed = threading.Event(), threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        outcome["connack"] = reason
        connected.set()

    def on_subscribe(_c: Any, _u: Any, _m: Any, reasons: Any, _p: Any = None) -> None:
        outcome["suback"] = list(reasons)
        subscribed.set()

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        if message.topic == topic:
            echoed.set()

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    client.connect_timeout = timeout_s
    started = time.monotonic()
    try:
        client.connect(config.host, config.port, keepalive=max(5, int(timeout_s * 3)))
    except ConnectionRefusedError:
        return _check("broker", "broker", Level.FAIL, f"{where}: connection refused",
                      "Is the broker running on that host? Check mqtt.host and mqtt.port.", where=where)
    except ssl.SSLError as exc:
        return _check("broker", "broker", Level.FAIL, f"{where}: TLS handshake failed: {exc.reason or exc}",
                      "Check mqtt.tls.ca_file (the broker's CA) and that the host name matches the certificate.")
    except TimeoutError:
        return _check("broker", "broker", Level.FAIL, f"{where}: no answer within {timeout_s:g} s",
                      "A firewall drops the packets, or the host is down.", where=where)
    except OSError as exc:
        return _check("broker", "broker", Level.FAIL, f"{where}: {exc.strerror or exc}",
                      "Check mqtt.host (DNS name or address) and the network.", where=where)
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            return _check("broker", "broker", Level.FAIL, f"{where}: TCP open but no CONNACK in {timeout_s:g} s",
                          "Is it an MQTT port? A TLS port needs [mqtt.tls]; a plain one must not have it.")
        connack = outcome["connack"]
        if connack.is_failure:
            return _check("broker", "broker", Level.FAIL, f"{where}: connection refused by the broker: {connack}",
                          "Check mqtt.username and mqtt.password/password_file, and the broker's ACL.")
        connect_ms = (time.monotonic() - started) * 1000
        sub_started = time.monotonic()
        client.subscribe(topic, qos=1)
        if not subscribed.wait(timeout_s):
            return _check("broker", "broker", Level.FAIL, f"{where}: connected, but no SUBACK in {timeout_s:g} s",
                          "The broker is overloaded or misbehaving.")
        if any(getattr(code, "is_failure", False) for code in outcome["suback"]):
            return _check("broker", "broker", Level.FAIL, f"{where}: subscribe to {settings.topic_prefix}/# refused",
                          "The broker's ACL must let this user subscribe and publish under the topic prefix.")
        subscribe_ms = (time.monotonic() - sub_started) * 1000
        sent = time.monotonic()
        client.publish(topic, b"diag", qos=1)
        if not echoed.wait(timeout_s):
            return _check("broker", "broker", Level.FAIL,
                          f"{where}: a QoS 1 message to {topic} did not come back in {timeout_s:g} s",
                          "The broker's ACL may forbid publishing under the topic prefix.")
        rtt_ms = (time.monotonic() - sent) * 1000
    finally:
        client.disconnect()
        client.loop_stop()
    level = Level.OK if rtt_ms < 1000 else Level.WARN
    return _check("broker", "broker", level,
                  f"{where}: connect {connect_ms:.0f} ms, subscribe {subscribe_ms:.0f} ms, round trip {rtt_ms:.0f} ms",
                  None if level is Level.OK else "Slow broker or network: events and requests will lag.",
                  where=where, connect_ms=round(connect_ms, 1), subscribe_ms=round(subscribe_ms, 1),
                  round_trip_ms=round(rtt_ms, 1))


# --- streams ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Probe:
    """One open and decode sample of a stream."""

    url: str  # masked
    transport: str
    open_s: float | None = None
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None  # what the stream declares
    keyframe_interval_s: float | None = None  # measured from packet flags during the sample
    sample_s: float = 0.0
    frames: int = 0
    decoded_fps: float = 0.0  # frames decoded per second of the sample: the arrival rate for live streams
    decode_ms_per_frame: float | None = None  # CPU cost of one frame on one thread
    decode_errors: int = 0
    ended: bool = False  # a file played to its end within the sample
    error: str | None = None  # masked
    hint: str | None = None


def probe_stream(target: StreamTarget, settings: StreamSettings, *, timeout_s: float, sample_s: float) -> Probe:
    """Open ``target`` as the agent would (same FFmpeg options), then decode for ``sample_s`` seconds."""
    import av
    import av.error

    from agent.sources.pyav import open_options
    from agent.sources.reader import is_file_target

    _register_url(target.url)
    live = not is_file_target(target)
    probe_settings = settings.model_copy(update={"open_timeout_s": timeout_s, "read_timeout_s": timeout_s})
    options = open_options(target, probe_settings)
    transport = options.get("rtsp_transport") or (target.url.split("://", 1)[0] if "://" in target.url else "file")
    masked = target.masked
    started = time.monotonic()
    try:
        container = av.open(target.url, options=options, timeout=(timeout_s, timeout_s) if live else None)
    except Exception as exc:  # every failure becomes a FAIL line with a hint, never a traceback
        waited = time.monotonic() - started
        error, hint = _explain_open_error(exc, waited, timeout_s)
        return Probe(masked, transport, error=mask_text(error), hint=hint)
    open_s = time.monotonic() - started
    try:
        if not container.streams.video:
            return Probe(masked, transport, open_s=open_s, error="the stream has no video track",
                         hint="Point the input at the camera's video stream (check the path or channel).")
        stream = container.streams.video[0]
        context = stream.codec_context
        context.thread_count = 1  # one thread, so the time spent in decode() is the true cost per frame
        rate = stream.average_rate or stream.guessed_rate
        base = Probe(masked, transport, open_s=open_s, codec=context.name, width=context.width or None,
                     height=context.height or None, fps=float(rate) if rate else None)
        return _decode_sample(container, stream, base, sample_s, live)
    finally:
        container.close()


def _decode_sample(container: Any, stream: Any, base: Probe, sample_s: float, live: bool) -> Probe:
    import av.error

    keyframes: list[float] = []
    frames = errors = 0
    busy = 0.0
    ended = False
    error: str | None = None
    started = time.monotonic()
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                ended = True
                break
            if packet.is_keyframe and packet.pts is not None and stream.time_base is not None:
                keyframes.append(float(packet.pts * stream.time_base))
            decode_started = time.monotonic()
            try:
                frames += len(stream.codec_context.decode(packet))
            except (av.error.InvalidDataError, ValueError):
                errors += 1
            busy += time.monotonic() - decode_started
            if time.monotonic() - started >= sample_s:
                break
        else:
            ended = True
        if ended and live:
            error = f"the server ended the stream after {time.monotonic() - started:.1f} s"
    except av.error.FFmpegError as exc:
        error = f"the stream broke off after {time.monotonic() - started:.1f} s: {exc}"
    elapsed = max(1e-6, time.monotonic() - started)
    gaps = [b - a for a, b in itertools.pairwise(keyframes) if b > a]
    return replace(
        base, keyframe_interval_s=statistics.median(gaps) if gaps else None, sample_s=elapsed, frames=frames,
        decoded_fps=frames / elapsed, decode_ms_per_frame=busy * 1000 / frames if frames else None,
        decode_errors=errors, ended=ended,
        error=mask_text(error) if error else None,
        hint="The camera or network dropped the connection: check its load and the link." if error else None)


def _explain_open_error(exc: BaseException, waited: float, timeout_s: float) -> tuple[str, str]:
    import av.error

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused", "Nothing listens at that host and port: camera off, or wrong port in the URL."
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return "credentials rejected (401/403)", "Check the user name and password in the URL or the camera's users."
    if isinstance(exc, av.error.HTTPNotFoundError):
        return "stream path not found (404)", "Check the path after host:port (the camera's stream or channel name)."
    if isinstance(exc, av.error.TimeoutError | av.error.ExitError | TimeoutError) or waited >= 0.9 * timeout_s:
        return (f"no answer within {waited:.1f} s",
                "The host accepts connections but its stream never starts: a hung camera (reboot it), a "
                "wrong protocol on that port, or UDP blocked (try rtsp_transport tcp).")
    if isinstance(exc, av.error.FileNotFoundError | FileNotFoundError):
        return "no such file", "Check the path; local files must be under the agent's media_roots."
    if isinstance(exc, OSError) and exc.errno in (-2, -3, -5, 110, 113):  # name resolution, unreachable
        return text, "Check the host name and that this box can route to it."
    return text, "FFmpeg cannot open it: check the URL scheme and the camera's stream settings."


def stream_checks(subject: str, probe: Probe) -> list[Check]:
    """The probe as checks: the open (with what it found) and the decode sample."""
    data = {key: value for key, value in probe.__dict__.items() if key not in ("error", "hint")}
    if probe.open_s is None:
        return [_check("stream", f"{subject} open", Level.FAIL, f"{probe.url}: {probe.error}", probe.hint, **data)]
    size = f"{probe.width}x{probe.height}" if probe.width and probe.height else "size unknown"
    fps = f"{probe.fps:g} fps" if probe.fps else "fps unknown"
    if probe.keyframe_interval_s is not None:
        gop = f"keyframe every {probe.keyframe_interval_s:.1f} s"
    else:
        gop = f"keyframe interval unknown (< 2 keyframes in {probe.sample_s:.1f} s)"
    checks = [_check("stream", f"{subject} open", Level.OK,
                     f"{probe.url}: opened in {probe.open_s:.2f} s over {probe.transport}; {probe.codec} {size} "
                     f"{fps}, {gop}", **data)]
    if probe.keyframe_interval_s is not None and probe.keyframe_interval_s > LONG_GOP_S:
        checks[0] = _check("stream", f"{subject} open", Level.WARN, checks[0].detail,
                           "Long GOP: reconnects take longer and keyframe-only decoding barely helps; set the "
                           "camera's I-frame interval to 1–2 s.", **data)
    sample = (f"{probe.frames} frames in {probe.sample_s:.1f} s = {probe.decoded_fps:.1f} fps decoded, "
              f"{probe.decode_errors} decode error(s)" + (" (file ended)" if probe.ended else ""))
    core_share = None
    if probe.decode_ms_per_frame is not None and probe.fps:
        core_share = probe.decode_ms_per_frame * probe.fps / 1000  # of one core, at the stream's own rate
        sample += f"; {probe.decode_ms_per_frame:.1f} ms per frame = {core_share:.0%} of a core at {probe.fps:g} fps"
    live = probe.transport != "file" and not probe.ended
    if probe.error is not None:
        checks.append(_check("stream", f"{subject} decode", Level.FAIL, f"{sample}; {probe.error}", probe.hint))
    elif probe.frames == 0:
        checks.append(_check("stream", f"{subject} decode", Level.FAIL, sample,
                             "Opened but nothing decoded: the camera sends no video (check its encoder), or "
                             "packets are lost (try rtsp_transport tcp)."))
    elif probe.decode_errors:
        checks.append(_check("stream", f"{subject} decode", Level.WARN, sample,
                             "Corrupt packets: packet loss on the link (use TCP) or an overloaded camera."))
    elif core_share is not None and core_share > CORE_SHARE_WARN:
        checks.append(_check("stream", f"{subject} decode", Level.WARN, sample,
                             "Decoding this stream takes most of a core: use the camera's sub-stream or a lower "
                             "resolution, or run fewer streams on this box."))
    elif live and probe.fps and probe.sample_s >= 2.0 and probe.decoded_fps < SLOW_SOURCE_SHARE * probe.fps:
        checks.append(_check("stream", f"{subject} decode", Level.WARN, sample,
                             f"The source sends fewer frames than the {probe.fps:g} fps it declares: an overloaded "
                             "camera or a lossy link."))
    else:
        checks.append(_check("stream", f"{subject} decode", Level.OK, sample))
    return checks


def url_target(url: str) -> StreamTarget:
    """The target ``--url`` names: a local path or file:// URL plays as a file, anything else as given."""
    from agent.sources.resolvers.url import FILE_SUFFIXES, LocalFileError, local_path

    try:
        path = local_path(url)
    except LocalFileError:
        path = None
    if path is not None:
        return StreamTarget(url=path, source_id="diag", is_file=True)
    parts = urlsplit(url)
    is_file = parts.scheme.lower() in ("http", "https") and Path(parts.path).suffix.lower() in FILE_SUFFIXES
    return StreamTarget(url=url, source_id="diag", is_file=is_file)


# --- tasks, inputs, sinks ------------------------------------------------------------------------------------
_TASK_LEVEL = {"RUNNING": Level.OK, "STOPPED": Level.OK, "SUCCEEDED": Level.OK, "STARTING": Level.WARN,
               "ABNORMAL": Level.FAIL, "FAILED": Level.FAIL, "START_FAILED": Level.FAIL}


def check_tasks(settings: AgentSettings, options: DiagOptions, view: AgentView | None, progress: Progress,
                broker: Check | None = None) -> list[Check]:
    """Each stored task, each input of those meant to run, each sink they deliver to."""
    from agent.tasks.store import Desired, TaskStore

    path, refused = _store_access(settings, "tasks.db")
    if refused is not None:
        return [refused]
    if path is None:
        return [_check("task", "tasks", Level.OK, "no tasks stored yet")]
    try:
        store = TaskStore(settings.state_dir)
    except Exception as exc:  # a locked or corrupt file is a finding, not a crash
        return [_check("task", "tasks", Level.FAIL, f"cannot read {path}: {type(exc).__name__}: {exc}",
                       "Is the disk full or the file damaged? journalctl -u edge-agent tells more.")]
    try:
        records = store.all()
    finally:
        store.close()
    if not records:
        return [_check("task", "tasks", Level.OK, "no tasks stored")]
    checks: list[Check] = []
    webhooks: dict[str, list[str]] = {}
    event_center: list[str] = []
    # The running agent holds the device-twin client id: diag resolves edge cameras from [[cameras]] then.
    resolver_settings = settings if view is None else settings.model_copy(update={"mqtt": None})
    from agent.sources.resolvers.registry import ResolverSet

    resolvers = ResolverSet(resolver_settings, lookup_timeout_s=options.timeout_s,
                            restful_timeout_s=options.timeout_s)
    try:
        for record in records:
            short = record.id[:8]
            subject = f"task {record.name} ({short})"
            suffix = "" if view is not None else " (last reported; the agent is not running)"
            level = _TASK_LEVEL.get(record.state.value, Level.WARN)
            if record.desired is Desired.STOPPED and level is Level.FAIL:
                level = Level.WARN
            detail = f"{record.service_name} {record.state.value}, wanted {record.desired.value}" + \
                (f": {record.status}" if record.status else "") + suffix
            hint = record.error.message if record.error is not None and level is not Level.OK else None
            checks.append(_check("task", subject, level, detail, hint, task_id=record.id,
                                 state=record.state.value, desired=record.desired.value))
            output = record.spec.output
            if output.webhook is not None:
                secrets.add_all(output.webhook.headers.values())
                webhooks.setdefault(output.webhook.url, []).append(short)
            if output.event_center:
                event_center.append(short)
            if record.desired is not Desired.RUNNING:
                continue  # stopped tasks are not probed: use --url for one stream
            for index in range(len(record.spec.input.data)):
                checks += _check_input(record, index, resolvers, settings, options, view, progress)
    finally:
        resolvers.close()
    for url, tasks in webhooks.items():
        progress(f"checking webhook {mask_url(url)} …")
        checks.append(check_webhook(url, tasks, options.timeout_s))
    if event_center:
        checks.append(_event_center_check(settings, event_center, broker))
    return checks


def _event_center_check(settings: AgentSettings, tasks: list[str], broker: Check | None) -> Check:
    """event_center events go to the broker: their sink is reachable when the broker check passed."""
    used_by = f" (tasks {', '.join(tasks)})"
    if settings.mqtt is None:
        return _check("sink", "event_center (MQTT)", Level.FAIL, "tasks publish to event_center, but there is no "
                      "[mqtt]" + used_by, "Configure [mqtt] again, or update the tasks to a webhook output.")
    if broker is None or broker.level is Level.FAIL:
        return _check("sink", "event_center (MQTT)", Level.FAIL, "the broker is unreachable" + used_by,
                      "See the broker check above; events wait in the outbox meanwhile.")
    return _check("sink", "event_center (MQTT)", Level.OK,
                  f"via the broker to {settings.topic_prefix}/events/<task id>{used_by}")


def _check_input(record: Any, index: int, resolvers: Any, settings: AgentSettings, options: DiagOptions,
                 view: AgentView | None, progress: Progress) -> list[Check]:
    from agent.sources.resolvers.base import ResolveError

    subject = f"task {record.name} ({record.id[:8]}) input {index}"
    kind = record.spec.input.type
    progress(f"resolving {subject} ({kind}) …")
    try:
        target = resolvers.resolver_for(record.spec, record.id, index)()
    except ResolveError as exc:
        hint = {"edgecamera": "Check the camera id on the node (device twin) or add it under [[cameras]].",
                "vcn": "Check the VCN address, account and camera code (device_id).",
                "restful": "Check the lookup URL and rtsp_path_in_response against the service's reply.",
                "video_source": "Check video_source_id against [[video_sources]] in the config.",
                }.get(kind, "Check the input's URL (local files must be under media_roots).")
        return [_check("input", f"{subject} resolve", Level.FAIL, f"{kind}: {exc.message}", hint)]
    except Exception as exc:  # a resolver bug is this input's finding
        return [_check("input", f"{subject} resolve", Level.FAIL, f"{kind}: {type(exc).__name__}: {exc}")]
    _register_url(target.url)
    checks = [_check("input", f"{subject} resolve", Level.OK, f"{kind} → {target.masked}", url=target.masked)]
    if view is not None:
        checks.append(_agent_stream_view(subject, record.id, index, view))
    progress(f"probing {subject}: {target.masked} ({options.sample_s:g} s decode sample) …")
    probe = probe_stream(target, settings.stream, timeout_s=options.timeout_s, sample_s=options.sample_s)
    return checks + stream_checks(subject, probe)


def _agent_stream_view(subject: str, task_id: str, index: int, view: AgentView) -> Check:
    state = view.input_state(task_id, index)
    if state is None:
        return _check("input", f"{subject} in the agent", Level.WARN, "no running pipeline reports this input",
                      "The task is not running now (schedule, or it ended); see `edge-agent task show`.")
    labels = {"task_id": task_id, "input": str(index)}
    fps_in = view.value("edge_agent_input_fps_in", **labels) or 0.0
    fps_out = view.value("edge_agent_input_fps_out", **labels) or 0.0
    reconnects = int(view.value("edge_agent_input_reconnects_total", **labels) or 0)
    errors = int(view.value("edge_agent_input_decode_errors_total", **labels) or 0)
    dropped = int(view.value("edge_agent_input_frames_dropped_total", **labels) or 0)
    detail = (f"{state}: {fps_in:g} fps in, {fps_out:g} fps analysed, {reconnects} reconnect(s), "
              f"{errors} decode error(s), {dropped} frame(s) dropped")
    data: dict[str, Any] = {"state": state, "fps_in": fps_in, "fps_out": fps_out, "reconnects": reconnects}
    if state in ("reconnecting", "stalled"):
        return _check("input", f"{subject} in the agent", Level.FAIL, detail,
                      "The agent cannot keep this stream; the probe below shows why.", **data)
    return _check("input", f"{subject} in the agent", Level.OK, detail, **data)


def check_webhook(url: str, tasks: list[str], timeout_s: float) -> Check:
    """Reachability only: a HEAD without the task's headers (a probe must not spend credentials)."""
    import httpx

    subject = f"webhook {mask_url(url)}"
    used_by = f" (tasks {', '.join(tasks)})"
    started = time.monotonic()
    try:
        response = httpx.head(url, timeout=timeout_s)
    except httpx.ConnectError as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else f"cannot connect: {exc}"
        return _check("sink", subject, Level.FAIL, reason + used_by,
                      "Start the receiver, or fix output.webhook.url (host, port); events wait in the outbox.")
    except httpx.TimeoutException:
        return _check("sink", subject, Level.FAIL, f"no answer within {timeout_s:g} s" + used_by,
                      "A firewall drops the packets, or the receiver hangs.")
    except httpx.HTTPError as exc:
        return _check("sink", subject, Level.FAIL, f"{type(exc).__name__}: {exc}" + used_by,
                      "Check the URL; for https, that the receiver's certificate is trusted.")
    elapsed_ms = (time.monotonic() - started) * 1000
    detail = f"answers HTTP {response.status_code} to HEAD in {elapsed_ms:.0f} ms{used_by}"
    if response.status_code in (500, 502, 503, 504):
        return _check("sink", subject, Level.WARN, detail,
                      "The receiver reports a server error: deliveries will be retried until it recovers.",
                      status=response.status_code)
    return _check("sink", subject, Level.OK, detail, status=response.status_code, latency_ms=round(elapsed_ms, 1))


def check_outbox(settings: AgentSettings, view: AgentView | None) -> list[Check]:
    """Backlog, oldest undelivered age and dead letters per sink: from /metrics, else from outbox.db."""
    figures: dict[str, dict[str, float]] = {}
    if view is not None and any(name == "edge_agent_outbox_backlog" for name, _ in view.metrics):
        for sink in ("webhook", "mqtt"):
            figures[sink] = {
                "backlog": view.value("edge_agent_outbox_backlog", sink=sink) or 0.0,
                "oldest_s": view.value("edge_agent_outbox_oldest_undelivered_age_seconds", sink=sink) or 0.0,
                "delivered": view.value("edge_agent_outbox_delivered_total", sink=sink) or 0.0,
                "failed": view.value("edge_agent_outbox_failed_total", sink=sink) or 0.0,
                "dead_letters": view.value("edge_agent_outbox_dead_letters_total", sink=sink) or 0.0,
            }
    else:
        path, refused = _store_access(settings, "outbox.db")
        if refused is not None:
            return [refused]
        if path is None:
            return [_check("outbox", "outbox", Level.OK, "empty (no outbox.db yet)")]
        from agent.outputs.outbox import Outbox, Sink

        try:
            outbox = Outbox(path, max_bytes=settings.outbox.max_bytes)
        except Exception as exc:
            return [_check("outbox", "outbox", Level.FAIL, f"cannot read {path}: {type(exc).__name__}: {exc}",
                           "Is the disk full or the file damaged?")]
        try:
            for sink in Sink:
                stats = outbox.stats(sink)
                figures[sink.value] = {"backlog": stats.backlog, "oldest_s": stats.oldest_undelivered_age_s or 0.0,
                                       "delivered": stats.delivered, "failed": stats.failed,
                                       "dead_letters": stats.dead_letters}
        finally:
            outbox.close()
    checks = []
    for sink, numbers in figures.items():
        backlog, oldest, dead = int(numbers["backlog"]), numbers["oldest_s"], int(numbers["dead_letters"])
        detail = (f"{backlog} waiting" + (f", oldest {oldest:.0f} s" if backlog else "") +
                  f"; {int(numbers['delivered'])} delivered, {int(numbers['failed'])} failed attempt(s), "
                  f"{dead} dead letter(s)")
        data: dict[str, Any] = {"sink": sink, **numbers}
        if backlog and oldest > OLDEST_FAIL_S:
            level, hint = Level.FAIL, f"Nothing delivered to {sink} for over an hour: fix the sink (see above)."
        elif backlog and oldest > OLDEST_WARN_S:
            level, hint = Level.WARN, f"Events wait for {sink}: the sink is slow or down (see above)."
        elif dead:
            level, hint = Level.WARN, "Some events were refused for good: GET /v2/<project>/dead-letters shows why."
        else:
            level, hint = Level.OK, None
        checks.append(_check("outbox", f"outbox {sink}", level, detail, hint, **data))
    return checks


# --- the run -----------------------------------------------------------------------------------------------
def diagnose(options: DiagOptions, progress: Progress) -> tuple[list[Check], dict[str, Any]]:
    """Every check, in the order of the table; plus facts for the report's header."""
    if options.url is not None:
        _register_url(options.url)
    config, settings = check_config(options)
    checks = [config]
    facts: dict[str, Any] = {"agent_running": None, "node_id": settings.node_id if settings else None}
    if options.url is not None:
        if config_path(options.config) is None:
            checks = []  # a bare stream probe: the missing config file is not a finding
        stream_settings = settings.stream if settings is not None else StreamSettings()
        target = url_target(options.url)
        progress(f"probing {target.masked} ({options.sample_s:g} s decode sample) …")
        probe = probe_stream(target, stream_settings, timeout_s=options.timeout_s, sample_s=options.sample_s)
        return checks + stream_checks("stream", probe), facts
    if settings is None:
        return checks, facts
    checks.append(check_state_dir(settings))
    progress(f"asking the agent's API on {settings.api.listen} …")
    api_checks, view = check_api(settings, options)
    facts["agent_running"] = view is not None
    checks += api_checks
    broker = check_broker(settings, options, view, progress)
    checks += broker
    checks += check_tasks(settings, options, view, progress, broker[0])
    checks += check_outbox(settings, view)
    return checks, facts


def render_table(checks: list[Check], facts: Mapping[str, Any]) -> str:
    width = min(48, max(len(check.subject) for check in checks))
    running = {True: "running", False: "not running", None: "not checked"}[facts.get("agent_running")]
    lines = [f"edge-agent diag — node {facts.get('node_id') or '?'}, agent {running}", "",
             f"{'STATUS':<6}  {'CHECK':<{width}}  RESULT"]
    for check in checks:
        lines.append(f"{check.level.value:<6}  {check.subject:<{width}}  {check.detail}")
        if check.hint:
            lines.append(f"{'':<6}  {'':<{width}}  ↳ {check.hint}")
    counts = {level: sum(1 for check in checks if check.level is level) for level in Level}
    lines += ["", ", ".join(f"{counts[level]} {level.value}" for level in Level)]
    return "\n".join(lines)


def run_diag(options: DiagOptions, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Print the report; 1 when any check FAILs, else 0."""
    checks, facts = diagnose(options, Progress(err))
    failed = any(check.level is Level.FAIL for check in checks)
    if options.as_json:
        counts = {level.value.lower(): sum(1 for c in checks if c.level is level) for level in Level}
        report = {**facts, "ok": not failed, "summary": counts, "checks": [c.as_dict() for c in checks]}
        print(mask_text(json.dumps(report, indent=2, ensure_ascii=False, default=str)), file=out)
    else:
        print(render_table(checks, facts), file=out)
    return 1 if failed else 0
