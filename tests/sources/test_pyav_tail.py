"""Sampling decodes a GOP only up to its last wanted frame: the unwanted tail before an IDR keyframe is
never decoded, and the sampled pictures are exactly those of a decoder that decodes everything."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from agent.settings import StreamSettings
from agent.sources.pyav import read_pyav
from agent.sources.reader import ReadEnd
from agent.sources.sampler import DecodeMode, KeyframeClock, Sampler
from agent.sources.target import StreamTarget
from tests.fixtures.media import moving_gradient

FPS = 25
GOP = 25
SECONDS = 4
SIZE = (160, 120)


LATE_KEYFRAMES = (0, 25, 50, 90)  # the fourth GOP is longer than the keyframe clock expects


def write(path: Path, encoder: str, options: dict[str, str], keyframes: tuple[int, ...] = ()) -> Path:
    """A moving gradient: every frame differs, so a wrong reference shows in the pixels. ``keyframes``:
    frames forced to be IDR pictures (else the encoder's GOP decides)."""
    width, height = SIZE
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=FPS, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, FPS)
        for index in range(SECONDS * FPS):
            frame = av.VideoFrame.from_ndarray(moving_gradient(SIZE, index), format="bgr24")
            frame.pts = index
            if index in keyframes:
                frame.pict_type = av.video.frame.PictureType.I
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


CLIPS: dict[str, tuple[str, str, dict[str, str], tuple[int, ...]]] = {
    # name: (suffix, encoder, options); closed GOPs: every keyframe an IDR picture
    "h264-mp4": (".mp4", "libx264", {"preset": "ultrafast", "g": str(GOP), "keyint_min": str(GOP), "bf": "0",
                                     "sc_threshold": "0"}, ()),
    "h264-annexb-ts": (".ts", "libx264", {"preset": "ultrafast", "g": str(GOP), "keyint_min": str(GOP),
                                          "bf": "0", "sc_threshold": "0"}, ()),
    "h265-mp4": (".mp4", "libx265", {"preset": "ultrafast",
                                     "x265-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:"
                                                    "open-gop=0:log-level=error"}, ()),
    # open GOPs: keyframes are I-pictures (H.264 non-IDR, HEVC CRA) that later frames may predict across
    "h265-open-gop": (".mp4", "libx265", {"preset": "ultrafast",
                                          "x265-params": f"keyint={GOP}:min-keyint={GOP}:scenecut=0:bframes=0:"
                                                         "open-gop=1:log-level=error"}, ()),
    "h264-open-gop": (".mp4", "libx264", {"preset": "ultrafast", "sc_threshold": "0",
                                          "x264-params": f"keyint={GOP}:min-keyint={GOP}:open-gop=1:bframes=2:"
                                                         "b-adapt=0"}, ()),
    # a keyframe later than the clock expects: the held frames are decoded once a wanted time comes
    "h264-late-keyframe": (".mp4", "libx264", {"preset": "ultrafast", "bf": "0", "sc_threshold": "0",
                                               "x264-params": "keyint=1000:forced-idr=1"}, LATE_KEYFRAMES),
}


@pytest.fixture(scope="module", params=sorted(CLIPS))
def clip(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    suffix, encoder, options, keyframes = CLIPS[request.param]
    path = tmp_path_factory.mktemp("tail") / f"{request.param}{suffix}"
    return request.param, write(path, encoder, options, keyframes)


class SamplingSession:
    """The stream's side of the reader contract with a real sampler and keyframe clock."""

    stop_requested = False

    def __init__(self, fps: float, *, predict_keyframes: bool = True) -> None:
        self.sampler = Sampler(fps)
        self.clock = KeyframeClock()
        self.predict_keyframes = predict_keyframes
        self.decoded: list[int] = []  # frame indices the decoder produced, in order
        self.pictures: dict[int, np.ndarray] = {}  # sampled: frame index → YUV planes

    def opened(self, codec: str, width: int, height: int, fps: float | None) -> None:
        return

    def packet(self, time: float | None, is_keyframe: bool) -> None:
        if is_keyframe and time is not None:
            self.clock.observe(time)

    def decode_mode(self) -> DecodeMode:
        return DecodeMode.SAMPLED

    def next_wanted(self) -> float | None:
        return self.sampler.earliest_take(1 / FPS)

    def next_keyframe(self) -> float | None:
        return self.clock.next_expected if self.predict_keyframes else None

    def keyframe_only(self, active: bool) -> None:
        return

    def wanted(self, time: float | None) -> bool:
        assert time is not None
        self.decoded.append(round(time * FPS))
        return self.sampler.take(time, 1 / FPS)

    def deliver(self, source: Any, pts: int | None, stream_time: float | None) -> None:
        assert stream_time is not None
        self.pictures[round(stream_time * FPS)] = source.to_ndarray()

    def decode_error(self) -> None:
        raise AssertionError("no packet of these clips is damaged")


def read(path: Path, session: SamplingSession) -> SamplingSession:
    assert read_pyav(StreamTarget(str(path), is_file=True), StreamSettings(), session) is ReadEnd.ENDED
    return session


@pytest.mark.parametrize("fps", [5.0, 1.0])
def test_sampled_pictures_are_those_of_a_full_decode(clip: tuple[str, Path], fps: float) -> None:
    name, path = clip
    tail = read(path, SamplingSession(fps))
    everything = read(path, SamplingSession(fps, predict_keyframes=False))
    step = round(FPS / fps)
    assert sorted(tail.pictures) == sorted(everything.pictures) == list(range(0, SECONDS * FPS, step))
    for index, picture in everything.pictures.items():
        assert np.array_equal(tail.pictures[index], picture), f"{name}: frame {index} differs"
    assert sorted(everything.decoded) == list(range(SECONDS * FPS))
    if name.endswith("open-gop"):
        # nothing may be dropped before a keyframe that is not an IDR picture; only the end of the file's
        # last GOP, after its last wanted frame, needs no decoding
        last_wanted = (SECONDS * FPS - 1) // step * step
        assert set(range(last_wanted + 1)) <= set(tail.decoded)
    elif name == "h264-late-keyframe":
        # the GOP before the late keyframe is decoded whole: the frames held for the expected keyframe
        # are decoded when a wanted time comes instead, and nothing is held for an overdue one
        held_then_dropped = set(range(46, 50)) if step == 5 else set(range(26, 50))
        assert set(range(SECONDS * FPS)) - set(tail.decoded) == held_then_dropped
    else:
        # once the keyframe clock knows the interval (second keyframe), each GOP stops at its last wanted frame
        last_wanted = (GOP - 1) // step * step
        skipped = {gop + offset for gop in range(GOP, SECONDS * FPS, GOP) for offset in range(last_wanted + 1, GOP)}
        assert set(range(SECONDS * FPS)) - set(tail.decoded) == skipped
