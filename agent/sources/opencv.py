"""OpenCV backend: ``cv2.VideoCapture`` with CAP_FFMPEG behind the same reader contract.

Slower than the PyAV backend (docs/benchmarks.md): OpenCV decodes every frame with its own threading
and offers no keyframe-only mode. It still converts only sampled frames: ``grab()`` decodes, and only
a frame the sampler wants is ``retrieve()``d (converted to BGR).
"""

from __future__ import annotations

import os
import threading
import time

import cv2

from agent.redact import mask_text
from agent.settings import StreamSettings
from agent.sources.reader import ReadEnd, ReaderSession, StallError, is_file_target
from agent.sources.target import StreamTarget

# OpenCV reads FFmpeg demuxer options from this process-wide variable when a capture opens.
_OPTIONS_VARIABLE = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_open_lock = threading.Lock()


def _capture_options(target: StreamTarget, settings: StreamSettings) -> str:
    options: dict[str, str] = {}
    if target.url.lower().startswith(("rtsp://", "rtsps://")):
        options["rtsp_transport"] = target.transport or settings.rtsp_transport
    options.update(target.options)
    return "|".join(f"{key};{value}" for key, value in options.items())


def _open(target: StreamTarget, settings: StreamSettings) -> cv2.VideoCapture:
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(settings.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(settings.read_timeout_s * 1000),
    ]
    with _open_lock:
        previous = os.environ.get(_OPTIONS_VARIABLE)
        os.environ[_OPTIONS_VARIABLE] = _capture_options(target, settings)
        try:
            capture = cv2.VideoCapture(target.url, cv2.CAP_FFMPEG, params)
        finally:
            if previous is None:
                os.environ.pop(_OPTIONS_VARIABLE, None)
            else:
                os.environ[_OPTIONS_VARIABLE] = previous
    return capture


def _codec_name(capture: cv2.VideoCapture) -> str:
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC))
    name = "".join(chr((fourcc >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ").lower()
    return {"avc1": "h264", "h264": "h264", "hevc": "hevc", "hev1": "hevc", "hvc1": "hevc"}.get(name, name)


def read_opencv(target: StreamTarget, settings: StreamSettings, session: ReaderSession) -> ReadEnd:
    """Decode one connection to ``target`` with OpenCV until it ends, drops or is asked to stop."""
    started = time.monotonic()
    capture = _open(target, settings)
    try:
        if not capture.isOpened():
            if time.monotonic() - started >= settings.open_timeout_s:
                raise StallError(f"open timed out: {mask_text(target.url)}")
            raise ConnectionError(f"cannot open {mask_text(target.url)}")
        fps = capture.get(cv2.CAP_PROP_FPS)
        session.opened(
            _codec_name(capture),
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            fps if 0 < fps < 1000 else None,
        )
        session.keyframe_only(False)
        live = not is_file_target(target)
        while not session.stop_requested:
            asked = time.monotonic()
            if not capture.grab():
                if live and time.monotonic() - asked >= settings.read_timeout_s:
                    raise StallError("read timed out")
                return ReadEnd.DISCONNECTED if live else ReadEnd.ENDED
            position_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
            frame_time = position_ms / 1000.0 if position_ms >= 0 else None
            session.packet(frame_time, False)
            if not session.wanted(frame_time):
                continue
            ok, image = capture.retrieve()
            if not ok or image is None:
                session.decode_error()
                continue
            session.deliver(image, None, frame_time)
        return ReadEnd.STOPPED
    finally:
        capture.release()
