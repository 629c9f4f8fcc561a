"""One stream, opened as the agent would open it and decoded for a sample: what it is, what it costs.

The caller registers the URL's secrets before the probe; every string of a ``Probe`` is masked.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from agent.diag.report import Check, Level, masked_check
from agent.redact import mask_text
from agent.settings import StreamSettings
from agent.sources.target import StreamTarget

LONG_GOP_S = 5.0
CORE_SHARE_WARN = 0.8  # decode cost at the stream's rate, as a share of one core
SLOW_SOURCE_SHARE = 0.5  # a live source delivering less than this share of its declared rate


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
        return [masked_check("stream", f"{subject} open", Level.FAIL, f"{probe.url}: {probe.error}", probe.hint,
                             **data)]
    size = f"{probe.width}x{probe.height}" if probe.width and probe.height else "size unknown"
    fps = f"{probe.fps:g} fps" if probe.fps else "fps unknown"
    if probe.keyframe_interval_s is not None:
        gop = f"keyframe every {probe.keyframe_interval_s:.1f} s"
    else:
        gop = f"keyframe interval unknown (< 2 keyframes in {probe.sample_s:.1f} s)"
    checks = [masked_check("stream", f"{subject} open", Level.OK,
                           f"{probe.url}: opened in {probe.open_s:.2f} s over {probe.transport}; {probe.codec} {size} "
                           f"{fps}, {gop}", **data)]
    if probe.keyframe_interval_s is not None and probe.keyframe_interval_s > LONG_GOP_S:
        checks[0] = masked_check("stream", f"{subject} open", Level.WARN, checks[0].detail,
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
        checks.append(masked_check("stream", f"{subject} decode", Level.FAIL, f"{sample}; {probe.error}", probe.hint))
    elif probe.frames == 0:
        checks.append(masked_check("stream", f"{subject} decode", Level.FAIL, sample,
                                   "Opened but nothing decoded: the camera sends no video (check its encoder), or "
                                   "packets are lost (try rtsp_transport tcp)."))
    elif probe.decode_errors:
        checks.append(masked_check("stream", f"{subject} decode", Level.WARN, sample,
                                   "Corrupt packets: packet loss on the link (use TCP) or an overloaded camera."))
    elif core_share is not None and core_share > CORE_SHARE_WARN:
        checks.append(masked_check("stream", f"{subject} decode", Level.WARN, sample,
                                   "Decoding this stream takes most of a core: use the camera's sub-stream or a lower "
                                   "resolution, or run fewer streams on this box."))
    elif live and probe.fps and probe.sample_s >= 2.0 and probe.decoded_fps < SLOW_SOURCE_SHARE * probe.fps:
        checks.append(masked_check("stream", f"{subject} decode", Level.WARN, sample,
                                   f"The source sends fewer frames than the {probe.fps:g} fps it declares: an "
                                   "overloaded camera or a lossy link."))
    else:
        checks.append(masked_check("stream", f"{subject} decode", Level.OK, sample))
    return checks


def url_target(url: str) -> StreamTarget:
    """The target ``--url`` names: a local path or file:// URL plays as a file, anything else as given."""
    from agent.sources.resolvers.url import FILE_SUFFIXES, LocalFileError, local_path

    try:
        path = local_path(url)
    except LocalFileError:
        path = None
    if path is not None:
        return StreamTarget(url=path, is_file=True)
    parts = urlsplit(url)
    is_file = parts.scheme.lower() in ("http", "https") and Path(parts.path).suffix.lower() in FILE_SUFFIXES
    return StreamTarget(url=url, is_file=is_file)
