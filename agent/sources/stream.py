"""One input's stream: connect, decode in its own thread, sample, and come back by itself.

A ``VideoStream`` runs a supervisor thread per input. For each connection it resolves the target
again (URLs expire, cameras move), starts a reader thread (PyAV or OpenCV backend) and watches it:

- the end of a live stream is a disconnect (that is all FFmpeg reports when a server dies): reconnect;
- no packet for ``stall_timeout_s`` (or an open that outlives its timeout) is a stall: the reader is
  abandoned — a demuxer that blocks despite its timeouts cannot be interrupted safely, so its thread
  is left to close its container whenever FFmpeg returns — and a new connection is made;
- failures back off 1 s, doubling to 30 s, with jitter; a minute of health resets the backoff;
- a file plays to its end (at its native rate, or as fast as the consumer takes frames) and ENDS.

Sampled frames go to a one-frame slot: a slow consumer drops frames (counted), it never builds
latency. Nothing that may hold a URL or a secret leaves this module unmasked.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from agent.redact import mask_text, secrets
from agent.settings import StreamSettings
from agent.sources.frame import Frame, FrameInfo
from agent.sources.reader import ReadEnd, Reader, StallError, is_file_target
from agent.sources.sampler import DecodeMode, KeyframeClock, Sampler, choose_decode_mode
from agent.sources.slot import LatestFrameSlot
from agent.sources.target import StreamTarget

log = logging.getLogger(__name__)

# A file whose clock jumps ahead by more than this is re-anchored instead of waited for.
_MAX_PACE_WAIT_S = 10.0


class StreamState(Enum):
    NOT_STARTED = "not_started"
    CONNECTING = "connecting"  # the first connection
    RUNNING = "running"  # frames arrive
    STALLED = "stalled"  # the source sent nothing for too long; waiting to reconnect
    RECONNECTING = "reconnecting"  # waiting to reconnect, or connecting again
    ENDED = "ended"  # a file played to its end
    STOPPED = "stopped"


_ALLOWED: dict[StreamState, frozenset[StreamState]] = {
    StreamState.NOT_STARTED: frozenset({StreamState.CONNECTING, StreamState.STOPPED}),
    StreamState.CONNECTING: frozenset(
        {StreamState.RUNNING, StreamState.STALLED, StreamState.RECONNECTING, StreamState.ENDED,
         StreamState.STOPPED}
    ),
    StreamState.RUNNING: frozenset(
        {StreamState.STALLED, StreamState.RECONNECTING, StreamState.ENDED, StreamState.STOPPED}
    ),
    StreamState.STALLED: frozenset({StreamState.RECONNECTING, StreamState.STOPPED}),
    StreamState.RECONNECTING: frozenset(
        {StreamState.RUNNING, StreamState.STALLED, StreamState.ENDED, StreamState.STOPPED}
    ),
    StreamState.ENDED: frozenset({StreamState.STOPPED}),
    StreamState.STOPPED: frozenset(),
}


@dataclass(frozen=True)
class StreamStatus:
    input_index: int
    state: StreamState
    fps_in: float  # source frames (packets) per second
    fps_out: float  # sampled frames per second
    frames_decoded: int
    frames_sampled: int
    dropped: int  # sampled frames overwritten before the consumer took them
    decode_errors: int
    reconnects: int
    last_error: str | None  # masked
    keyframe_only: bool
    codec: str | None
    width: int | None
    height: int | None
    url: str | None  # masked
    since: float  # epoch seconds of the last state change
    stalls: int = 0


@dataclass(frozen=True)
class Backoff:
    """Delay before reconnect attempt n (0-based): ``initial · 2ⁿ`` capped at ``maximum``, ± ``jitter``."""

    initial: float = 1.0
    maximum: float = 30.0
    jitter: float = 0.2
    healthy_after: float = 60.0  # a connection that ran this long resets the doubling

    def delay(self, attempt: int) -> float:
        base = min(self.maximum, self.initial * 2 ** min(attempt, 30))
        return float(base * random.uniform(1 - self.jitter, 1 + self.jitter))


class _RateMeter:
    """Events per second over the last few seconds (bounded memory)."""

    _WINDOW = 5.0

    def __init__(self) -> None:
        self._times: deque[float] = deque(maxlen=512)

    def tick(self, now: float) -> None:
        self._times.append(now)

    def rate(self, now: float) -> float:
        recent = [t for t in self._times if now - t <= self._WINDOW]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(now - recent[0], 1e-6)

    def clear(self) -> None:
        self._times.clear()


class _Outcome(Enum):
    ENDED = "ended"
    DISCONNECTED = "disconnected"
    FAILED = "failed"
    STALLED = "stalled"
    REQUESTED = "requested"  # request_reconnect()
    STOPPED = "stopped"


class _Connection:
    """One connection's reader thread and everything the reader reports (a ``ReaderSession``).

    Once abandoned (stall, reconnect request, stop) a connection no longer touches the stream, even
    if its reader thread comes back much later.
    """

    def __init__(self, stream: VideoStream, target: StreamTarget, number: int) -> None:
        self._stream = stream
        self._target = target
        self._stop = threading.Event()
        self.done = threading.Event()
        self.abandoned = False
        self.is_open = False
        self.last_activity = time.monotonic()
        self.end: ReadEnd | None = None
        self.error: BaseException | None = None
        self.stream_fps: float | None = None
        self._keyframes = KeyframeClock()
        is_file = is_file_target(target)
        self._paced = is_file and stream.realtime_files  # a file at its native rate
        self._lossless = is_file and not stream.realtime_files  # a file as fast as the consumer takes it
        self._pace_origin: tuple[float, float] | None = None  # (monotonic, stream time)
        self._pace_last: float | None = None
        self._last_time: float | None = None  # of the last decoded frame, on the stream's clock
        self._opened_at = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"{stream.name}-reader-{number}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def abandon(self) -> None:
        self.abandoned = True
        self._stop.set()

    def _run(self) -> None:
        try:
            self.end = self._stream.reader(self._target, self._stream.settings, self)
        except Exception as exc:  # any failure of one connection is reported, never raised
            self.error = exc
        finally:
            self.done.set()

    # --- ReaderSession -------------------------------------------------------------------------
    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def opened(self, codec: str, width: int, height: int, fps: float | None) -> None:
        self.is_open = True
        self._opened_at = time.monotonic()
        self.stream_fps = fps if fps and fps > 0 else None
        self.last_activity = time.monotonic()
        if not self.abandoned:
            self._stream._opened(codec, width, height)

    def packet(self, time_s: float | None, is_keyframe: bool) -> None:
        self.last_activity = time.monotonic()
        if is_keyframe and time_s is not None:
            self._keyframes.observe(time_s)
        if not self.abandoned:
            self._stream._packet(self.last_activity)

    def decode_mode(self) -> DecodeMode:
        return choose_decode_mode(self._stream.target_fps, self.stream_fps, self._keyframes.interval)

    def keyframe_only(self, active: bool) -> None:
        if not self.abandoned:
            self._stream._keyframe_only(active)

    def pace(self, time_s: float | None) -> None:
        if time_s is None or not self._paced:
            return
        if self._pace_last is not None:
            time_s = max(time_s, self._pace_last)  # B-frames: packet times are not monotonic
        self._pace_last = time_s
        now = time.monotonic()
        origin = self._pace_origin
        if origin is None or time_s - origin[1] - (now - origin[0]) > _MAX_PACE_WAIT_S:
            self._pace_origin = (now, time_s)  # the start, or a jump in the file's clock
            return
        while not self._stop.is_set():
            wait = origin[0] + (time_s - origin[1]) - time.monotonic()
            if wait <= 0:
                break
            self._stop.wait(min(wait, 0.5))
            self.last_activity = time.monotonic()

    def wanted(self, time_s: float | None) -> bool:
        if self.abandoned:
            return False
        interval = 1.0 / self.stream_fps if self.stream_fps else None
        if time_s is None:
            # no timestamp (typically the first frame of an RTSP stream): keep the clock going
            if self._last_time is not None and interval is not None:
                time_s = self._last_time + interval
            else:
                time_s = time.monotonic() - self._opened_at
        self._last_time = time_s
        return self._stream._decoded(time_s, interval)

    def deliver(self, source: Any, pts: int | None, stream_time: float | None) -> None:
        if isinstance(source, np.ndarray):
            height, width = source.shape[:2]
        else:
            width, height = source.width, source.height
        info = FrameInfo(self._stream.input_index, pts, stream_time, time.time(), width, height)
        frame = Frame(info, source)
        if self._lossless:
            # as fast as possible, but lossless: wait for the consumer rather than overwrite
            while not self._stream._slot.wait_empty(0.2):
                self.last_activity = time.monotonic()
                if self._stop.is_set():
                    return
        if not self.abandoned:
            self._stream._deliver(frame)

    def decode_error(self) -> None:
        if not self.abandoned:
            self._stream._decode_error()


class VideoStream:
    """One input: a supervisor thread, a reader thread per connection, a latest-frame slot."""

    _JOIN_READER_S = 2.0  # an abandoned reader blocked in FFmpeg is left behind after this
    _WATCH_INTERVAL_S = 0.25  # how often the supervisor checks its reader for stalls

    def __init__(
        self,
        input_index: int,
        resolve: Callable[[], StreamTarget],
        settings: StreamSettings,
        target_fps: float,
        *,
        backend: str | None = None,
        realtime_files: bool = True,
        wakeup: threading.Event | None = None,
        name: str = "",
        backoff: Backoff | None = None,
    ) -> None:
        self.input_index = input_index
        self.name = name or f"stream-{input_index}"
        self.settings = settings
        self.realtime_files = realtime_files
        self.backend = backend or settings.backend
        self.reader: Reader = _reader_for(self.backend)
        self._resolve = resolve
        self._backoff = backoff or Backoff()
        self._slot = LatestFrameSlot(wakeup)
        self._sampler = Sampler(target_fps)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._kick = threading.Event()  # wakes the supervisor out of a backoff wait
        self._reconnect_reason: str | None = None
        self._thread: threading.Thread | None = None
        self._connection: _Connection | None = None
        self._rate_in = _RateMeter()
        self._rate_out = _RateMeter()
        self._state = StreamState.NOT_STARTED
        self._since = time.time()
        self._frames_decoded = 0
        self._frames_sampled = 0
        self._decode_errors = 0
        self._reconnects = 0
        self._stalls = 0
        self._last_error: str | None = None
        self._keyframe_only_on = False
        self._codec: str | None = None
        self._width: int | None = None
        self._height: int | None = None
        self._url: str | None = None

    # --- public --------------------------------------------------------------------------------
    @property
    def target_fps(self) -> float:
        return self._sampler.target_fps

    def start(self) -> None:
        if self._thread is not None or self._state is not StreamState.NOT_STARTED:
            raise RuntimeError(f"{self.name}: a stream starts only once")
        self._thread = threading.Thread(target=self._supervise, name=self.name, daemon=True)
        self._transition(StreamState.CONNECTING)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._kick.set()
        deadline = time.monotonic() + timeout
        if self._thread is not None:
            self._thread.join(timeout)
        connection = self._connection
        if connection is not None:
            connection.abandon()
            connection.thread.join(max(0.0, deadline - time.monotonic()))
            if connection.thread.is_alive():
                log.warning("%s: reader still blocked in the demuxer after stop; left behind", self.name)
        if self._state is not StreamState.STOPPED:
            self._transition(StreamState.STOPPED)
        self._slot.clear()

    def take(self) -> Frame | None:
        return self._slot.take()

    def request_reconnect(self, reason: str) -> None:
        log.info("%s: reconnect requested: %s", self.name, mask_text(reason))
        with self._lock:
            self._reconnect_reason = mask_text(reason)
        self._kick.set()

    def status(self) -> StreamStatus:
        now = time.monotonic()
        with self._lock:
            return StreamStatus(
                input_index=self.input_index,
                state=self._state,
                fps_in=round(self._rate_in.rate(now), 2),
                fps_out=round(self._rate_out.rate(now), 2),
                frames_decoded=self._frames_decoded,
                frames_sampled=self._frames_sampled,
                dropped=self._slot.dropped,
                decode_errors=self._decode_errors,
                reconnects=self._reconnects,
                last_error=self._last_error,
                keyframe_only=self._keyframe_only_on,
                codec=self._codec,
                width=self._width,
                height=self._height,
                url=self._url,
                since=self._since,
                stalls=self._stalls,
            )

    # --- supervisor thread ---------------------------------------------------------------------
    def _supervise(self) -> None:
        failures = 0
        attempt = 0
        while not self._stop.is_set():
            if attempt:
                with self._lock:
                    self._reconnects += 1
                self._transition(StreamState.RECONNECTING)
            attempt += 1
            with self._lock:
                self._reconnect_reason = None  # this attempt resolves afresh anyway
            try:
                target = self._resolve()
            except Exception as exc:  # any resolver failure is retried like a connection failure
                self._failed(StreamState.RECONNECTING, f"resolve failed: {exc}")
                failures = self._wait_backoff(failures)
                continue
            self._register_secrets(target)
            with self._lock:
                self._url = target.masked
            self._sampler_reset()
            started = time.monotonic()
            outcome, detail = self._watch(_Connection(self, target, attempt))
            if time.monotonic() - started >= self._backoff.healthy_after and self._state is StreamState.RUNNING:
                failures = 0
            if outcome is _Outcome.STOPPED:
                break
            if outcome is _Outcome.ENDED:
                self._transition(StreamState.ENDED)
                log.info("%s: %s ended", self.name, target.masked)
                break
            if outcome is _Outcome.REQUESTED:
                failures = 0
                continue
            next_state = StreamState.STALLED if outcome is _Outcome.STALLED else StreamState.RECONNECTING
            self._failed(next_state, detail)
            failures = self._wait_backoff(failures)

    def _watch(self, connection: _Connection) -> tuple[_Outcome, str]:
        """Run one connection until it ends, stalls, is replaced or the stream stops."""
        self._connection = connection
        connection.start()
        open_limit = max(self.settings.stall_timeout_s, 3 * self.settings.open_timeout_s)
        while True:
            if self._stop.is_set():
                connection.abandon()
                return _Outcome.STOPPED, "stopped"
            with self._lock:
                reason, self._reconnect_reason = self._reconnect_reason, None
            if reason is not None:
                self._kick.clear()
                connection.abandon()
                connection.thread.join(self._JOIN_READER_S)
                return _Outcome.REQUESTED, reason
            if connection.done.wait(self._WATCH_INTERVAL_S):
                return self._ended(connection)
            idle = time.monotonic() - connection.last_activity
            limit = self.settings.stall_timeout_s if connection.is_open else open_limit
            if idle > limit:
                connection.abandon()
                what = "no packet" if connection.is_open else "could not open"
                return _Outcome.STALLED, f"stalled: {what} for {idle:.1f} s"

    def _ended(self, connection: _Connection) -> tuple[_Outcome, str]:
        if connection.error is not None:
            text = f"{type(connection.error).__name__}: {connection.error}"
            if isinstance(connection.error, StallError | TimeoutError):
                return _Outcome.STALLED, text
            return _Outcome.FAILED, text
        if connection.end is ReadEnd.ENDED:
            return _Outcome.ENDED, "ended"
        if connection.end is ReadEnd.STOPPED:
            return (_Outcome.STOPPED, "stopped") if self._stop.is_set() else (_Outcome.REQUESTED, "requested")
        return _Outcome.DISCONNECTED, "disconnected: the stream ended"

    def _wait_backoff(self, failures: int) -> int:
        delay = self._backoff.delay(failures)
        deadline = time.monotonic() + delay
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self._kick.wait(max(0.0, deadline - time.monotonic())):
                self._kick.clear()
                with self._lock:
                    requested = self._reconnect_reason is not None
                    self._reconnect_reason = None
                if requested:
                    break
        return failures + 1

    def _failed(self, state: StreamState, detail: str) -> None:
        masked = mask_text(detail)
        with self._lock:
            self._last_error = masked
            if state is StreamState.STALLED:
                self._stalls += 1
            self._keyframe_only_on = False
        self._rate_in.clear()
        self._rate_out.clear()
        log.warning("%s: %s (%s)", self.name, masked, self._url)
        if self._state is not state:
            self._transition(state)

    def _transition(self, new: StreamState) -> None:
        with self._lock:
            old = self._state
            if old is new or old is StreamState.STOPPED:  # stop() wins over a late supervisor
                return
            if new not in _ALLOWED[old]:
                raise RuntimeError(f"{self.name}: invalid stream state transition {old.name} → {new.name}")
            self._state = new
            self._since = time.time()
        log.info("%s: %s → %s", self.name, old.name, new.name)

    def _sampler_reset(self) -> None:
        with self._lock:
            self._sampler.reset()

    @staticmethod
    def _register_secrets(target: StreamTarget) -> None:
        try:
            parts = urlsplit(target.url)
            password = parts.password
        except ValueError:
            return
        if password:
            secrets.add(password, unquote(password))

    # --- called by the current connection's reader thread --------------------------------------
    def _opened(self, codec: str, width: int, height: int) -> None:
        with self._lock:
            self._codec, self._width, self._height = codec, width, height

    def _packet(self, now: float) -> None:
        with self._lock:
            self._rate_in.tick(now)

    def _keyframe_only(self, active: bool) -> None:
        with self._lock:
            changed = self._keyframe_only_on != active
            self._keyframe_only_on = active
        if changed:
            log.info("%s: keyframe-only decoding %s", self.name, "on" if active else "off")

    def _decoded(self, time_s: float, frame_interval: float | None) -> bool:
        with self._lock:
            self._frames_decoded += 1
            taken = self._sampler.take(time_s, frame_interval)
            connecting = self._state in (StreamState.CONNECTING, StreamState.RECONNECTING)
        if connecting:
            self._transition(StreamState.RUNNING)
        return taken

    def _deliver(self, frame: Frame) -> None:
        with self._lock:
            self._frames_sampled += 1
            self._rate_out.tick(time.monotonic())
        self._slot.put(frame)

    def _decode_error(self) -> None:
        with self._lock:
            self._decode_errors += 1


def _reader_for(backend: str) -> Reader:
    if backend == "pyav":
        from agent.sources.pyav import read_pyav

        return read_pyav
    if backend == "opencv":
        from agent.sources.opencv import read_opencv

        return read_opencv
    raise ValueError(f"stream.backend: unknown backend {backend!r} (pyav or opencv)")

