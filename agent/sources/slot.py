"""The latest-frame slot between a decode thread and its consumer: one frame deep, never a queue.

A slow consumer makes the producer overwrite the frame it has not taken yet (counted as dropped), so
latency stays bounded by one frame whatever the consumer does. A lossless producer (a file decoded as
fast as possible for batch analysis) waits for the consumer instead of overwriting.
"""

from __future__ import annotations

import threading

from agent.sources.frame import Frame


class LatestFrameSlot:
    def __init__(self, wakeup: threading.Event | None = None) -> None:
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._wakeup = wakeup
        self.dropped = 0  # frames overwritten before the consumer took them

    def put(self, frame: Frame) -> None:
        """Store ``frame`` as the newest, dropping an untaken older one."""
        with self._cond:
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify_all()
        if self._wakeup is not None:
            self._wakeup.set()

    def wait_empty(self, timeout: float) -> bool:
        """Wait until the consumer took the stored frame; True when the slot is empty."""
        with self._cond:
            return self._cond.wait_for(lambda: self._frame is None, timeout)

    def take(self) -> Frame | None:
        """The newest frame not yet taken, or None (never blocks)."""
        with self._cond:
            frame, self._frame = self._frame, None
            self._cond.notify_all()
            return frame

    def clear(self) -> None:
        with self._cond:
            self._frame = None
            self._cond.notify_all()
