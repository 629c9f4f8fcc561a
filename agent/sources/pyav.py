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
from collections.abc import Iterator, Sequence
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
    tail = _UnwantedTail(context.name, _nal_length_size(context.name, context.extradata),
                         1.0 / float(rate) if rate else None)

    decoder: Any = None
    mode: DecodeMode | None = None
    waited_for_keyframe = 0
    silent = 0  # packets decoded since the decoder last produced a picture

    def feed(packet: Any) -> None:
        nonlocal silent
        try:
            frames = decoder.decode(packet)
        except _DECODE_ERRORS:
            session.decode_error()
            return
        silent = 0 if frames else silent + 1
        for frame in frames:
            _hand_on(frame, seconds_per_tick, session)

    for packet in _packets(container, stream, session):
        if session.stop_requested:
            return ReadEnd.STOPPED
        if packet.size == 0:  # the demuxer's flush packet at the end of the input
            break
        is_key = packet.is_keyframe
        if is_key:  # keyframe times feed the keyframe clock; frames carry their own
            packet_time = _packet_time(packet, seconds_per_tick)
            session.packet(packet_time, True)
            for held in tail.at_keyframe(packet, packet_time):  # a tail a new chain does not end is decoded
                feed(held)
        else:
            session.packet(None, False)
            if mode is DecodeMode.KEYFRAMES:  # the commonest packet at low rates: nothing more to do
                continue
            if decoder is None and waited_for_keyframe < _MAX_PACKETS_BEFORE_KEYFRAME:
                waited_for_keyframe += 1
                continue
            if mode is DecodeMode.SAMPLED and (packet_time := _packet_time(packet, seconds_per_tick)) is not None:
                if tail.hold(packet, packet_time, session):
                    continue
                for held in tail.release():  # a frame is wanted before the keyframe after all
                    feed(held)
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
        feed(packet)
    if session.stop_requested:
        return ReadEnd.STOPPED
    if decoder is not None and not live:
        try:
            for frame in decoder.decode(None):  # frames still in the decoder (frame threading, B-frames)
                _hand_on(frame, seconds_per_tick, session)
        except _DECODE_ERRORS:
            session.decode_error()
    return ReadEnd.DISCONNECTED if live else ReadEnd.ENDED


def _packet_time(packet: Any, seconds_per_tick: float | None) -> float | None:
    """Seconds on the stream's clock; asked only where needed (not for a keyframe-only stream's other packets)."""
    ticks = packet.pts if packet.pts is not None else packet.dts
    return ticks * seconds_per_tick if ticks is not None and seconds_per_tick else None


class _UnwantedTail:
    """The end of a GOP that no consumer samples, held back instead of decoded.

    Sampling decodes every frame because each P-frame refers to the one before, but the frames after the
    last sampled one of a GOP are referred to only by frames up to the next keyframe. When the keyframe
    clock says the next keyframe comes before any consumer wants a frame again, those packets are held;
    an IDR keyframe (nothing after it refers to anything before it) then drops them undecoded. At 5 fps
    from 25 fps with a 1 s GOP that is 4 frames of 25; at 1 fps with a 2 s GOP, 24 of 50. If the guess
    was wrong — a packet at a wanted time arrives first, or the keyframe does not start afresh — the held
    packets are decoded then, in order: the sampled pictures are the same either way.
    """

    # The next keyframe may come this much of a frame interval later than the clock expects.
    _LATE_FRACTION = 0.25
    _MAX_HELD = 300  # a GOP longer than this (12 s at 25 fps) is decoded as it comes

    def __init__(self, codec: str, nal_length_size: int | None, frame_interval: float | None) -> None:
        self._codec = codec
        self._nal_length_size = nal_length_size
        self._frame_interval = frame_interval
        self._held: list[Any] = []
        self._until = 0.0  # held packets are needed once one at or after this stream time arrives
        # the last keyframe's time: a packet sharing it is the rest of that picture (a camera sends a
        # keyframe as several packets), never a tail
        self._keyframe_time: float | None = None

    def hold(self, packet: Any, time_s: float, session: ReaderSession) -> bool:
        """Hold ``packet`` (a non-key packet at ``time_s``) instead of decoding it; False: decode it now."""
        if self._held:
            if time_s < self._until and len(self._held) < self._MAX_HELD:
                self._held.append(packet)
                return True
            return False
        interval = self._frame_interval
        if interval is None or self._codec not in _IDR_NAL_TYPES:
            return False
        if self._keyframe_time is None or time_s <= self._keyframe_time:
            return False
        wanted, keyframe = session.next_wanted(), session.next_keyframe()
        if wanted is None or keyframe is None or time_s >= wanted or keyframe <= time_s:  # or it is overdue
            return False
        # the last frame before the keyframe, one interval earlier, is wanted only if it is at or after `wanted`
        if keyframe + self._LATE_FRACTION * interval >= wanted + interval:
            return False
        self._held.append(packet)
        self._until = wanted
        return True

    def release(self) -> Sequence[Any]:
        """The held packets, to be decoded before the one in hand (asked for every packet not held)."""
        if not self._held:
            return ()
        held, self._held = self._held, []
        return held

    def at_keyframe(self, packet: Any, time_s: float | None) -> Sequence[Any]:
        """A keyframe arrived: the held packets are dropped if it starts afresh, else returned to decode."""
        self._keyframe_time = time_s
        if not self._held:
            return ()
        if _is_idr(packet, self._codec, self._nal_length_size):
            self._held = []
            return ()
        return self.release()


# NAL unit types of pictures that nothing after them predicts across (H.264 IDR; HEVC IDR_W_RADL, IDR_N_LP)
_IDR_NAL_TYPES = {"h264": frozenset({5}), "hevc": frozenset({19, 20})}
_HEADER_BYTES = 4096  # parameter sets and SEI before the first slice fit in this


def _nal_length_size(codec: str, extradata: bytes | None) -> int | None:
    """Bytes of each NAL unit's length prefix in MP4-style packets; None for Annex B (start codes)."""
    if not extradata or extradata[0] != 1:  # avcC / hvcC records start with version 1
        return None
    if codec == "h264" and len(extradata) > 4:
        return (extradata[4] & 3) + 1
    if codec == "hevc" and len(extradata) > 21:
        return (extradata[21] & 3) + 1
    return None


def _is_idr(packet: Any, codec: str, nal_length_size: int | None) -> bool:
    """True when the packet's first picture NAL unit is an IDR picture; False when it is not or unclear."""
    idr = _IDR_NAL_TYPES.get(codec)
    if idr is None:
        return False
    data = bytes(memoryview(packet)[:_HEADER_BYTES])
    for header in _nal_headers(data, nal_length_size):
        if codec == "h264":
            kind = header & 0x1F
            if 1 <= kind <= 5:  # the first slice decides
                return kind in idr
        else:
            kind = (header >> 1) & 0x3F
            if kind < 32:  # VCL NAL unit
                return kind in idr
    return False


def _nal_headers(data: bytes, nal_length_size: int | None) -> Iterator[int]:
    """The first byte of each NAL unit in ``data``: length-prefixed when the codec's extradata says so
    (MP4: ``nal_length_size``), else Annex B start codes (RTSP, MPEG-TS). Never guessed from the bytes: a
    4-byte length such as 0x00000179 reads as a start code."""
    if nal_length_size is not None:
        at = 0
        while at + nal_length_size < len(data):
            size = int.from_bytes(data[at:at + nal_length_size], "big")
            yield data[at + nal_length_size]
            at += nal_length_size + size
        return
    at = data.find(b"\0\0\1")
    while at != -1 and at + 3 < len(data):
        yield data[at + 3]
        at = data.find(b"\0\0\1", at + 3)


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
