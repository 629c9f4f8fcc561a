"""PyAV backend: demux and decode one connection, decoding no more than the sampler needs.

- Network inputs open with the FFmpeg ``timeout`` option (microseconds, socket I/O) and PyAV's
  ``timeout=(open, read)``; each raises after about twice its value instead of blocking forever.
- ``fpsprobesize=0`` cuts RTSP open → first frame from about 1.1 s to 0.35 s; size and rate are
  still known.
- Keyframes are found from the demuxer's packet flags, so the keyframe interval is known without
  decoding; in keyframe-only mode non-key packets never reach the decoder and ``skip_frame="NONKEY"``
  drops anything else that is not a keyframe.
- Broken packets are counted and skipped; they never end the stream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import av
import av.codec.context
import av.error

from agent.redact import mask_text
from agent.settings import StreamSettings
from agent.sources.reader import ReadEnd, ReaderSession, StallError, is_file_target
from agent.sources.sampler import DecodeMode
from agent.sources.target import StreamTarget

# A stream that starts mid-GOP is decoded from its first keyframe; a source that never flags
# keyframes is decoded anyway after this many packets.
_MAX_PACKETS_BEFORE_KEYFRAME = 300
# Consecutive demux errors after which the connection is considered broken.
_MAX_DEMUX_ERRORS = 50
# An open that fails only after this fraction of its timeout failed because the server did not answer.
_NO_ANSWER_FRACTION = 0.9
# A decoder that took this many packets without producing a picture is stuck on a damaged one
# (more than frame threading or B-frame reordering ever hold back).
_MAX_SILENT_PACKETS = 12
_FLAG2_CHUNKS = int(av.codec.context.Flags2.chunks)
_DECODE_ERRORS = (av.error.InvalidDataError, av.error.PatchWelcomeError, av.error.BugError, ValueError)


def open_options(target: StreamTarget, settings: StreamSettings) -> dict[str, str]:
    """FFmpeg demuxer options for ``target`` (the target's own options win)."""
    options: dict[str, str] = {}
    if not is_file_target(target):
        options["timeout"] = str(int(settings.read_timeout_s * 1_000_000))
        options["fpsprobesize"] = "0"
    if target.url.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = target.transport or settings.rtsp_transport
    options.update(target.options)
    return options


def read_pyav(target: StreamTarget, settings: StreamSettings, session: ReaderSession) -> ReadEnd:
    """Decode one connection to ``target`` until it ends, drops or the session asks to stop."""
    live = not is_file_target(target)
    started = time.monotonic()
    try:
        container = av.open(
            target.url,
            options=open_options(target, settings),
            timeout=(settings.open_timeout_s, settings.read_timeout_s) if live else None,
        )
    except (av.error.TimeoutError, av.error.ExitError) as exc:
        raise StallError(f"open timed out: {mask_text(str(exc))}") from None
    except av.error.FFmpegError as exc:
        # FFmpeg's RTSP demuxer reports a server that never answers as invalid data, after the timeout
        waited = time.monotonic() - started
        if live and waited >= _NO_ANSWER_FRACTION * min(settings.open_timeout_s, settings.read_timeout_s):
            raise StallError(f"no answer within {waited:.1f} s: {mask_text(str(exc))}") from None
        raise
    try:
        return _decode(container, live, session)
    finally:
        container.close()


def _decode(container: Any, live: bool, session: ReaderSession) -> ReadEnd:
    if not container.streams.video:
        raise ValueError("the input has no video stream")
    stream = container.streams.video[0]
    # one float, not Fraction arithmetic per packet (about 2 µs each: docs/benchmarks.md)
    seconds_per_tick = float(stream.time_base) if stream.time_base is not None else None
    rate = stream.average_rate or stream.guessed_rate
    context = stream.codec_context
    session.opened(context.name, context.width, context.height, float(rate) if rate else None)

    decoder: Any = None
    mode: DecodeMode | None = None
    waited_for_keyframe = 0
    silent = 0  # packets decoded since the decoder last produced a picture
    for packet in _packets(container, stream, session):
        if session.stop_requested:
            return ReadEnd.STOPPED
        if packet.size == 0:  # the demuxer's flush packet at the end of the input
            break
        is_key = packet.is_keyframe
        if is_key:  # only keyframe times are needed (the keyframe clock); frames carry their own
            ticks = packet.pts if packet.pts is not None else packet.dts
            session.packet(ticks * seconds_per_tick if ticks is not None and seconds_per_tick else None, True)
        else:
            session.packet(None, False)
            if mode is DecodeMode.KEYFRAMES:  # the commonest packet at low rates: nothing more to do
                continue
            if decoder is None and waited_for_keyframe < _MAX_PACKETS_BEFORE_KEYFRAME:
                waited_for_keyframe += 1
                continue
        # the decode mode can change only at a keyframe, or before the first decoder exists
        if decoder is None or is_key:
            wanted = session.decode_mode()
            stuck = silent >= _MAX_SILENT_PACKETS
            if decoder is None or wanted is not mode or stuck:
                if stuck:  # a damaged picture never completed: drop it and start over at this keyframe
                    session.decode_error()
                decoder = _switch(decoder, mode, wanted, context, restart=stuck)
                mode, silent = wanted, 0
                session.keyframe_only(mode is DecodeMode.KEYFRAMES)
            if mode is DecodeMode.KEYFRAMES and not is_key:
                continue
        try:
            frames = decoder.decode(packet)
        except _DECODE_ERRORS:
            session.decode_error()
            continue
        silent = 0 if frames else silent + 1
        for frame in frames:
            _hand_on(frame, seconds_per_tick, session)
    if session.stop_requested:
        return ReadEnd.STOPPED
    if decoder is not None and not live:
        try:
            for frame in decoder.decode(None):  # frames still in the decoder (frame threading, B-frames)
                _hand_on(frame, seconds_per_tick, session)
        except _DECODE_ERRORS:
            session.decode_error()
    return ReadEnd.DISCONNECTED if live else ReadEnd.ENDED


def _switch(decoder: Any, old: DecodeMode | None, new: DecodeMode, stream_context: Any, *, restart: bool) -> Any:
    """A decoder for ``new`` mode; called at a keyframe, so a fresh decoder can start cleanly."""
    threaded = new is DecodeMode.FULL
    if decoder is None:
        decoder = stream_context  # not opened yet: threading can still be chosen
        _configure(decoder, threaded)
    elif restart or (old is DecodeMode.FULL) != threaded:
        # threading is fixed once a decoder is open: start a new one from the stream's parameters
        decoder = av.CodecContext.create(stream_context.name, "r")
        if stream_context.extradata:
            decoder.extradata = stream_context.extradata
        _configure(decoder, threaded)
    decoder.skip_frame = "NONKEY" if new is DecodeMode.KEYFRAMES else "DEFAULT"
    return decoder


def _configure(decoder: Any, threaded: bool) -> None:
    """Set before the decoder opens: threading, and whole frames only."""
    # RTP depacketizers may split one picture over several packets (multi-slice cameras; GStreamer's
    # x264 sends an IDR as two): without CHUNKS the decoder emits a half-decoded picture per packet.
    # With it, a damaged picture may never complete; _decode restarts such a decoder at a keyframe.
    decoder.flags2 |= _FLAG2_CHUNKS
    if threaded:
        decoder.thread_type = "AUTO"
        decoder.thread_count = 0
    else:
        decoder.thread_count = 1


def _hand_on(frame: Any, seconds_per_tick: float | None, session: ReaderSession) -> None:
    pts = frame.pts
    # the stream's float time base, not ``frame.time`` (a Fraction product per frame)
    frame_time = pts * seconds_per_tick if pts is not None and seconds_per_tick is not None else None
    if session.wanted(frame_time):
        session.deliver(frame, frame.pts, frame_time)


def _packets(container: Any, stream: Any, session: ReaderSession) -> Iterator[Any]:
    """Demuxed packets; corrupt ones are counted and skipped, timeouts become ``StallError``."""
    errors_in_a_row = 0
    while True:
        try:
            for packet in container.demux(stream):
                errors_in_a_row = 0
                yield packet
            return
        except (av.error.TimeoutError, av.error.ExitError) as exc:
            raise StallError(f"read timed out: {mask_text(str(exc))}") from None
        except av.error.InvalidDataError:
            errors_in_a_row += 1
            session.decode_error()
            if errors_in_a_row >= _MAX_DEMUX_ERRORS:
                raise
