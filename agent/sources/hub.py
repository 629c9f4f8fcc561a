"""One decode per camera: the per-process hub that hands task inputs consumers of shared streams.

Inputs whose ``source_key`` is equal (the same camera, named the same way with the same credentials)
and that ask for the same decoder backend share one ``VideoStream``: one connection, one decoder, one
reconnect loop. Each input gets a ``StreamConsumer`` with its own sampling rate, latest-frame slot and
counts; the decoder runs in the cheapest mode that serves every consumer (``fanout.py``).

- The stream opens when its first consumer starts and closes when its last one stops; a consumer that
  joins or leaves changes the decode mode (at the next keyframe, see ``pyav.py``), never the connection.
- The first consumer's resolver and change watch serve the stream for its whole life: re-resolving
  (reconnects, an edgecamera URL change, a VCN re-login) happens once per stream. Whatever the key
  compares is equal for every consumer, so any consumer's resolver would answer the same; a consumer
  that joins a stream whose lookup was refused for good (FAILED) makes it try again once, as a task
  that starts on its own stream would.
- Files are never shared (``SourceKey.shared``): every task plays its file from the start to the end.
  A stream that ended (a file behind a video source) is not joined either: a new consumer gets a new
  stream. Realtime pacing is the hub's, one value per process, so consumers of one stream never differ.

One hub per data-plane process (``runtime/app.py`` builds it): sharing never crosses processes.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from agent.settings import StreamSettings
from agent.sources.fanout import Consumer
from agent.sources.frame import Frame
from agent.sources.resolvers.base import ResolveError
from agent.sources.source_key import SourceKey
from agent.sources.stream import StreamState, StreamStatus, VideoStream
from agent.sources.target import StreamTarget

log = logging.getLogger(__name__)

# Subscribes a stream's reconnect request to the source's change notices; returns the unsubscribe.
Watch = Callable[[Callable[[str], None]], Callable[[], None]]


def no_watch(on_change: Callable[[str], None]) -> Callable[[], None]:
    """For sources that never announce a change."""
    return lambda: None


@dataclass(frozen=True)
class ConsumerRequest:
    """What one task input asks of the hub."""

    key: SourceKey
    input_index: int
    target_fps: float  # 0 = every frame
    resolve: Callable[[], StreamTarget]
    watch: Watch = no_watch
    backend: str | None = None  # None: the agent's stream.backend
    wakeup: threading.Event | None = None
    name: str = ""


@dataclass(frozen=True)
class SharedStreamStatus:
    """One open stream as /metrics shows it."""

    name: str  # the stream's (named after its first consumer); unique among open streams
    source: str  # the source key's label (masked)
    backend: str
    consumers: int
    state: StreamState
    decode_mode: str | None
    fps_decoded: float


class _Members:
    """The consumers on one stream with their requests; the stream resolves through one of them.

    Never through one that left: the task that opened a camera may stop while others go on watching it,
    and its resolver may then answer no more (in a worker process a resolve asks the main process about a
    task run that has ended). Each consumer's change watch is subscribed while it is on, so the URL
    changes any of them hears reconnect the stream.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: dict[Consumer, tuple[ConsumerRequest, Callable[[], None]]] = {}

    def add(self, consumer: Consumer, request: ConsumerRequest, unwatch: Callable[[], None]) -> None:
        with self._lock:
            self._members[consumer] = (request, unwatch)

    def remove(self, consumer: Consumer) -> Callable[[], None]:
        """Forget ``consumer``; its watch's unsubscribe, for the caller to run outside any lock."""
        with self._lock:
            _, unwatch = self._members.pop(consumer, (None, lambda: None))
        return unwatch

    def resolve(self) -> StreamTarget:
        with self._lock:
            request = next(iter(self._members.values()), (None, None))[0]
        if request is None:
            raise ResolveError("no task watches this source any more")
        return request.resolve()


class _Shared:
    """An open stream, the key it is found by, and its members."""

    def __init__(self, key: tuple[object, ...], label: str, stream: VideoStream, members: _Members) -> None:
        self.key = key
        self.label = label
        self.stream = stream
        self.members = members


class StreamHub:
    def __init__(self, settings: StreamSettings, *, realtime_files: bool = True) -> None:
        self._settings = settings
        self._realtime_files = realtime_files
        self._lock = threading.Lock()
        self._joinable: dict[tuple[object, ...], _Shared] = {}
        self._open: list[_Shared] = []  # every stream with consumers, joinable or not
        self._private = itertools.count()  # keys of streams that are never shared

    def consumer(self, request: ConsumerRequest) -> StreamConsumer:
        """A handle for one task input; nothing opens until it starts."""
        return StreamConsumer(self, request)

    def streams(self) -> list[SharedStreamStatus]:
        with self._lock:
            open_ = list(self._open)
        result = []
        for shared in open_:
            status, counts = shared.stream.status(), shared.stream.counts()
            result.append(SharedStreamStatus(
                name=shared.stream.name, source=shared.label, backend=shared.stream.backend,
                consumers=counts.consumers, state=status.state, decode_mode=status.decode_mode,
                fps_decoded=counts.fps_decoded))
        return result

    # --- for StreamConsumer --------------------------------------------------------------------------
    def join(self, request: ConsumerRequest) -> tuple[_Shared, Consumer]:
        """Attach ``request`` to the open stream of its source, or open one for it."""
        backend = request.backend or self._settings.backend
        source: object = request.key if request.key.shared else ("private", next(self._private))
        key = (source, backend)
        with self._lock:
            shared = self._joinable.get(key)
            if shared is not None and shared.stream.status().state in (StreamState.ENDED, StreamState.STOPPED):
                shared = None  # a played file, or a stream on its way out: start afresh
            if shared is None:
                members = _Members()
                stream = VideoStream(request.input_index, members.resolve, self._settings, request.target_fps,
                                     backend=backend, realtime_files=self._realtime_files, wakeup=request.wakeup,
                                     name=request.name)
                members.add(stream.consumer, request, request.watch(stream.request_reconnect))
                shared = _Shared(key, request.key.label, stream, members)
                self._joinable[key] = shared
                self._open.append(shared)
                # started under the lock: a consumer leaving at once must find it started
                stream.start()
                return shared, stream.consumer
            consumer = Consumer(request.input_index, request.target_fps, request.wakeup)
            shared.stream.attach(consumer)
            shared.members.add(consumer, request, request.watch(shared.stream.request_reconnect))
            failed = shared.stream.status().state is StreamState.FAILED
        log.info("%s: %s joins (%d consumers)", shared.stream.name, request.name or "a consumer",
                 shared.stream.counts().consumers)
        if failed:  # the joining task may try once, as it would on a stream of its own
            shared.stream.request_reconnect("a task using this source started")
        return shared, consumer

    def leave(self, shared: _Shared, consumer: Consumer, timeout: float) -> None:
        """Detach ``consumer``; the last one to leave closes the stream."""
        with self._lock:
            unwatch = shared.members.remove(consumer)
            left = shared.stream.detach(consumer)
            if not left:
                if self._joinable.get(shared.key) is shared:
                    del self._joinable[shared.key]
                if shared in self._open:
                    self._open.remove(shared)
        try:
            unwatch()
        except Exception as exc:  # an unsubscribe failing must not keep the stream's consumer from stopping
            log.warning("%s: unwatch failed: %s", shared.stream.name, type(exc).__name__)
        if left:
            log.info("%s: a consumer left (%d left)", shared.stream.name, left)
            return
        shared.stream.stop(timeout)


class StreamConsumer:
    """One task input's handle on a stream that other inputs may share."""

    def __init__(self, hub: StreamHub, request: ConsumerRequest) -> None:
        self._hub = hub
        self._request = request
        self.input_index = request.input_index
        self._lock = threading.Lock()
        self._joined: tuple[_Shared, Consumer] | None = None
        self._stopped = False

    def start(self) -> None:
        with self._lock:
            if self._joined is not None or self._stopped:
                raise RuntimeError(f"{self._request.name}: a consumer starts only once")
            self._joined = self._hub.join(self._request)

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            joined, self._stopped = self._joined, True
            if joined is None:
                return
        self._hub.leave(*joined, timeout)

    def take(self) -> Frame | None:
        joined = self._joined
        return joined[1].take() if joined is not None and not self._stopped else None

    def status(self) -> StreamStatus:
        joined = self._joined
        if joined is None:
            return StreamStatus(
                input_index=self.input_index, state=StreamState.STOPPED if self._stopped else StreamState.NOT_STARTED,
                fps_in=0.0, fps_out=0.0, frames_decoded=0, frames_sampled=0, dropped=0, decode_errors=0,
                reconnects=0, last_error=None, keyframe_only=False, codec=None, width=None, height=None, url=None,
                since=0.0, shared_by=0)
        shared, consumer = joined
        status = shared.stream.status(consumer)
        return replace(status, state=StreamState.STOPPED, fps_out=0.0) if self._stopped else status
