"""VideoStream parts that need no server: reconnect backoff, probe address, state table, lifecycle."""

from __future__ import annotations

import pytest

from agent.backoff import STREAM_RECONNECT, Backoff
from agent.settings import StreamSettings
from agent.sources.probe import probe_address
from agent.sources.stream import _ALLOWED, StreamState, VideoStream
from agent.sources.target import StreamTarget


def test_reconnects_back_off_from_1_s_to_30_s_with_jitter() -> None:
    bases = [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    runs = []
    for _ in range(50):
        backoff = Backoff(STREAM_RECONNECT)
        runs.append([backoff.next() for _ in bases])
    for step, base in enumerate(bases):
        delays = [run[step] for run in runs]
        assert base * 0.8 <= min(delays) and max(delays) <= base * 1.2
        assert max(delays) - min(delays) > 0  # jittered, so many streams do not reconnect in step
    backoff.reset()
    assert 0.8 <= backoff.next() <= 1.2


@pytest.mark.parametrize(("url", "is_file", "address"), [
    ("rtsp://admin:pw@10.0.0.5/stream1", False, ("10.0.0.5", 554)),
    ("rtsp://cam.local:8554/live", False, ("cam.local", 8554)),
    ("rtsps://[fd00::5]/live", False, ("fd00::5", 322)),
    ("rtmp://live.example/app/key", False, ("live.example", 1935)),
    ("https://cdn.example/live/index.m3u8", False, ("cdn.example", 443)),
    ("http://cdn.example/clip.mp4", True, None),  # files are not probed
    ("/var/lib/media/clip.mp4", False, None),
    ("rtsp://cam:99999/x", False, None),  # no valid port
    ("srt://cam:9000", False, ("cam", 9000)),
    ("srt://cam", False, None),  # no port and no default for the scheme
])
def test_the_probe_address_is_the_stream_urls_host_and_port(
        url: str, is_file: bool, address: tuple[str, int] | None) -> None:
    assert probe_address(StreamTarget(url, is_file=is_file)) == address


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


def test_credentials_of_a_handed_out_url_are_masked_while_the_stream_runs() -> None:
    from agent.redact import MASK, mask_text
    from tests.waiting import wait_until

    # as a RESTful lookup may answer: a password the task itself never held, URL-encoded in the URL
    stream = VideoStream(0, lambda: StreamTarget("rtsp://cam:lookup%2Fpw-31@127.0.0.1:9/x"),
                         StreamSettings(), 1.0)
    assert mask_text("lookup/pw-31") == "lookup/pw-31"
    stream.start()
    try:
        wait_until(lambda: mask_text("lookup/pw-31 lookup%2Fpw-31") == f"{MASK} {MASK}", what="masked")
    finally:
        stream.stop()
    wait_until(lambda: mask_text("lookup/pw-31") == "lookup/pw-31", what="forgotten once the stream stopped")
