"""Which decoded frames to hand on, and how much of the stream to decode at all.

The sampler keeps a cadence of ``1 / target_fps`` on the stream's clock: a frame is taken when it is
due (within half a source frame of slack, so jitter does not skip a frame that is on time), and the
cadence never lags more than one period behind, so a gap does not cause a burst. Frames it declines
are never converted to pixels.

Decoding is the real cost (docs/benchmarks.md). ``choose_decode_mode`` picks the cheapest way to feed
the sampler: keyframes only (``skip_frame="NONKEY"``, about 17× cheaper than full decode) when the
target rate is at or below the keyframe rate, single-threaded full decode when only some frames are
wanted (less CPU than frame threading when many streams share the cores), frame threading when every
frame is wanted (the least wall time per frame).
"""

from __future__ import annotations

from collections import deque
from enum import Enum

# Keyframe intervals jitter by a few milliseconds on live streams; "at or below the keyframe rate"
# tolerates that much.
_KEYFRAME_RATE_TOLERANCE = 1.02
# At or below this rate, decoding starts keyframe-only before the keyframe interval is measured.
_OPTIMISTIC_KEYFRAME_FPS = 0.5


class DecodeMode(Enum):
    KEYFRAMES = "keyframes"  # skip_frame=NONKEY, single-threaded
    SAMPLED = "sampled"  # every frame decoded, single-threaded; only sampled frames are converted
    FULL = "full"  # every frame decoded and wanted: frame threading


def choose_decode_mode(target_fps: float, stream_fps: float | None, keyframe_interval: float | None) -> DecodeMode:
    """The cheapest decode that still yields ``target_fps`` (``<= 0`` means every frame)."""
    if target_fps <= 0 or (stream_fps is not None and target_fps >= stream_fps):
        return DecodeMode.FULL
    if keyframe_interval is None:
        # Until two keyframes were seen, guess from the rate: most cameras send a keyframe at least
        # every 2 s, and a wrong guess costs a few samples of the first GOP, not a GOP of decoding.
        return DecodeMode.KEYFRAMES if target_fps <= _OPTIMISTIC_KEYFRAME_FPS else DecodeMode.SAMPLED
    if target_fps * keyframe_interval <= _KEYFRAME_RATE_TOLERANCE:
        return DecodeMode.KEYFRAMES
    return DecodeMode.SAMPLED


class KeyframeClock:
    """Measures the keyframe interval from the keyframe flags of demuxed packets (no decoding needed)."""

    _HISTORY = 4

    def __init__(self) -> None:
        self._last: float | None = None
        self._intervals: deque[float] = deque(maxlen=self._HISTORY)

    def observe(self, time: float) -> None:
        """Record a keyframe packet at ``time`` seconds (packets of one keyframe share a time)."""
        if self._last is not None:
            gap = time - self._last
            if gap <= 0:
                if gap < 0:  # the clock went back (a new session or a looped file): start over
                    self._intervals.clear()
                    self._last = time
                return
            self._intervals.append(gap)
        self._last = time

    @property
    def interval(self) -> float | None:
        """The longest recent keyframe interval: the conservative bound for keyframe-only sampling."""
        return max(self._intervals) if self._intervals else None

    @property
    def next_expected(self) -> float | None:
        """When the next keyframe should come, by the longest recent interval (the latest guess)."""
        interval = self.interval
        return None if interval is None or self._last is None else self._last + interval

    def reset(self) -> None:
        self._last = None
        self._intervals.clear()


class Sampler:
    """Decides per decoded frame, by its time in seconds, whether it is wanted at ``target_fps``."""

    def __init__(self, target_fps: float) -> None:
        self._period = 0.0
        self._next_due: float | None = None
        self.target_fps = target_fps

    @property
    def target_fps(self) -> float:
        return 1.0 / self._period if self._period > 0 else 0.0

    @target_fps.setter
    def target_fps(self, fps: float) -> None:
        if fps != fps or fps < 0:  # NaN or negative
            raise ValueError(f"target fps must be >= 0 (0 = every frame), got {fps}")
        self._period = 1.0 / fps if fps > 0 else 0.0
        self._next_due = None

    def reset(self) -> None:
        """Forget the cadence (a new connection starts a new clock)."""
        self._next_due = None

    def earliest_take(self, frame_interval: float | None = None) -> float | None:
        """The earliest time ``take`` would accept a frame at; None when the next frame is taken whatever its time."""
        if self._period <= 0 or self._next_due is None:
            return None
        return self._next_due - (0.5 * frame_interval if frame_interval else 0.0)

    def take(self, time: float, frame_interval: float | None = None) -> bool:
        """True when the frame at ``time`` is due; ``frame_interval`` (source) sets the slack."""
        if self._period <= 0:
            return True
        slack = 0.5 * frame_interval if frame_interval else 0.0
        due = self._next_due
        if due is not None and time < due - self._period * 2 - slack:
            due = None  # the clock went back: a new session or a looped file
        if due is not None and time < due - slack:
            return False
        # keep the cadence, but never lag a whole period behind (no burst after a gap)
        base = due if due is not None and time - due < self._period else time
        self._next_due = base + self._period
        return True
