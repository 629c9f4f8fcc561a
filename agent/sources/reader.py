"""The contract between a stream (state, sampling, slot, watchdog) and a decoding backend.

A reader opens one connection to a target, decodes until the stream ends, the connection drops or it
is asked to stop, and tells the session what happens on the way. A reader raises for failures: a
``StallError`` when the source stopped sending, anything else for a broken connection. Readers never
log URLs or exception texts unmasked.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Protocol

from agent.settings import StreamSettings
from agent.sources.sampler import DecodeMode
from agent.sources.target import StreamTarget


def is_file_target(target: StreamTarget) -> bool:
    """Files play to their end; anything with a network scheme is live."""
    if target.is_file:
        return True
    scheme = target.url.split("://", 1)[0].lower() if "://" in target.url else ""
    return scheme in ("", "file")


class ReadEnd(Enum):
    ENDED = "ended"  # a file played to its end
    DISCONNECTED = "disconnected"  # a live stream stopped delivering (the server went away)
    STOPPED = "stopped"  # the session asked the reader to stop


class StallError(Exception):
    """The source sent nothing for longer than the read timeout."""


class ReaderSession(Protocol):
    """What a reader reports to, and asks of, the stream that runs it (one object per connection)."""

    @property
    def stop_requested(self) -> bool: ...

    def opened(self, codec: str, width: int, height: int, fps: float | None) -> None:
        """The connection is open and the video stream is known."""

    def packet(self, time: float | None, is_keyframe: bool) -> None:
        """A packet (one source frame) arrived; feeds the watchdog, fps_in and the keyframe clock.

        Only a keyframe's ``time`` is used (the keyframe clock): a reader may pass None for the others.
        """

    def decode_mode(self) -> DecodeMode:
        """How the reader should decode from the next keyframe on."""

    def next_wanted(self) -> float | None:
        """The earliest stream time (s) a decoded frame would be handed on at; None: the next one may be."""

    def next_keyframe(self) -> float | None:
        """When the next keyframe should come (s, on the stream's clock), from the recent intervals."""

    def keyframe_only(self, active: bool) -> None:
        """The decoder switched keyframe-only mode on or off."""

    def wanted(self, time: float | None) -> bool:
        """A frame was decoded at ``time``: should it be handed on (and only then converted)?

        When a file plays at its native rate, a wanted frame returns only when it is due.
        """

    def deliver(self, source: Any, pts: int | None, stream_time: float | None) -> None:
        """Hand a sampled frame (an av.VideoFrame or a BGR ndarray) to the consumer."""

    def decode_error(self) -> None:
        """A packet could not be decoded (counted; the stream goes on)."""


class Reader(Protocol):
    def __call__(self, target: StreamTarget, settings: StreamSettings, session: ReaderSession) -> ReadEnd: ...
