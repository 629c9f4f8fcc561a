"""A stream's frame side: what one decoder hands on, to one or more consumers.

One connection and one decoder may serve several consumers (tasks watching the same camera, see
``hub.py``). Each consumer keeps its own sampling rate, its own latest-frame slot and its own counts
(fps_out, sampled, dropped); the decoder is asked for the most demanding rate among them
(``Fanout.target_fps``), so it runs in the cheapest mode that still serves every consumer: keyframes
only while every rate allows it, full decode as soon as one consumer needs more. A frame is converted
to pixels only if some consumer's sampler wants it, and then once per consumer that does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.sources.frame import Frame, FrameInfo
from agent.sources.sampler import DecodeMode, Sampler
from agent.sources.slot import LatestFrameSlot

log = logging.getLogger(__name__)


class RateMeter:
    """Events per second over the last few seconds, ticked by one thread and read by any.

    Ticks come with every packet of every stream, so a tick is an addition and a comparison: the
    running count is marked at most every ``_MARK_S`` and the rate is read from the marks (no lock,
    no entry per event; the readers copy the marks, which a C-level ``list()`` does atomically).
    """

    _WINDOW = 5.0
    _MARK_S = 0.25

    def __init__(self) -> None:
        self._count = 0
        self._next_mark = float("-inf")
        self._marks: deque[tuple[float, int]] = deque(maxlen=round(self._WINDOW / self._MARK_S) + 1)

    def tick(self, now: float) -> None:
        self._count += 1
        if now >= self._next_mark:
            self._marks.append((now, self._count))
            self._next_mark = now + self._MARK_S

    def rate(self, now: float) -> float:
        count = self._count
        for at, counted in list(self._marks):  # oldest first: the first one in the window
            if now - at <= self._WINDOW:
                since = count - counted  # events after the mark's own
                return since / max(now - at, 1e-6) if since >= 1 else 0.0
        return 0.0

    def clear(self) -> None:
        self._marks.clear()
        self._next_mark = float("-inf")


@dataclass(frozen=True)
class ConsumerCounts:
    fps_out: float
    frames_sampled: int
    dropped: int


@dataclass(frozen=True)
class StreamCounts:
    """What the connection side counts, whoever consumes it."""

    fps_in: float
    fps_decoded: float
    frames_decoded: int
    decode_errors: int
    decode_mode: DecodeMode | None  # None while no frame is being decoded
    codec: str | None
    width: int | None
    height: int | None
    consumers: int


class Consumer:
    """One reader of a stream (one task's input): its sampler, its latest-frame slot, its counts.

    The ``Fanout`` it is attached to calls ``wants``/``put``/``restart`` from the decode thread; the
    task's worker calls ``take``.
    """

    def __init__(self, input_index: int, target_fps: float, wakeup: threading.Event | None = None) -> None:
        self.input_index = input_index
        self._sampler = Sampler(target_fps)
        self._slot = LatestFrameSlot(wakeup)
        self._lock = threading.Lock()
        self._rate_out = RateMeter()
        self._frames_sampled = 0

    @property
    def target_fps(self) -> float:
        return self._sampler.target_fps

    def take(self) -> Frame | None:
        return self._slot.take()

    def clear(self) -> None:
        self._slot.clear()

    def counts(self, now: float) -> ConsumerCounts:
        with self._lock:
            return ConsumerCounts(round(self._rate_out.rate(now), 2), self._frames_sampled, self._slot.dropped)

    # --- from the decode thread --------------------------------------------------------------------
    def restart(self) -> None:
        """A new connection: a new clock for the sampler, and the old rate no longer holds."""
        with self._lock:
            self._sampler.reset()
            self._rate_out.clear()

    def wants(self, time_s: float, frame_interval: float | None) -> bool:
        with self._lock:
            return self._sampler.take(time_s, frame_interval)

    def earliest_want(self, frame_interval: float | None) -> float | None:
        with self._lock:
            return self._sampler.earliest_take(frame_interval)

    def wait_taken(self, timeout: float) -> bool:
        return self._slot.wait_empty(timeout)

    def put(self, source: Any, pts: int | None, stream_time: float | None, width: int, height: int) -> None:
        frame = Frame(FrameInfo(self.input_index, pts, stream_time, time.time(), width, height), source)
        with self._lock:
            self._frames_sampled += 1
            self._rate_out.tick(time.monotonic())
        self._slot.put(frame)


class Fanout:
    """A stream's ``StreamSink``: the counts every consumer shares, and the consumers it samples for.

    ``on_first_frame`` runs once per connection, on its first decoded frame (the stream is RUNNING).
    """

    def __init__(self, name: str, on_first_frame: Callable[[], None]) -> None:
        self._name = name
        self._on_first_frame = on_first_frame
        self._lock = threading.Lock()
        self._consumers: list[Consumer] = []
        self._wanting: list[Consumer] = []  # the consumers whose sampler took the last decoded frame
        self._target_fps = 0.0
        self._rate_in = RateMeter()
        self._rate_decoded = RateMeter()
        self._frames_decoded = 0
        self._decode_errors = 0
        self._mode: DecodeMode | None = None
        self._codec: str | None = None
        self._width: int | None = None
        self._height: int | None = None
        self._first_frame_seen = False

    # --- consumers ---------------------------------------------------------------------------------
    def attach(self, consumer: Consumer) -> None:
        """From the next decoded frame on, ``consumer`` samples this stream too."""
        with self._lock:
            if consumer not in self._consumers:
                self._consumers.append(consumer)
                self._target_fps = self._most_demanding()

    def detach(self, consumer: Consumer) -> int:
        """``consumer`` gets no more frames; returns how many consumers are left."""
        with self._lock:
            if consumer in self._consumers:
                self._consumers.remove(consumer)
                self._wanting = [c for c in self._wanting if c is not consumer]
                if self._consumers:  # the last rate holds while the stream closes
                    self._target_fps = self._most_demanding()
            return len(self._consumers)

    def _most_demanding(self) -> float:
        rates = [c.target_fps for c in self._consumers]
        return 0.0 if any(rate <= 0 for rate in rates) else max(rates)

    # --- the stream's side ---------------------------------------------------------------------------
    def new_connection(self) -> None:
        with self._lock:
            self._first_frame_seen = False
            for consumer in self._consumers:
                consumer.restart()

    def connection_lost(self) -> None:
        with self._lock:
            self._mode = None
            self._rate_in.clear()
            self._rate_decoded.clear()

    def clear(self) -> None:
        with self._lock:
            consumers = list(self._consumers)
        for consumer in consumers:
            consumer.clear()

    def counts(self, now: float) -> StreamCounts:
        with self._lock:
            return StreamCounts(
                fps_in=round(self._rate_in.rate(now), 2), fps_decoded=round(self._rate_decoded.rate(now), 2),
                frames_decoded=self._frames_decoded, decode_errors=self._decode_errors, decode_mode=self._mode,
                codec=self._codec, width=self._width, height=self._height, consumers=len(self._consumers),
            )

    # --- StreamSink (the decode thread) --------------------------------------------------------------
    @property
    def target_fps(self) -> float:
        """The rate that serves every consumer (0 = every frame): what the decode mode is chosen for."""
        return self._target_fps

    def opened(self, codec: str, width: int, height: int) -> None:
        with self._lock:
            self._codec, self._width, self._height = codec, width, height

    def packet(self, now: float) -> None:
        self._rate_in.tick(now)  # one writer (the reader thread): no lock on the path of every packet

    def decoding(self, mode: DecodeMode) -> None:
        with self._lock:
            changed, self._mode = self._mode is not mode, mode
            consumers = len(self._consumers)
        if changed:
            log.info("%s: decoding %s (%d consumer(s))", self._name, mode.value, consumers)

    def decoded(self, time_s: float, frame_interval: float | None) -> bool:
        with self._lock:
            self._frames_decoded += 1
            self._rate_decoded.tick(time.monotonic())
            self._wanting = [c for c in self._consumers if c.wants(time_s, frame_interval)]
            first, self._first_frame_seen = not self._first_frame_seen, True
            wanted = bool(self._wanting)
        if first:
            self._on_first_frame()
        return wanted

    def earliest_want(self, frame_interval: float | None) -> float | None:
        with self._lock:
            consumers = list(self._consumers)
        if not consumers:
            return None
        wants = [consumer.earliest_want(frame_interval) for consumer in consumers]
        return None if any(want is None for want in wants) else min(w for w in wants if w is not None)

    def wait_taken(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._lock:
            wanting = list(self._wanting)
        return all(c.wait_taken(max(0.0, deadline - time.monotonic())) for c in wanting)

    def deliver(self, source: Any, pts: int | None, stream_time: float | None) -> None:
        if isinstance(source, np.ndarray):
            height, width = source.shape[:2]
        else:
            width, height = source.width, source.height
        with self._lock:
            wanting = list(self._wanting)
        for consumer in wanting:
            consumer.put(source, pts, stream_time, width, height)

    def decode_error(self) -> None:
        with self._lock:
            self._decode_errors += 1
