from __future__ import annotations

import threading

import numpy as np

from agent.sources.frame import Frame
from agent.sources.slot import LatestFrameSlot


def frame(pts: int) -> Frame:
    return Frame.from_bgr(np.zeros((2, 2, 3), np.uint8), pts=pts)


def test_slow_consumer_gets_the_newest_frame_and_drops_are_counted() -> None:
    wakeup = threading.Event()
    slot = LatestFrameSlot(wakeup)
    assert slot.take() is None
    for pts in range(5):
        slot.put(frame(pts))
    assert wakeup.is_set()
    taken = slot.take()
    assert taken is not None and taken.info.pts == 4
    assert slot.dropped == 4
    assert slot.take() is None


def test_wait_empty_returns_once_the_consumer_took_the_frame() -> None:
    slot = LatestFrameSlot()
    slot.put(frame(1))
    assert not slot.wait_empty(0.05)
    consumer = threading.Timer(0.05, slot.take)
    consumer.start()
    assert slot.wait_empty(5.0)
    consumer.join(5)
    assert slot.dropped == 0
