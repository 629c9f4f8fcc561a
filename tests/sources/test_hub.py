"""StreamHub against a real GStreamer RTSP server: one connection per camera, however many consumers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

import pytest

from agent.settings import StreamSettings
from agent.sources.hub import ConsumerRequest, StreamConsumer, StreamHub
from agent.sources.source_key import source_key
from agent.sources.stream import StreamState
from agent.sources.target import StreamTarget
from tests.fixtures.media import ClipMaker
from tests.fixtures.rtsp import RtspServerFactory
from tests.sources.resolvers.helpers import spec
from tests.waiting import wait_until

FAST = StreamSettings(open_timeout_s=2.0, read_timeout_s=2.0, stall_timeout_s=2.0)


class Task:
    """Stands for a task's worker: takes its consumer's frames as they come, and counts them."""

    def __init__(self, consumer: StreamConsumer) -> None:
        self.consumer = consumer
        self.frames = 0
        self.indexes: set[int] = set()
        self._stop = threading.Event()
        self._wakeup = threading.Event()
        self._thread = threading.Thread(target=self._take, daemon=True)

    def start(self) -> Task:
        self.consumer.start()
        self._thread.start()
        return self

    def _take(self) -> None:
        while not self._stop.wait(0.01):
            frame = self.consumer.take()
            if frame is not None:
                self.frames += 1
                self.indexes.add(frame.info.input_index)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.consumer.stop()

    def advances(self, by: int = 2) -> None:
        """Its frames keep coming (``by`` more of them)."""
        start = self.frames
        wait_until(lambda: self.frames >= start + by, 30, f"consumer {self.consumer.input_index}'s frames")


@pytest.fixture
def hub() -> Iterator[StreamHub]:
    yield StreamHub(FAST)


def request(url: str, index: int, fps: float, *, resolved: Callable[[], StreamTarget] | None = None) -> ConsumerRequest:
    return ConsumerRequest(key=source_key(spec("url", {"url": url}), 0), input_index=index, target_fps=fps,
                           resolve=resolved or (lambda: StreamTarget(url)), name=f"consumer-{index}")


@contextmanager
def tasks(*made: Task) -> Iterator[tuple[Task, ...]]:
    for task in made:
        task.start()
    try:
        yield made
    finally:
        for task in made:
            task.stop()


def test_three_consumers_at_different_rates_make_one_connection(
        hub: StreamHub, rtsp_server: RtspServerFactory) -> None:
    server = rtsp_server(codec="h264", fps=25, gop=25)
    rates = (0.5, 2.0, 5.0)
    made = [Task(hub.consumer(request(server.url, index, fps))) for index, fps in enumerate(rates)]
    with tasks(*made):
        for task in made:
            task.advances()
            assert task.indexes == {task.consumer.input_index}  # each gets frames under its own index
        assert server.clients() == 1
        statuses = [task.consumer.status() for task in made]
        assert all(s.state is StreamState.RUNNING and s.shared_by == 3 for s in statuses)
        assert len({s.frames_decoded for s in statuses}) <= 2  # one decoder counting (read at slightly different times)
        # each consumer's own counts: the 5 fps one sampled more than the 0.5 fps one
        wait_until(lambda: made[2].consumer.status().frames_sampled > 3 * made[0].consumer.status().frames_sampled,
                   30, "the faster consumer to sample more")
        [shared] = hub.streams()
        assert shared.consumers == 3 and shared.state is StreamState.RUNNING
        assert server.clients() == 1


def test_consumers_joining_and_leaving_keep_one_connection_and_the_others_flowing(
        hub: StreamHub, rtsp_server: RtspServerFactory) -> None:
    server = rtsp_server(codec="h264", fps=25, gop=25)
    first, second = Task(hub.consumer(request(server.url, 0, 2.0))), Task(hub.consumer(request(server.url, 1, 1.0)))
    with tasks(first, second):
        first.advances()
        second.advances()
        reconnects = first.consumer.status().reconnects
        second.stop()  # the first task leaves…
        first.advances()
        assert server.clients() == 1
        third = Task(hub.consumer(request(server.url, 2, 5.0)))
        with tasks(third):  # …and another joins
            third.advances()
            first.advances()
            assert server.clients() == 1
            assert third.consumer.status().shared_by == 2
        first.advances()
        assert first.consumer.status().reconnects == reconnects  # nobody's coming or going touched the connection
        assert server.clients() == 1
    wait_until(lambda: server.clients() == 0, 15, "the last consumer's leaving to close the connection")
    assert hub.streams() == []
    assert first.consumer.status().state is StreamState.STOPPED


def test_keyframes_only_while_every_rate_allows_full_decode_when_one_needs_more(
        hub: StreamHub, rtsp_server: RtspServerFactory) -> None:
    server = rtsp_server(codec="h264", fps=25, gop=25)  # a keyframe every second
    slow, slower = Task(hub.consumer(request(server.url, 0, 1.0))), Task(hub.consumer(request(server.url, 1, 0.5)))
    with tasks(slow, slower):
        slow.advances()
        wait_until(lambda: slow.consumer.status().decode_mode == "keyframes", 30, "keyframe-only decoding")
        assert slow.consumer.status().keyframe_only
        every = Task(hub.consumer(request(server.url, 2, 0.0)))
        with tasks(every):
            wait_until(lambda: slow.consumer.status().decode_mode == "full", 30, "full decoding for every frame")
            every.advances(10)
            slow.advances()
            assert every.consumer.status().decode_mode == "full" and not slower.consumer.status().keyframe_only
        # the demanding consumer left: back to keyframes at the next keyframe, on the same connection
        wait_until(lambda: slow.consumer.status().decode_mode == "keyframes", 30, "keyframes again")
        slower.advances(1)
        assert server.clients() == 1 and slow.consumer.status().reconnects == 0


def test_different_credentials_are_different_sources(hub: StreamHub, rtsp_server: RtspServerFactory) -> None:
    server = rtsp_server(codec="h264")  # it does not check credentials: two logins, two connections
    made = [Task(hub.consumer(request(server.url_with("ops", password), index, 1.0)))
            for index, password in enumerate(("first-pw", "second-pw"))]
    with tasks(*made):
        for task in made:
            task.advances()
        assert server.clients() == 2
        assert sorted(s.consumers for s in hub.streams()) == [1, 1]
        assert all("first-pw" not in str(s) and "second-pw" not in str(s) for s in hub.streams())


def test_files_are_never_shared(hub: StreamHub, make_clip: ClipMaker) -> None:
    clip = make_clip(seconds=1.0)
    made = [Task(hub.consumer(ConsumerRequest(key=source_key(spec("url", {"url": str(clip)}), 0), input_index=i,
                                              target_fps=5.0, resolve=lambda: StreamTarget(str(clip), is_file=True))))
            for i in range(2)]
    with tasks(*made):
        assert len(hub.streams()) == 2  # each task plays the file from its start
        wait_until(lambda: all(t.consumer.status().state is StreamState.ENDED for t in made), 30, "the files to end")
        assert all(task.frames >= 4 for task in made)



def test_when_the_consumer_that_opened_a_camera_leaves_the_stream_resolves_and_hears_changes_through_another(
        hub: StreamHub, rtsp_server: RtspServerFactory) -> None:
    # In a worker process the first task's resolve asks the main process about a run that has ended: it
    # can answer no more once that task left, while the camera goes on serving the others.
    server = rtsp_server(codec="h264", fps=25, gop=25)
    first_left = threading.Event()
    resolved_by: list[int] = []
    heard: list[Callable[[str], None]] = []

    def resolver(index: int) -> Callable[[], StreamTarget]:
        def resolve() -> StreamTarget:
            if index == 0 and first_left.is_set():
                raise AssertionError("resolved through a consumer that left")
            resolved_by.append(index)
            return StreamTarget(server.url)
        return resolve

    def watch(on_change: Callable[[str], None]) -> Callable[[], None]:
        heard.append(on_change)
        return lambda: heard.remove(on_change)

    def make(index: int) -> Task:
        return Task(hub.consumer(replace(request(server.url, index, 2.0, resolved=resolver(index)), watch=watch)))

    first = make(0).start()  # opens the camera
    second = make(1)
    with tasks(second):
        try:
            first.advances()
            second.advances()
            assert len(heard) == 2  # each consumer's watch is subscribed while it is on
        finally:
            first.stop()
        first_left.set()
        assert len(heard) == 1 and server.clients() == 1
        reconnects = second.consumer.status().reconnects
        heard[0]("the camera's URL changed")  # what the remaining task's watch hears
        wait_until(lambda: second.consumer.status().reconnects > reconnects, 30, "the reconnect")
        second.advances()
        assert resolved_by[-1] == 1 and second.consumer.status().state is StreamState.RUNNING
