"""The judgement of a stream probe, on figures given directly (the probe itself runs in test_command)."""

from __future__ import annotations

from typing import Any

import pytest

from agent.diag.report import Level
from agent.diag.stream import Probe, stream_checks


def good_probe(**changes: Any) -> Probe:
    values: dict[str, Any] = {"url": "rtsp://***@cam/1", "transport": "tcp", "open_s": 0.4, "codec": "h264",
                              "width": 1280, "height": 720, "fps": 25.0, "keyframe_interval_s": 2.0,
                              "sample_s": 5.0, "frames": 125, "decoded_fps": 25.0}
    values.update(changes)
    return Probe(**values)


@pytest.mark.parametrize(("changes", "open_level", "decode_level", "hint_word"), [
    ({}, Level.OK, Level.OK, None),
    ({"keyframe_interval_s": 8.0}, Level.WARN, Level.OK, "I-frame interval"),
    ({"decode_errors": 3}, Level.OK, Level.WARN, "packet loss"),
    ({"frames": 50, "decoded_fps": 10.0}, Level.OK, Level.WARN, "fewer frames"),
    ({"decode_ms_per_frame": 40.0}, Level.OK, Level.WARN, "sub-stream"),
    ({"decode_ms_per_frame": 4.0}, Level.OK, Level.OK, None),
    ({"frames": 0, "decoded_fps": 0.0}, Level.OK, Level.FAIL, "nothing decoded"),
    ({"error": "the server ended the stream after 1.0 s", "hint": "check the link"}, Level.OK, Level.FAIL,
     "check the link"),
    ({"frames": 40, "decoded_fps": 400.0, "ended": True, "fps": 25.0}, Level.OK, Level.OK, None),
])
def test_stream_findings_become_levels_with_hints(changes: dict[str, Any], open_level: Level,
                                                  decode_level: Level, hint_word: str | None) -> None:
    opened, decoded = stream_checks("cam", good_probe(**changes))
    assert (opened.level, decoded.level) == (open_level, decode_level)
    hints = " ".join(h for h in (opened.hint, decoded.hint) if h)
    assert (hint_word is None and not hints) or (hint_word is not None and hint_word in hints)
    assert "1280x720" in opened.detail and "keyframe every" in opened.detail


def test_a_failed_open_is_one_fail_row() -> None:
    checks = stream_checks("cam", Probe("rtsp://***@cam/1", "tcp", error="connection refused", hint="Fix it."))
    assert [(c.level, c.hint) for c in checks] == [(Level.FAIL, "Fix it.")]
