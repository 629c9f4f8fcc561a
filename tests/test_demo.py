"""``edge-agent demo`` as a user runs it: a subprocess with nothing configured, checked by its output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

SECONDS = 8
FPS = 25


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("EDGE_AGENT_")}
    return subprocess.run([sys.executable, "-m", "agent", "demo", *args], capture_output=True, text=True,
                          timeout=180, cwd=tmp_path, env=env)


@pytest.mark.integration
def test_demo_prints_live_events_a_summary_and_writes_an_annotated_jpeg(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = run_demo(tmp_path, "--seconds", str(SECONDS), "--output", str(output))
    assert result.returncode == 0, result.stdout + result.stderr
    out, err = result.stdout, result.stderr

    # progress on stderr, in order; the agent came up on a loopback port with its own state dir
    steps = [err.index(f"[{n}/4]") for n in range(1, 5)]
    assert steps == sorted(steps)
    state = Path(re.search(r"state in (\S+)", err).group(1))  # type: ignore[union-attr]
    assert re.search(r"REST API on http://127\.0\.0\.1:\d+", err)
    assert not state.exists()  # removed without --keep

    # events were printed as they arrived, and the summary counts the same number
    event_lines = [line for line in out.splitlines() if line.startswith("event ")]
    assert event_lines and all("object(s) in the zone" in line for line in event_lines)
    delivered = int(re.search(r"events\s+(\d+) delivered", out).group(1))  # type: ignore[union-attr]
    assert delivered == len(event_lines) >= 1
    decoded, total = map(int, re.search(r"frames decoded\s+(\d+) of (\d+)", out).groups())  # type: ignore[union-attr]
    assert total == SECONDS * FPS and 0.8 * total <= decoded <= total
    latency = re.search(r"capture → delivery: min (\d+) ms, median (\d+) ms, max (\d+) ms", out)
    assert latency is not None
    low, median, high = map(int, latency.groups())
    assert 0 <= low <= median <= high < 10_000

    # the JPEG: the scene's frame with the zone (red) and the boxes (green) drawn on it
    path = Path(re.search(r"annotated event\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    assert path == output / "demo-event.jpg"
    image = cv2.imread(str(path))
    assert image is not None and image.shape == (360, 640, 3)
    b, g, r = (image[..., i].astype(int) for i in range(3))
    zone_red = np.count_nonzero((r > 200) & (g < 80) & (b < 80))
    box_green = np.count_nonzero((g > 200) & (r < 80) & (b < 80))
    assert zone_red > 500 and box_green > 100


def test_demo_refuses_a_scene_too_short_to_show_anything(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--seconds", "1")
    assert result.returncode == 2 and "--seconds must be" in result.stderr
