"""VideoStream parts that need no server: backoff, state table, lifecycle."""

from __future__ import annotations

import pytest

from agent.settings import StreamSettings
from agent.sources.stream import _ALLOWED, Backoff, StreamState, VideoStream
from agent.sources.target import StreamTarget


def test_backoff_doubles_from_1_s_to_30_s_with_jitter() -> None:
    backoff = Backoff()
    for attempt, base in [(0, 1.0), (1, 2.0), (2, 4.0), (4, 16.0), (5, 30.0), (50, 30.0)]:
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert base * 0.8 <= min(delays) and max(delays) <= base * 1.2
        assert max(delays) - min(delays) > 0  # jittered, so many streams do not reconnect in step


def test_every_state_can_stop_and_stopped_is_final() -> None:
    assert set(_ALLOWED) == set(StreamState)
    for state, successors in _ALLOWED.items():
        assert (StreamState.STOPPED in successors) is (state is not StreamState.STOPPED)
    assert _ALLOWED[StreamState.ENDED] == {StreamState.STOPPED}
    assert StreamState.RUNNING not in _ALLOWED[StreamState.STALLED]  # a stall always reconnects


def test_stop_before_start_and_double_start() -> None:
    stream = VideoStream(0, lambda: StreamTarget("rtsp://127.0.0.1:9/x"), StreamSettings(), 1.0)
    assert stream.status().state is StreamState.NOT_STARTED
    stream.stop()
    assert stream.status().state is StreamState.STOPPED
    with pytest.raises(RuntimeError, match="only once"):
        stream.start()  # a stopped stream does not come back
    with pytest.raises(ValueError, match=r"stream\.backend"):
        VideoStream(0, lambda: StreamTarget("x"), StreamSettings(), 1.0, backend="gstreamer")
    with pytest.raises(ValueError, match="target fps"):
        VideoStream(0, lambda: StreamTarget("x"), StreamSettings(), -1.0)
