"""Fanout: one decoder's frames, sampled per consumer (no server: frames are fed by hand)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.sources.fanout import Consumer, Fanout, RateMeter
from agent.sources.sampler import DecodeMode

IMAGE = np.zeros((4, 6, 3), dtype=np.uint8)


def feed(fanout: Fanout, seconds: float, fps: float = 25.0) -> None:
    """Decode ``seconds`` of a ``fps`` stream: every frame offered, wanted ones delivered."""
    for n in range(round(seconds * fps)):
        if fanout.decoded(n / fps, 1 / fps):
            fanout.deliver(IMAGE, n, n / fps)


def test_the_decoder_serves_the_most_demanding_consumer() -> None:
    fanout = Fanout("cam", lambda: None)
    slow, fast, every = Consumer(0, 0.5), Consumer(1, 5.0), Consumer(2, 0.0)
    fanout.attach(slow)
    assert fanout.target_fps == 0.5
    fanout.attach(fast)
    assert fanout.target_fps == 5.0
    fanout.attach(every)
    assert fanout.target_fps == 0.0  # one consumer wants every frame: full decode
    assert fanout.detach(every) == 2 and fanout.target_fps == 5.0
    assert fanout.detach(fast) == 1 and fanout.target_fps == 0.5
    assert fanout.counts(0.0).consumers == 1


def test_each_consumer_samples_at_its_own_rate_and_gets_its_own_index() -> None:
    fanout = Fanout("cam", lambda: None)
    one, five = Consumer(3, 1.0), Consumer(0, 5.0)
    fanout.attach(one)
    fanout.attach(five)
    fanout.new_connection()
    for n in range(4 * 25):  # 4 s at 25 fps; each consumer takes what it was handed
        if fanout.decoded(n / 25, 1 / 25):
            fanout.deliver(IMAGE, n, n / 25)
        for consumer in (one, five):
            frame = consumer.take()
            if frame is not None:
                assert frame.info.input_index == consumer.input_index and frame.info.pts == n
    assert one.counts(0.0).frames_sampled == 4
    assert five.counts(0.0).frames_sampled == 20
    assert one.counts(0.0).dropped == five.counts(0.0).dropped == 0
    assert fanout.counts(0.0).frames_decoded == 100


def test_a_consumer_that_does_not_take_drops_only_its_own_frames() -> None:
    fanout = Fanout("cam", lambda: None)
    idle, busy = Consumer(0, 5.0), Consumer(1, 5.0)
    fanout.attach(idle)
    fanout.attach(busy)
    for n in range(50):
        if fanout.decoded(n / 25, 1 / 25):
            fanout.deliver(IMAGE, n, n / 25)
            assert busy.take() is not None
    assert idle.counts(0.0).dropped == 9 and busy.counts(0.0).dropped == 0


def test_a_consumer_joining_mid_stream_starts_at_the_next_frame_and_a_leaver_gets_nothing_more() -> None:
    fanout = Fanout("cam", lambda: None)
    first = Consumer(0, 1.0)
    fanout.attach(first)
    feed(fanout, 2.0)
    assert first.take() is not None
    late = Consumer(1, 1.0)
    fanout.attach(late)
    assert fanout.decoded(1.97, 1 / 25)  # the newcomer's sampler takes its first frame at once
    fanout.deliver(IMAGE, 49, 1.97)
    assert late.take() is not None and first.take() is None  # the first is not due until 2.0
    fanout.detach(first)
    feed(fanout, 6.0)
    assert first.take() is None


def test_first_frame_is_announced_once_per_connection_and_the_mode_is_reported() -> None:
    announced: list[int] = []
    fanout = Fanout("cam", lambda: announced.append(1))
    fanout.attach(Consumer(0, 1.0))
    fanout.new_connection()
    feed(fanout, 1.0)
    assert announced == [1]
    fanout.new_connection()
    feed(fanout, 1.0)
    assert announced == [1, 1]
    fanout.decoding(DecodeMode.KEYFRAMES)
    assert fanout.counts(0.0).decode_mode is DecodeMode.KEYFRAMES
    fanout.connection_lost()
    assert fanout.counts(0.0).decode_mode is None


def test_the_rate_meter_counts_the_last_few_seconds_only() -> None:
    meter = RateMeter()
    for n in range(25 * 20):  # 20 s at 25 per second
        meter.tick(n / 25)
    assert meter.rate(20.0) == pytest.approx(25.0, rel=0.02)
    assert meter.rate(22.0) == pytest.approx(25.0 * 3 / 5, rel=0.1)  # two silent seconds of the five
    assert meter.rate(26.0) == 0.0  # nothing in the window
    for n in range(5):  # a slow source: one every 2 s
        meter.tick(30.0 + 2 * n)
    assert meter.rate(38.5) == pytest.approx(2 / 4.5)  # events at 34, 36, 38 in the window
    meter.clear()
    assert meter.rate(38.5) == 0.0


def test_the_earliest_want_is_the_soonest_of_every_consumer() -> None:
    fanout = Fanout("cam", lambda: None)
    assert fanout.earliest_want(0.04) is None  # nobody to ask
    slow, fast = Consumer(0, 1.0), Consumer(1, 5.0)
    fanout.attach(slow)
    fanout.attach(fast)
    feed(fanout, 0.04)  # frame 0: both take it
    assert fanout.earliest_want(0.04) == pytest.approx(0.18)  # the 5 fps consumer's next, less half a frame
    fanout.detach(fast)
    assert fanout.earliest_want(0.04) == pytest.approx(0.98)
    fanout.attach(Consumer(2, 1.0))  # a newcomer takes whatever frame comes next
    assert fanout.earliest_want(0.04) is None
