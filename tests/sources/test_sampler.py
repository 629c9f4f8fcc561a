from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.sources.sampler import DecodeMode, KeyframeClock, Sampler, choose_decode_mode


def sampled_times(sampler: Sampler, times: list[float], frame_interval: float | None) -> list[float]:
    return [t for t in times if sampler.take(t, frame_interval)]


def test_5_fps_of_25_takes_every_fifth_frame() -> None:
    times = [i / 25 for i in range(250)]
    taken = sampled_times(Sampler(5), times, 1 / 25)
    assert len(taken) == 50
    assert taken[:3] == pytest.approx([0.0, 0.2, 0.4])


def test_zero_or_higher_than_source_rate_takes_every_frame() -> None:
    times = [i / 25 for i in range(100)]
    assert len(sampled_times(Sampler(0), times, 1 / 25)) == 100
    assert len(sampled_times(Sampler(30), times, 1 / 25)) == 100


def test_jitter_does_not_skip_a_frame_that_is_on_time() -> None:
    # keyframes every 2 s at 0.5 fps, each a millisecond early or late
    times = [2.0 * i + (0.001 if i % 2 else -0.001) for i in range(10)]
    assert len(sampled_times(Sampler(0.5), times, 1 / 25)) == 10


def test_a_gap_causes_no_burst() -> None:
    sampler = Sampler(1)
    assert sampled_times(sampler, [0.0, 0.04], 0.04) == [0.0]
    after_gap = [10.0 + i * 0.04 for i in range(50)]  # 10 s with no frames, then 2 s of frames
    assert sampled_times(sampler, after_gap, 0.04) == pytest.approx([10.0, 11.0])


def test_clock_going_back_restarts_the_cadence() -> None:
    sampler = Sampler(1)
    sampled_times(sampler, [100.0 + i * 0.04 for i in range(50)], 0.04)
    assert sampler.take(0.0, 0.04)  # a new connection's clock starts at 0


def test_changing_the_rate_takes_effect_at_once() -> None:
    sampler = Sampler(1)
    assert sampler.take(0.0, 0.04)
    assert not sampler.take(0.2, 0.04)
    sampler.target_fps = 5
    assert sampler.take(0.24, 0.04)
    assert sampler.target_fps == pytest.approx(5)


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_invalid_rates_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="target fps"):
        Sampler(bad)


@given(
    target=st.floats(min_value=0.1, max_value=25),
    source=st.sampled_from([5, 10, 12.5, 25, 30, 50]),
    seconds=st.integers(min_value=5, max_value=60),
)
def test_rate_is_kept_over_any_span(target: float, source: float, seconds: int) -> None:
    times = [i / source for i in range(int(seconds * source))]
    taken = sampled_times(Sampler(target), times, 1 / source)
    expected = min(target, source) * seconds
    assert abs(len(taken) - expected) <= max(1.0, 0.05 * expected)


@pytest.mark.parametrize(
    ("target", "stream_fps", "keyframe_interval", "mode"),
    [
        (0, 25, 2.0, DecodeMode.FULL),
        (25, 25, 2.0, DecodeMode.FULL),
        (5, 25, 2.0, DecodeMode.SAMPLED),
        (1, 25, 2.0, DecodeMode.SAMPLED),  # 1 fps is above the keyframe rate of a 2 s GOP
        (0.5, 25, 2.0, DecodeMode.KEYFRAMES),
        (1, 25, 1.0, DecodeMode.KEYFRAMES),
        (1, 25, None, DecodeMode.SAMPLED),  # keyframe rate not measured yet: decode everything
        (0.5, 25, None, DecodeMode.KEYFRAMES),  # … unless the rate is so low that most GOPs fit
        (0.5, 25, 4.0, DecodeMode.SAMPLED),  # a wrong guess is corrected once the interval is known
        (0.2, None, 2.0, DecodeMode.KEYFRAMES),
    ],
)
def test_decode_mode(target: float, stream_fps: float | None, keyframe_interval: float | None,
                     mode: DecodeMode) -> None:
    assert choose_decode_mode(target, stream_fps, keyframe_interval) is mode


def test_keyframe_clock_measures_the_longest_recent_interval() -> None:
    clock = KeyframeClock()
    assert clock.interval is None
    for t in (0.0, 0.0, 2.0, 2.0, 4.0, 7.0):  # two packets per keyframe share a time
        clock.observe(t)
    assert clock.interval == pytest.approx(3.0)
    for t in (9.0, 11.0, 13.0, 15.0):
        clock.observe(t)
    assert clock.interval == pytest.approx(2.0)  # the 3 s gap fell out of the history
    clock.observe(1.0)  # the clock went back: start over
    assert clock.interval is None


def test_keyframe_clock_expects_the_next_keyframe_one_longest_interval_on() -> None:
    clock = KeyframeClock()
    clock.observe(0.0)
    assert clock.next_expected is None  # one keyframe says nothing about the interval
    for t in (2.0, 4.0):
        clock.observe(t)
    assert clock.next_expected == pytest.approx(6.0)


def test_earliest_take_is_the_next_due_time_less_the_slack() -> None:
    sampler = Sampler(5.0)
    assert sampler.earliest_take(0.04) is None  # no cadence yet: the next frame is taken
    assert sampler.take(0.0, 0.04)
    assert sampler.earliest_take(0.04) == pytest.approx(0.18)
    assert not sampler.take(0.16, 0.04) and sampler.take(0.2, 0.04)
    assert Sampler(0.0).earliest_take(0.04) is None  # every frame is wanted
