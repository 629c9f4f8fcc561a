"""The PyAV reader on keyframes sent in chunks: whole pictures only, and a restart after a damaged one.

Cameras and GStreamer's RTP payloader send a keyframe as several packets (one per slice). The clips
here are built the same way: libx264 with two slices per picture, muxed with each keyframe split
into two packets (parameter sets + first slice, then the second slice), so the damage the reader
must survive — a keyframe's second chunk lost or garbled — is made from a real encoded stream.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from agent.settings import StreamSettings
from agent.sources.pyav import read_pyav
from agent.sources.reader import ReadEnd
from agent.sources.sampler import DecodeMode
from agent.sources.target import StreamTarget
from tests.fixtures.media import moving_gradient

FPS = 25
GOP = 25  # longer than the reader waits on a silent decoder before it calls it stuck
FRAMES = 3 * GOP
DAMAGED_KEYFRAME = GOP  # the second keyframe; the first and third stay whole
SIZE = (320, 240)

Packet = tuple[bytes, int, bool]  # Annex B access unit, pts in frames, keyframe


def encode() -> list[Packet]:
    """A moving gradient encoded with two slices per picture, parameter sets in band."""
    width, height = SIZE
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, FPS), Fraction(FPS)
    encoder.options = {"preset": "ultrafast", "g": str(GOP), "keyint_min": str(GOP), "bf": "0",
                       "sc_threshold": "0", "x264-params": "slices=2"}
    packets: list[Packet] = []
    for index in [*range(FRAMES), None]:
        if index is None:
            encoded = encoder.encode(None)
        else:
            frame = av.VideoFrame.from_ndarray(moving_gradient(SIZE, index), format="bgr24")
            frame.pts = index
            encoded = encoder.encode(frame)
        packets.extend((bytes(packet), int(packet.pts), bool(packet.is_keyframe)) for packet in encoded)
    assert [pts for _, pts, key in packets if key] == [0, GOP, 2 * GOP]
    return packets


def nal_units(access_unit: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit, each with its start code."""
    starts = []
    at = access_unit.find(b"\x00\x00\x01")
    while at >= 0:
        starts.append(at - 1 if at > 0 and access_unit[at - 1] == 0 else at)
        at = access_unit.find(b"\x00\x00\x01", at + 3)
    return [access_unit[start:end] for start, end in zip(starts, [*starts[1:], len(access_unit)], strict=True)]


def in_two_chunks(access_unit: bytes) -> tuple[bytes, bytes]:
    """A keyframe as an RTP depacketizer hands it on: parameter sets + first slice, then the second slice."""
    units = nal_units(access_unit)
    idr_slices = [i for i, unit in enumerate(units) if unit[unit.index(b"\x00\x00\x01") + 3] & 0x1F == 5]
    assert len(idr_slices) == 2
    second = idr_slices[1]
    return b"".join(units[:second]), b"".join(units[second:])


def write_chunked(path: Path, packets: list[Packet], damage: Callable[[bytes], bytes | None]) -> Path:
    """Mux ``packets`` with every keyframe in two chunks; ``damage`` rewrites (None: drops) the second
    chunk of the keyframe at DAMAGED_KEYFRAME."""
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("h264", rate=FPS)
        stream.width, stream.height = SIZE
        stream.time_base = Fraction(1, FPS)
        for access_unit, pts, key in packets:
            chunks: list[bytes | None] = [access_unit]
            if key:
                first, second = in_two_chunks(access_unit)
                chunks = [first, damage(second) if pts == DAMAGED_KEYFRAME else second]
            for chunk in chunks:
                if chunk is None:
                    continue
                packet = av.Packet(chunk)
                packet.pts = packet.dts = pts
                packet.time_base = Fraction(1, FPS)
                packet.stream = stream
                packet.is_keyframe = key
                container.mux(packet)
    return path


def reference_pictures(packets: list[Packet]) -> dict[int, np.ndarray]:
    """Every picture as a plain decoder makes it from whole access units: frame index → YUV planes."""
    decoder = av.CodecContext.create("h264", "r")
    pictures: dict[int, np.ndarray] = {}
    for access_unit, _, _ in packets:
        for frame in decoder.decode(av.Packet(access_unit)):
            pictures[len(pictures)] = frame.to_ndarray()
    for frame in decoder.decode(None):
        pictures[len(pictures)] = frame.to_ndarray()
    assert len(pictures) == FRAMES
    return pictures


class RecordingSession:
    """The stream's side of the reader contract, recording what the reader hands on and counts."""

    stop_requested = False

    def __init__(self, mode: DecodeMode) -> None:
        self.mode = mode
        self.pictures: dict[int, np.ndarray] = {}  # frame index (from stream time) → YUV planes
        self.decode_errors = 0

    def opened(self, codec: str, width: int, height: int, fps: float | None) -> None:
        assert (codec, (width, height)) == ("h264", SIZE)

    def packet(self, time: float | None, is_keyframe: bool) -> None:
        return

    def decode_mode(self) -> DecodeMode:
        return self.mode

    def next_wanted(self) -> float | None:
        return None  # every frame is wanted

    def next_keyframe(self) -> float | None:
        return None

    def keyframe_only(self, active: bool) -> None:
        return

    def pace(self, time: float | None) -> None:
        return

    def wanted(self, time: float | None) -> bool:
        return True

    def deliver(self, source: Any, pts: int | None, stream_time: float | None) -> None:
        assert stream_time is not None
        self.pictures[round(stream_time * FPS)] = source.to_ndarray()

    def decode_error(self) -> None:
        self.decode_errors += 1


@pytest.fixture(scope="module")
def packets() -> list[Packet]:
    return encode()


@pytest.fixture(scope="module")
def reference(packets: list[Packet]) -> dict[int, np.ndarray]:
    return reference_pictures(packets)


def read(path: Path, mode: DecodeMode) -> RecordingSession:
    session = RecordingSession(mode)
    assert read_pyav(StreamTarget(str(path), is_file=True), StreamSettings(), session) is ReadEnd.ENDED
    return session


def garbled(chunk: bytes) -> bytes:
    damaged = bytearray(chunk)
    for offset in range(8, len(damaged), 3):  # past the start code and slice header's first bytes
        damaged[offset] ^= 0x5A
    return bytes(damaged)


@pytest.mark.parametrize("mode", [DecodeMode.SAMPLED, DecodeMode.FULL])
def test_a_keyframe_in_two_chunks_is_handed_on_as_one_whole_picture(
        tmp_path: Path, packets: list[Packet], reference: dict[int, np.ndarray], mode: DecodeMode) -> None:
    session = read(write_chunked(tmp_path / "chunked.mkv", packets, lambda chunk: chunk), mode)
    assert session.decode_errors == 0
    assert sorted(session.pictures) == list(range(FRAMES))
    for index, picture in session.pictures.items():  # never a half-drawn keyframe
        assert np.array_equal(picture, reference[index]), f"frame {index}"


@pytest.mark.parametrize("mode", [DecodeMode.SAMPLED, DecodeMode.FULL])
@pytest.mark.parametrize("damage", [lambda chunk: None, garbled], ids=["second-chunk-lost", "second-chunk-garbled"])
def test_a_damaged_keyframe_restarts_the_decoder_at_the_next_keyframe(
        tmp_path: Path, packets: list[Packet], reference: dict[int, np.ndarray], mode: DecodeMode,
        damage: Callable[[bytes], bytes | None]) -> None:
    session = read(write_chunked(tmp_path / "damaged.mkv", packets, damage), mode)
    # the damaged picture and the frames that depend on it are never handed on; from the next
    # keyframe on, every frame is, exactly as a clean decoder makes it
    assert sorted(session.pictures) == [*range(DAMAGED_KEYFRAME), *range(DAMAGED_KEYFRAME + GOP, FRAMES)]
    for index, picture in session.pictures.items():
        assert np.array_equal(picture, reference[index]), f"frame {index}"
    # the restart is counted once, as one damaged picture. (This FFmpeg's h264 decoder also recovers by
    # itself at the next IDR, so whether the reader's new decoder was needed is not visible here.)
    assert session.decode_errors == 1
