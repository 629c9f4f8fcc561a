"""One input's stream: connect, decode in its own thread, sample, and come back by itself.

A ``VideoStream`` runs a supervisor thread per input. For each connection it resolves the target
again (URLs expire, cameras move), starts a reader thread (PyAV or OpenCV backend) and watches it:

- the end of a live stream is a disconnect (that is all FFmpeg reports when a server dies): reconnect;
- no packet for ``stall_timeout_s`` (or an open that outlives its timeout) is a stall: the reader is
  abandoned — a demuxer that blocks despite its timeouts cannot be interrupted safely, so its thread
  is left to close its container whenever FFmpeg returns — and a new connection is made;
- full attempts back off under ``STREAM_RECONNECT`` (1 s doubling to 30 s, with jitter; a minute of
  health resets it). While it waits, the stream probes the camera's port every second: a camera whose
  port was closed and answers again gets a full attempt at once, one whose port stays closed at most
  one every 30 s, and one whose port answers while its stream fails keeps the backoff;
- a lookup refused for good (``ResolveError.retryable`` false, e.g. a refused VCN login) is not
  retried: the stream is FAILED until the task starts again (or the source reports a change);
- a file plays to its end and ENDS: at its native rate (each sampled frame waits for its time; the
  decoding between two of them runs ahead) or as fast as the consumer takes frames.

Sampled frames go to a one-frame slot: a slow consumer drops frames (counted), it never builds
latency. Nothing that may hold a URL or a secret leaves this module unmasked.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from agent.backoff import STREAM_RECONNECT, Backoff
from agent.redact import mask_text, secrets, url_secrets
from agent.settings import StreamSettings
from agent.sources.fanout import Consumer, Fanout, StreamCounts
from agent.sources.frame import Frame
from agent.sources.probe import Address, answers, probe_address
from agent.sources.reader import ReadEnd, Reader, StallError, is_file_target
from agent.sources.resolvers.base import ResolveError
from agent.sources.sampler import DecodeMode, KeyframeClock, choose_decode_mode
from agent.sources.target import StreamTarget

log = logging.getLogger(__name__)

# A file whose clock jumps ahead by more than this is re-anchored instead of waited for.
_MAX_PACE_WAIT_S = 10.0
# A connection that ran this long resets the full attempts' backoff.
HEALTHY_AFTER_S = 60.0
# How often a stream that waits to reconnect probes its camera's port.
PROBE_INTERVAL_S = 1.0


class StreamState(Enum):
    NOT_STARTED = "not_started"
    CONNECTING = "connecting"  # the first connection
    RUNNING = "running"  # frames arrive
    STALLED = "stalled"  # the source sent nothing for too long; waiting to reconnect
    RECONNECTING = "reconnecting"  # waiting to reconnect, or connecting again
    ENDED = "ended"  # a file played to its end
    FAILED = "failed"  # the lookup was refused for good (e.g. a refused login): not retried
    STOPPED = "stopped"


_ALLOWED: dict[StreamState, frozenset[StreamState]] = {
    StreamState.NOT_STARTED: frozenset({StreamState.CONNECTING, StreamState.STOPPED}),
    StreamState.CONNECTING: frozenset(
        {StreamState.RUNNING, StreamState.STALLED, StreamState.RECONNECTING, StreamState.ENDED,
         StreamState.FAILED, StreamState.STOPPED}
    ),
    StreamState.RUNNING: frozenset(
        {StreamState.STALLED, StreamState.RECONNECTING, StreamState.ENDED, StreamState.STOPPED}
    ),
    StreamState.STALLED: frozenset({StreamState.RECONNECTING, StreamState.STOPPED}),
    StreamState.RECONNECTING: frozenset(
        {StreamState.RUNNING, StreamState.STALLED, StreamState.ENDED, StreamState.FAILED, StreamState.STOPPED}
    ),
    StreamState.ENDED: frozenset({StreamState.STOPPED}),
    StreamState.FAILED: frozenset({StreamState.RECONNECTING, StreamState.STOPPED}),  # a reported change retries
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
    probes: int = 0  # port probes made while waiting to reconnect
    shared_by: int = 1  # consumers of this connection (tasks watching the same camera, see hub.py)
    decode_mode: str | None = None  # keyframes, sampled or full; None while nothing is decoded


class _Outcome(Enum):
    ENDED = "ended"
    DISCONNECTED = "disconnected"
    FAILED = "failed"
    STALLED = "stalled"
    REQUESTED = "requested"  # request_reconnect()
    STOPPED = "stopped"


class StreamSink(Protocol):
    """What a connection hands its stream: the one way from a reader thread into the stream's state."""

    @property
    def target_fps(self) -> float: ...

    def opened(self, codec: str, width: int, height: int) -> None:
        """The connection is open and the video stream is known."""

    def packet(self, now: float) -> None:
        """A packet arrived at ``now`` (monotonic)."""

    def decoding(self, mode: DecodeMode) -> None:
        """The decoder runs in ``mode`` from now on."""

    def decoded(self, time_s: float, frame_interval: float | None) -> bool:
        """A frame was decoded at ``time_s``; True when a consumer's sampler wants it."""

    def earliest_want(self, frame_interval: float | None) -> float | None:
        """The earliest stream time a consumer would take a frame at; None: whatever comes next."""

    def wait_taken(self, timeout: float) -> bool:
        """Wait until the consumers took the last frame; True when they did."""

    def deliver(self, source: Any, pts: int | None, stream_time: float | None) -> None:
        """Hand a sampled frame (an av.VideoFrame or a BGR ndarray) to the consumers that wanted it."""

    def decode_error(self) -> None:
        """A packet could not be decoded."""


class _Connection:
    """One connection's reader thread and everything the reader reports (a ``ReaderSession``).

    Once abandoned (stall, reconnect request, stop) a connection no longer touches its sink, even
    if its reader thread comes back much later.
    """

    def __init__(self, reader: Reader, target: StreamTarget, settings: StreamSettings, sink: StreamSink, *,
                 realtime_files: bool, name: str, on_done: Callable[[], None]) -> None:
        self._reader = reader
        self._target = target
        self._settings = settings
        self._sink = sink
        self._stop = threading.Event()
        self.done = threading.Event()
        self._on_done = on_done
        self.abandoned = False
        self.is_open = False
        self.last_activity = time.monotonic()
        self.end: ReadEnd | None = None
        self.error: BaseException | None = None
        self.stream_fps: float | None = None
        self._keyframes = KeyframeClock()
        is_file = is_file_target(target)
        self._paced = is_file and realtime_files  # a file at its native rate: sampled frames wait for it
        self._lossless = is_file and not realtime_files  # a file as fast as the consumer takes it
        self._pace_origin: tuple[float, float] | None = None  # (monotonic, stream time)
        self._last_time: float | None = None  # of the last decoded frame, on the stream's clock
        self._opened_at = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def abandon(self) -> None:
        self.abandoned = True
        self._stop.set()

    def _run(self) -> None:
        try:
            self.end = self._reader(self._target, self._settings, self)
        except Exception as exc:  # any failure of one connection is reported, never raised
            self.error = exc
        finally:
            self.done.set()
            self._on_done()

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
            self._sink.opened(codec, width, height)

    def packet(self, time_s: float | None, is_keyframe: bool) -> None:
        self.last_activity = time.monotonic()
        if is_keyframe and time_s is not None:
            self._keyframes.observe(time_s)
        if not self.abandoned:
            self._sink.packet(self.last_activity)

    def decode_mode(self) -> DecodeMode:
        return choose_decode_mode(self._sink.target_fps, self.stream_fps, self._keyframes.interval)

    def next_wanted(self) -> float | None:
        if self.abandoned:
            return None
        return self._sink.earliest_want(1.0 / self.stream_fps if self.stream_fps else None)

    def next_keyframe(self) -> float | None:
        return self._keyframes.next_expected

    def keyframe_only(self, active: bool) -> None:
        if self.abandoned:
            return
        mode = self.decode_mode()
        if active:
            mode = DecodeMode.KEYFRAMES
        elif mode is DecodeMode.KEYFRAMES:  # a reader that cannot skip (OpenCV) decodes every frame
            mode = DecodeMode.SAMPLED
        self._sink.decoding(mode)

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
        wanted = self._sink.decoded(time_s, interval)
        if wanted and self._paced:
            self._pace(time_s)
        return wanted

    def _pace(self, time_s: float) -> None:
        """Wait until the sampled frame at ``time_s`` is due when a file plays at its native rate.

        Only frames handed on are paced: the reader decodes up to the next one as fast as it can and
        then sleeps once, instead of waking for every packet (25 wake-ups a second at 25 fps, most of a
        paced file's CPU at low rates — docs/benchmarks.md, "The product on one clip").
        """
        now = time.monotonic()
        origin = self._pace_origin
        if origin is None or time_s - origin[1] - (now - origin[0]) > _MAX_PACE_WAIT_S:
            self._pace_origin = (now, time_s)  # the start, or a jump in the file's clock
            return
        due = origin[0] + (time_s - origin[1])
        if due > now:
            self.last_activity = due  # a wait for the file's clock is no stall
            self._stop.wait(due - now)

    def deliver(self, source: Any, pts: int | None, stream_time: float | None) -> None:
        if self._lossless:
            # as fast as possible, but lossless: wait for the consumer rather than overwrite
            while not self._sink.wait_taken(0.2):
                self.last_activity = time.monotonic()
                if self._stop.is_set():
                    return
        if not self.abandoned:
            self._sink.deliver(source, pts, stream_time)

    def decode_error(self) -> None:
        if not self.abandoned:
            self._sink.decode_error()


class VideoStream:
    """One source: a supervisor thread, a reader thread per connection, and its consumers.

    A stream is built for one consumer (``consumer``: the input it was made for, at ``target_fps``,
    with its own latest-frame slot); a shared stream (``hub.py``) attaches more and detaches them as
    their tasks come and go, without touching the connection.
    """

    _JOIN_READER_S = 2.0  # an abandoned reader blocked in FFmpeg is left behind after this
    _STALL_SLACK_S = 0.05  # the watch wakes this long after a silent connection reached its limit

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
        probe_interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self.input_index = input_index
        self.name = name or f"stream-{input_index}"
        self.settings = settings
        self.realtime_files = realtime_files
        self.backend = backend or settings.backend
        self.reader: Reader = _reader_for(self.backend)
        self._resolve = resolve
        self._backoff = backoff or Backoff(STREAM_RECONNECT)
        self._probe_interval_s = probe_interval_s
        self._fanout = Fanout(self.name, self._frames_arrive)
        self.consumer = Consumer(input_index, target_fps, wakeup)
        self._fanout.attach(self.consumer)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._kick = threading.Event()  # wakes the supervisor out of a backoff wait
        self._nudge = threading.Event()  # wakes the supervisor out of watching a connection
        self._reconnect_reason: str | None = None
        self._thread: threading.Thread | None = None
        self._connection: _Connection | None = None
        self._state = StreamState.NOT_STARTED
        self._since = time.time()
        self._reconnects = 0
        self._stalls = 0
        self._probes = 0
        self._last_error: str | None = None
        self._url: str | None = None
        # A resolver may hand out a URL with credentials the task never held (a RESTful lookup's or a VCN
        # platform's answer). The URL pattern masks user:password@ only while the URL is whole; a library
        # may log the password alone or URL-decoded, so it is held under this stream's own owner until the
        # stream's supervisor ends.
        self._secrets_owner = f"stream:{uuid.uuid4().hex}"

    # --- public --------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None or self._state is not StreamState.NOT_STARTED:
            raise RuntimeError(f"{self.name}: a stream starts only once")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._transition(StreamState.CONNECTING)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._kick.set()
        self._nudge.set()
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
        self._fanout.clear()

    def take(self) -> Frame | None:
        return self.consumer.take()

    def attach(self, consumer: Consumer) -> None:
        """``consumer`` samples this stream from its next decoded frame on; the decode mode follows."""
        self._fanout.attach(consumer)

    def detach(self, consumer: Consumer) -> int:
        """``consumer`` gets no more frames (the others go on); returns how many consumers are left."""
        left = self._fanout.detach(consumer)
        consumer.clear()
        return left

    def request_reconnect(self, reason: str) -> None:
        log.info("%s: reconnect requested: %s", self.name, mask_text(reason))
        with self._lock:
            self._reconnect_reason = mask_text(reason)
        self._kick.set()
        self._nudge.set()

    def counts(self) -> StreamCounts:
        """The connection side's counts (decoded fps, decode mode, consumers), whoever consumes it."""
        return self._fanout.counts(time.monotonic())

    def status(self, consumer: Consumer | None = None) -> StreamStatus:
        """The stream as ``consumer`` (default: the one it was built for) sees it: the shared state and
        counts, with that consumer's own index, fps_out, sampled and dropped frames."""
        now = time.monotonic()
        counts = self._fanout.counts(now)
        own = consumer or self.consumer
        mine = own.counts(now)
        with self._lock:
            return StreamStatus(
                input_index=own.input_index,
                state=self._state,
                fps_in=counts.fps_in,
                fps_out=mine.fps_out,
                frames_decoded=counts.frames_decoded,
                frames_sampled=mine.frames_sampled,
                dropped=mine.dropped,
                decode_errors=counts.decode_errors,
                reconnects=self._reconnects,
                last_error=self._last_error,
                keyframe_only=counts.decode_mode is DecodeMode.KEYFRAMES,
                codec=counts.codec,
                width=counts.width,
                height=counts.height,
                url=self._url,
                since=self._since,
                stalls=self._stalls,
                probes=self._probes,
                shared_by=counts.consumers,
                decode_mode=counts.decode_mode.value if counts.decode_mode is not None else None,
            )

    # --- supervisor thread ---------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._supervise()
        finally:
            # this thread is the only one that registers them, so nothing can add them back afterwards
            secrets.forget(self._secrets_owner)

    def _supervise(self) -> None:
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
            except ResolveError as exc:
                if exc.retryable:
                    self._failed(StreamState.RECONNECTING, f"resolve failed: {exc}")
                    self._wait_backoff(None)  # the lookup failed, not the camera: nothing to probe
                    continue
                # e.g. a refused login: repeating it would lock the account
                self._failed(StreamState.FAILED, f"resolve failed (not retried): {exc}")
                if not self._wait_for_change():
                    break
                self._backoff.reset()
                continue
            except Exception as exc:  # any other resolver failure is retried like a connection failure
                self._failed(StreamState.RECONNECTING, f"resolve failed: {exc}")
                self._wait_backoff(None)
                continue
            secrets.register(self._secrets_owner, url_secrets(target.url))
            with self._lock:
                self._url = target.masked
            self._fanout.new_connection()
            started = time.monotonic()
            connection = _Connection(self.reader, target, self.settings, self._fanout,
                                     realtime_files=self.realtime_files, name=f"{self.name}-reader-{attempt}",
                                     on_done=self._nudge.set)
            outcome, detail = self._watch(connection)
            if time.monotonic() - started >= HEALTHY_AFTER_S and self._state is StreamState.RUNNING:
                self._backoff.reset()
            if outcome is _Outcome.STOPPED:
                break
            if outcome is _Outcome.ENDED:
                self._transition(StreamState.ENDED)
                log.info("%s: %s ended", self.name, target.masked)
                break
            if outcome is _Outcome.REQUESTED:
                self._backoff.reset()
                continue
            next_state = StreamState.STALLED if outcome is _Outcome.STALLED else StreamState.RECONNECTING
            self._failed(next_state, detail)
            self._wait_backoff(probe_address(target))

    def _watch(self, connection: _Connection) -> tuple[_Outcome, str]:
        """Run one connection until it ends, stalls, is replaced or the stream stops.

        The supervisor sleeps until something happens (a nudge: stop, a reconnect request, the reader's
        end) or until the connection would have been silent for its limit, never on a fixed tick.
        """
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
            if connection.done.is_set():
                return self._ended(connection)
            idle = time.monotonic() - connection.last_activity
            limit = self.settings.stall_timeout_s if connection.is_open else open_limit
            if idle > limit:
                connection.abandon()
                what = "no packet" if connection.is_open else "could not open"
                return _Outcome.STALLED, f"stalled: {what} for {idle:.1f} s"
            # what a nudge announces is in the flags checked above: clearing after the wait loses nothing
            self._nudge.wait(limit - idle + self._STALL_SLACK_S)
            self._nudge.clear()

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

    def _wait_backoff(self, address: Address | None) -> None:
        """Wait before the next full attempt; with an ``address``, probe it meanwhile.

        A port that does not answer stretches the wait to the policy's cap (a dead camera gets at most
        one full attempt per cap); a port that answers after it did not ends the wait at once, and the
        failures before it (the outage) no longer count. A port that keeps answering while the stream
        fails changes nothing: the full attempts keep their backoff.
        """
        started = time.monotonic()
        deadline = started + self._backoff.next()
        went_away = False
        while not self._stop.is_set():
            now = time.monotonic()
            if address is not None:
                up = answers(address)
                with self._lock:
                    self._probes += 1
                if up and went_away:
                    log.info("%s: the source answers again; reconnecting now", self.name)
                    self._backoff.reset()
                    return
                if not up:
                    went_away = True
                    deadline = max(deadline, started + self._backoff.policy.max_s)
                now = time.monotonic()
                wake_at = min(deadline, now + self._probe_interval_s)
            else:
                wake_at = deadline
            if now >= deadline:
                return
            if self._kick.wait(wake_at - now) and self._take_request():
                return

    def _wait_for_change(self) -> bool:
        """Wait in FAILED until a change is reported (True) or the stream stops (False)."""
        while not self._stop.is_set():
            if self._kick.wait() and self._take_request():
                return True
        return False

    def _take_request(self) -> bool:
        """After a kick: True when it was a reconnect request (consumed), False for a stop."""
        self._kick.clear()
        with self._lock:
            requested = self._reconnect_reason is not None
            self._reconnect_reason = None
        return requested and not self._stop.is_set()

    def _failed(self, state: StreamState, detail: str) -> None:
        masked = mask_text(detail)
        with self._lock:
            self._last_error = masked
            if state is StreamState.STALLED:
                self._stalls += 1
        self._fanout.connection_lost()
        log.warning("%s: %s (%s)", self.name, masked, self._url)
        if self._state is not state:
            self._transition(state)

    def _frames_arrive(self) -> None:
        if self._state in (StreamState.CONNECTING, StreamState.RECONNECTING):
            self._transition(StreamState.RUNNING)

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



def _reader_for(backend: str) -> Reader:
    if backend == "pyav":
        from agent.sources.pyav import read_pyav

        return read_pyav
    if backend == "opencv":
        from agent.sources.opencv import read_opencv

        return read_opencv
    raise ValueError(f"stream.backend: unknown backend {backend!r} (pyav or opencv)")

