"""VideoStream against real servers (GStreamer RTSP) and real files."""

from __future__ import annotations

import itertools
import logging
import random
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from agent.backoff import Backoff, BackoffPolicy
from agent.settings import StreamSettings
from agent.sources.frame import Frame
from agent.sources.resolvers.base import ResolveError
from agent.sources.resolvers.registry import ResolverSet
from agent.sources.stream import StreamState, VideoStream
from agent.sources.target import StreamTarget
from tests.fixtures.ports import free_port
from tests.fixtures.rtsp import RtspServer, RtspServerFactory, SilentRtspServer
from tests.fixtures.vcn import VcnPlatform
from tests.sources.resolvers.helpers import settings as agent_settings
from tests.sources.resolvers.helpers import spec
from tests.waiting import wait_until

FAST = StreamSettings(open_timeout_s=2.0, read_timeout_s=2.0, stall_timeout_s=2.0)
QUICK = BackoffPolicy(first_s=0.2, max_s=1.0)


def target(url: str, **kwargs: object) -> Callable[[], StreamTarget]:
    return lambda: StreamTarget(url, **kwargs)  # type: ignore[arg-type]



def collect(stream: VideoStream, count: int, timeout: float) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while len(frames) < count and time.monotonic() < deadline:
        frame = stream.take()
        if frame is None:
            time.sleep(0.005)
        else:
            frames.append(frame)
    return frames


@contextmanager
def running(stream: VideoStream) -> Iterator[VideoStream]:
    stream.start()
    try:
        yield stream
    finally:
        stream.stop()
    assert stream.status().state is StreamState.STOPPED


def state_of(stream: VideoStream) -> StreamState:
    return stream.status().state


pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("server_fixture", "codec"), [("rtsp_h264", "h264"), ("rtsp_h265", "hevc")])
def test_live_frames_have_the_stream_size_and_increasing_pts(
    server_fixture: str, codec: str, request: pytest.FixtureRequest
) -> None:
    server: RtspServer = request.getfixturevalue(server_fixture)
    with running(VideoStream(0, target(server.url), FAST, 0)) as stream:
        frames = collect(stream, 25, timeout=15)
        status = stream.status()
    assert len(frames) == 25
    assert all((f.width, f.height) == (320, 240) and f.bgr.shape == (240, 320, 3) for f in frames)
    pts = [f.info.pts for f in frames if f.info.pts is not None]
    assert len(pts) >= 24 and pts == sorted(pts) and len(set(pts)) == len(pts)
    times = [f.info.stream_time for f in frames if f.info.stream_time is not None]
    assert times == sorted(times)
    assert (status.codec, status.width, status.height) == (codec, 320, 240)
    assert status.state is StreamState.RUNNING and status.frames_decoded >= 25
    assert status.url == server.url and status.keyframe_only is False


def gaps(frames: list[Frame]) -> list[float]:
    times = [f.info.stream_time for f in frames if f.info.stream_time is not None]
    return [b - a for a, b in itertools.pairwise(times)]


def test_sampling_rate_and_keyframe_only_mode(rtsp_h264: RtspServer, rtsp_server: RtspServerFactory) -> None:
    gop_1s = rtsp_server(gop=25)
    gop_3s = rtsp_server(gop=75)
    streams = {
        "1fps_gop2s": VideoStream(0, target(rtsp_h264.url), FAST, 1.0),
        "0.5fps_gop2s": VideoStream(1, target(rtsp_h264.url), FAST, 0.5),
        "1fps_gop1s": VideoStream(2, target(gop_1s.url), FAST, 1.0),
        "0.5fps_gop3s": VideoStream(3, target(gop_3s.url), FAST, 0.5),
    }
    results: dict[str, list[Frame]] = {}

    def run(name: str, stream: VideoStream) -> None:
        with running(stream):
            results[name] = collect(stream, 5, timeout=20)
            results[name + ".status"] = [stream.status()]  # type: ignore[list-item]

    threads = [threading.Thread(target=run, args=item, name=item[0]) for item in streams.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # 1 fps on a 2 s GOP: above the keyframe rate, so every frame is decoded and 1 in 25 kept
    assert statistics.median(gaps(results["1fps_gop2s"])) == pytest.approx(1.0, abs=0.05)
    assert results["1fps_gop2s.status"][0].keyframe_only is False  # type: ignore[attr-defined]
    # 0.5 fps on a 2 s GOP and 1 fps on a 1 s GOP: keyframes only, one per period
    for name, period in (("0.5fps_gop2s", 2.0), ("1fps_gop1s", 1.0)):
        status = results[name + ".status"][0]
        assert status.keyframe_only is True, name  # type: ignore[attr-defined]
        assert gaps(results[name])[-2:] == pytest.approx([period, period], abs=0.05), name
        # after the keyframe interval is known (two GOPs), only keyframes are decoded
        assert status.frames_decoded < 2 * 25 * 2 + 10, name  # type: ignore[attr-defined]
    # 0.5 fps starts keyframe-only before the GOP is known; a 3 s GOP turns it off again
    assert results["0.5fps_gop3s.status"][0].keyframe_only is False  # type: ignore[attr-defined]
    assert gaps(results["0.5fps_gop3s"])[-2:] == pytest.approx([2.0, 2.0], abs=0.05)


def test_a_picture_split_over_packets_is_decoded_whole(rtsp_server: RtspServerFactory) -> None:
    # GStreamer's x264 sends each 720p IDR as two packets with the same pts; decoding them one by one
    # would hand on a half-decoded picture first
    server = rtsp_server(size=(1280, 720), kbps=2000)
    with running(VideoStream(0, target(server.url), FAST, 0.5)) as stream:
        frames = collect(stream, 3, timeout=15)
        status = stream.status()
    assert len(frames) == 3 and status.keyframe_only
    assert status.frames_decoded <= status.frames_sampled + 1  # one picture per keyframe, not two


def test_killed_server_reconnects_on_the_same_object_when_it_returns(rtsp_server: RtspServerFactory) -> None:
    server = rtsp_server()
    resolutions: list[float] = []

    def resolve() -> StreamTarget:
        resolutions.append(time.monotonic())
        return StreamTarget(server.url)

    with running(VideoStream(0, resolve, FAST, 5.0, backoff=Backoff(QUICK))) as stream:
        assert collect(stream, 2, timeout=10)
        server.stop()
        wait_until(lambda: state_of(stream) is StreamState.RECONNECTING, 10, "RECONNECTING after the kill")
        time.sleep(1.5)  # a few failed attempts while the server is down
        assert state_of(stream) is StreamState.RECONNECTING
        server.start()
        wait_until(lambda: state_of(stream) is StreamState.RUNNING, 15, "RUNNING after the restart")
        stream.take()
        frames = collect(stream, 3, timeout=10)
        status = stream.status()
    assert len(frames) == 3
    assert status.reconnects >= 2 and status.last_error is not None
    assert len(resolutions) == status.reconnects + 1  # the resolver runs again on every reconnect


def test_paused_server_is_detected_as_stalled_and_recovers(rtsp_server: RtspServerFactory) -> None:
    server = rtsp_server()
    settings = StreamSettings(open_timeout_s=1.0, read_timeout_s=5.0, stall_timeout_s=1.0)
    with running(VideoStream(0, target(server.url), settings, 5.0, backoff=Backoff(QUICK))) as stream:
        assert collect(stream, 2, timeout=10)
        server.pause()
        try:
            wait_until(lambda: stream.status().stalls >= 1, 10, "a stall")
            assert state_of(stream) in (StreamState.STALLED, StreamState.RECONNECTING)
            assert "stalled" in (stream.status().last_error or "")
        finally:
            server.resume()
        wait_until(lambda: state_of(stream) is StreamState.RUNNING, 20, "RUNNING after resume")
        stream.take()
        assert collect(stream, 2, timeout=10)


def test_server_that_never_answers_is_stalled(silent_rtsp: SilentRtspServer) -> None:
    settings = StreamSettings(open_timeout_s=0.5, read_timeout_s=0.5, stall_timeout_s=1.0)
    seen: set[StreamState] = set()
    with running(VideoStream(0, target(silent_rtsp.url), settings, 5.0, backoff=Backoff(QUICK))) as stream:
        def stalled_seen() -> bool:
            seen.add(state_of(stream))  # STALLED lasts only until the next reconnect: remember it
            return StreamState.STALLED in seen

        wait_until(stalled_seen, 10, "STALLED", interval=0.02)
        status = stream.status()
    assert status.stalls >= 1 and status.frames_decoded == 0
    assert silent_rtsp.connections >= 1


def test_credentials_never_reach_logs_or_status(
    rtsp_server: RtspServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = rtsp_server()
    password = "Very-s3cret-pw"
    caplog.set_level(logging.DEBUG)
    seen_errors: list[str] = []
    with running(VideoStream(0, target(server.url_with("admin", password)), FAST, 5.0,
                             backoff=Backoff(QUICK))) as stream:
        assert collect(stream, 2, timeout=10)
        server.stop()  # the failure path logs errors that may quote the URL
        wait_until(lambda: stream.status().last_error is not None, 10, "an error")
        seen_errors.append(str(stream.status()))
    refused = f"rtsp://admin:{password}@127.0.0.1:{free_port()}/nothing"
    with running(VideoStream(1, target(refused), FAST, 5.0, backoff=Backoff(QUICK))) as stream:
        wait_until(lambda: stream.status().last_error is not None, 10, "connection refused")
        seen_errors.append(str(stream.status()))
    assert caplog.records
    assert all(password not in text for text in seen_errors)
    assert password not in caplog.text
    assert all(password not in record.getMessage() for record in caplog.records)
    assert "***@127.0.0.1" in caplog.text


def test_eight_concurrent_streams_in_one_process(rtsp_h264: RtspServer) -> None:
    wakeup = threading.Event()
    streams = [VideoStream(i, target(rtsp_h264.url), FAST, 5.0, wakeup=wakeup, name=f"cam{i}")
               for i in range(8)]
    broken = VideoStream(8, target(f"rtsp://127.0.0.1:{free_port()}/gone"), FAST, 5.0, wakeup=wakeup,
                         name="broken", backoff=Backoff(QUICK))
    broken.start()
    for stream in streams:
        stream.start()
    taken = [0] * 8
    try:
        def three_from_each() -> bool:
            wakeup.wait(0.5)
            wakeup.clear()
            for i, stream in enumerate(streams):
                if stream.take() is not None:
                    taken[i] += 1
            return min(taken) >= 3

        wait_until(three_from_each, 30, "three frames from each stream", interval=0)
        assert all(s.status().state is StreamState.RUNNING for s in streams)
        assert {thread.name for thread in threading.enumerate()} >= {f"cam{i}" for i in range(8)}
        # one input that cannot connect does not disturb the others
        assert broken.status().state is StreamState.RECONNECTING and broken.status().last_error is not None
    finally:
        broken.stop()
        for stream in streams:
            stream.stop()
    assert all(s.status().state is StreamState.STOPPED for s in streams)
    assert not any(t.name.startswith("cam") for t in threading.enumerate() if t.is_alive())


@pytest.mark.parametrize("codec", ["h264", "h265"])
def test_file_as_fast_as_possible_is_lossless_and_ends(codec: str, make_clip: Callable[..., Path]) -> None:
    clip = make_clip(codec=codec, seconds=2.0)
    stream = VideoStream(0, target(str(clip), is_file=True), FAST, 0, realtime_files=False)
    with running(stream):
        frames = collect(stream, 50, timeout=20)
        wait_until(lambda: state_of(stream) is StreamState.ENDED, 10, "ENDED")
        assert stream.take() is None
        status = stream.status()
    assert [f.info.pts for f in frames] == sorted(f.info.pts for f in frames)  # type: ignore[type-var]
    assert len(frames) == 50
    assert status.frames_decoded == 50 and status.frames_sampled == 50 and status.dropped == 0
    assert status.reconnects == 0 and status.last_error is None


def test_file_plays_at_its_native_rate_and_ends(make_clip: Callable[..., Path]) -> None:
    clip = make_clip(seconds=2.0)
    started = time.monotonic()
    with running(VideoStream(0, target(str(clip)), FAST, 5.0)) as stream:  # a path without scheme is a file
        frames = collect(stream, 10, timeout=15)
        wait_until(lambda: state_of(stream) is StreamState.ENDED, 15, "ENDED")
        elapsed = time.monotonic() - started
    assert elapsed >= 1.5  # 2 s of video at native rate; generous upper bounds above
    assert len(frames) == 10
    assert gaps(frames) == pytest.approx([0.2] * 9, abs=0.01)


def test_corrupt_file_is_decoded_past_the_damage_and_ends(make_clip: Callable[..., Path], tmp_path: Path) -> None:
    data = bytearray(make_clip(seconds=2.0, gop=10).read_bytes())
    rng = random.Random(5)
    for offset in range(len(data) // 3, 2 * len(data) // 3, 97):  # garbage over the middle third
        data[offset] = rng.randrange(256)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    stream = VideoStream(0, target(str(damaged), is_file=True), FAST, 0, realtime_files=False)
    with running(stream):
        frames = collect(stream, 50, timeout=15)
        wait_until(lambda: state_of(stream) is StreamState.ENDED, 10, "ENDED")
        status = stream.status()
    # damaged pictures are dropped (and counted) up to the next keyframe, never fatal
    assert status.decode_errors >= 1
    assert 25 <= len(frames) < 50
    assert frames[-1].info.stream_time == pytest.approx(1.96)  # decoding resumed after the damage
    assert frames[-1].bgr.shape == (240, 320, 3)


def test_missing_file_retries_with_a_masked_error(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.mp4"
    with running(VideoStream(0, target(str(missing), is_file=True), FAST, 1.0, backoff=Backoff(QUICK))) as stream:
        wait_until(lambda: stream.status().reconnects >= 2, 10, "retries")
        status = stream.status()
    assert status.state is StreamState.RECONNECTING
    assert "No such file" in (status.last_error or "")


def test_rtsp_file_source_is_live_and_its_end_is_a_disconnect(
    rtsp_server: RtspServerFactory, make_clip: Callable[..., Path]
) -> None:
    server = rtsp_server(file=make_clip(codec="h265", seconds=2.0), codec="h265")
    with running(VideoStream(0, target(server.url), FAST, 5.0, backoff=Backoff(QUICK))) as stream:
        frames = collect(stream, 3, timeout=10)
        wait_until(lambda: stream.status().reconnects >= 1, 15, "a reconnect after the server's file ended")
    assert len(frames) == 3 and frames[0].width == 320


def test_resolver_failures_are_retried_and_masked(make_clip: Callable[..., Path]) -> None:
    clip = make_clip(seconds=2.0)
    calls = 0

    def resolve() -> StreamTarget:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("lookup of rtsp://admin:hunter22@cam/1 failed")
        return StreamTarget(str(clip), is_file=True)

    with running(VideoStream(0, resolve, FAST, 0, realtime_files=False, backoff=Backoff(QUICK))) as stream:
        wait_until(lambda: stream.status().last_error is not None, 5, "a resolve error")
        error = stream.status().last_error or ""
        assert "hunter22" not in error and "resolve failed" in error
        assert len(collect(stream, 50, timeout=15)) == 50
        wait_until(lambda: state_of(stream) is StreamState.ENDED, 10, "ENDED")


def test_request_reconnect_resolves_again_without_backoff(rtsp_h264: RtspServer) -> None:
    urls = [rtsp_h264.url]

    def resolve() -> StreamTarget:
        return StreamTarget(urls[-1])

    slow = Backoff(BackoffPolicy(first_s=60.0, max_s=60.0))
    with running(VideoStream(0, resolve, FAST, 5.0, backoff=slow)) as stream:
        assert collect(stream, 1, timeout=10)
        urls.append(rtsp_h264.url + "?moved=1")
        stream.request_reconnect("camera URL changed")
        wait_until(lambda: stream.status().url == urls[-1], 10, "the new URL")
        stream.take()
        assert collect(stream, 2, timeout=10)
        assert stream.status().reconnects == 1


def test_a_slow_consumer_drops_frames_and_gets_the_newest(rtsp_h264: RtspServer) -> None:
    with running(VideoStream(0, target(rtsp_h264.url), FAST, 0)) as stream:
        wait_until(lambda: stream.status().frames_sampled >= 30, 15, "30 frames")
        newest = stream.take()
        status = stream.status()
    assert newest is not None
    assert status.dropped >= status.frames_sampled - 2
    assert newest.info.stream_time is not None and newest.info.stream_time > 0.5


def test_a_dead_camera_is_probed_not_hammered_and_is_back_as_soon_as_it_answers(
        rtsp_server: RtspServerFactory) -> None:
    server = rtsp_server()
    resolutions: list[float] = []

    def resolve() -> StreamTarget:
        resolutions.append(time.monotonic())
        return StreamTarget(server.url)

    # backoff alone would retry after 0.05 s, 0.1 s, …; a closed port stretches the wait to the 30 s cap
    backoff = Backoff(BackoffPolicy(first_s=0.05, max_s=30.0))
    with running(VideoStream(0, resolve, FAST, 5.0, backoff=backoff, probe_interval_s=0.1)) as stream:
        assert collect(stream, 2, timeout=10)
        server.stop()
        wait_until(lambda: state_of(stream) in (StreamState.RECONNECTING, StreamState.STALLED), 10,
                   "down after the kill")
        attempts_at_outage = len(resolutions)
        probes = stream.status().probes
        wait_until(lambda: stream.status().probes >= probes + 40, 30, "40 probes of the dead camera")
        # one full attempt at most (the port may still have been open when the first probe ran)
        assert len(resolutions) - attempts_at_outage <= 1
        attempts_before_restart = len(resolutions)
        server.start()
        sampled = stream.status().frames_sampled
        # well before the stretched wait (≥ 24 s) would end: the answering port made the attempt
        wait_until(lambda: stream.status().frames_sampled > sampled, 20, "frames after the restart")
        assert state_of(stream) is StreamState.RUNNING
    assert len(resolutions) == attempts_before_restart + 1  # one full attempt brought it back


def test_a_port_that_answers_while_its_stream_fails_keeps_the_backoff(silent_rtsp: SilentRtspServer) -> None:
    settings = StreamSettings(open_timeout_s=0.3, read_timeout_s=0.3, stall_timeout_s=0.5)
    resolutions: list[float] = []

    def resolve() -> StreamTarget:
        resolutions.append(time.monotonic())
        return StreamTarget(silent_rtsp.url)

    backoff = Backoff(BackoffPolicy(first_s=30.0, max_s=30.0))
    with running(VideoStream(0, resolve, settings, 5.0, backoff=backoff, probe_interval_s=0.1)) as stream:
        wait_until(lambda: stream.status().probes >= 40, 40, "40 probes of the answering port")
        status = stream.status()
    assert len(resolutions) == 1  # the probes answered all along: no attempt before the backoff ends
    assert status.state is StreamState.STALLED and status.stalls == 1


def test_a_lookup_refused_for_good_is_not_retried_until_a_change_is_reported() -> None:
    refused: list[float] = []
    retried: list[float] = []

    def refuse() -> StreamTarget:
        refused.append(time.monotonic())
        raise ResolveError("VCN 10.0.0.9:18531: login as edge refused with resultCode 119101201", retryable=False)

    def fail() -> StreamTarget:
        retried.append(time.monotonic())
        raise ResolveError("lookup https://lookup.example/x: no complete reply within 10 s")

    quick = BackoffPolicy(first_s=0.05, max_s=0.1)
    with running(VideoStream(0, refuse, FAST, 1.0, backoff=Backoff(quick))) as stream, \
            running(VideoStream(1, fail, FAST, 1.0, backoff=Backoff(quick))) as retrying:
        wait_until(lambda: state_of(stream) is StreamState.FAILED, 10, "FAILED")
        # a window counted by the retryable input's attempts: ten of them, while the refused one waits
        wait_until(lambda: len(retried) >= 10, 20, "ten retries of the retryable input")
        assert len(refused) == 1
        status = stream.status()
        assert status.last_error is not None and "refused with resultCode 119101201" in status.last_error
        assert "not retried" in status.last_error
        assert state_of(retrying) is StreamState.RECONNECTING
        stream.request_reconnect("the camera's URL changed")
        wait_until(lambda: len(refused) == 2, 10, "one more attempt after a reported change")
        wait_until(lambda: state_of(stream) is StreamState.FAILED, 10, "FAILED again")


def test_a_refused_vcn_login_is_tried_once_per_start_of_the_task(vcn_platform: VcnPlatform, tmp_path: Path) -> None:
    vcn_platform.cameras.update({"a#d": "rtsp://127.0.0.1:9/a", "b#d": "rtsp://127.0.0.1:9/b"})
    vcn = {"ip": vcn_platform.host, "port": vcn_platform.port, "username": vcn_platform.username,
           "password": "not-the-password"}
    task = spec("vcn", {"device_id": "a#d", "stream_type": 1}, {"device_id": "b#d", "stream_type": 1}, vcn=vcn)
    resolvers = ResolverSet(agent_settings(tmp_path), vcn_keepalive_s=0.05)  # the keep-alive must not log in either
    quick = BackoffPolicy(first_s=0.05, max_s=0.1)
    clock_calls: list[float] = []

    def fail() -> StreamTarget:
        clock_calls.append(time.monotonic())
        raise ResolveError("lookup failed")

    def start_task() -> list[VideoStream]:
        return [VideoStream(index, resolvers.resolver_for(task, "t1", index), FAST, 1.0, backoff=Backoff(quick))
                for index in range(2)]

    try:
        inputs = start_task()
        with running(inputs[0]), running(inputs[1]), \
                running(VideoStream(2, fail, FAST, 1.0, backoff=Backoff(quick))):
            wait_until(lambda: all(state_of(s) is StreamState.FAILED for s in inputs), 15, "both inputs FAILED")
            wait_until(lambda: len(clock_calls) >= 10, 20, "ten retries of a retryable input")
            assert vcn_platform.count("/loginInfo/login/v1.0") == 1  # two inputs, one account: one refused login
            assert all("refused with resultCode" in (s.status().last_error or "") for s in inputs)
        restarted = start_task()  # the task is started again: one more try
        with running(restarted[0]), running(restarted[1]):
            wait_until(lambda: all(state_of(s) is StreamState.FAILED for s in restarted), 15, "FAILED again")
        assert vcn_platform.count("/loginInfo/login/v1.0") == 2
        assert vcn_platform.count("/video/rtspurl/v1.0") == 0
    finally:
        resolvers.close()
