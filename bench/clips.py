"""The benches' H.264 clips: FFmpeg's ``testsrc2`` encoded with libx264, made once into bench/out/.

A clip's file name spells every parameter, so the name is the cache key: a clip with other parameters
is another file, never a stale one. A clip made again has the same parameters, not always the same
bytes (the camera-like clips, noisy at a capped rate, differ from run to run).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"


@dataclass(frozen=True)
class Clip:
    """``seconds`` of ``width``x``height`` at ``fps``, a keyframe every ``gop`` frames and never elsewhere
    (no scene-cut keyframes), ``b_frames`` B-frames, libx264 veryfast at ``bitrate`` (FFmpeg's -b:v)."""

    width: int
    height: int
    seconds: int
    gop: int
    bitrate: str
    fps: int = 25
    b_frames: int = 0
    profile: str = "high"  # x264's own choice for these clips: naming it changes nothing in the stream
    maxrate: str | None = None  # -maxrate and -bufsize: an IP camera's near-constant rate
    # temporal noise (noise=alls=N:allf=t), like a sensor's: without it P-frames cost far less than a camera's
    noise: int = 0

    @property
    def path(self) -> Path:
        name = (f"h264_{self.width}x{self.height}_{self.fps}fps_gop{self.gop}_bf{self.b_frames}_{self.profile}_"
                f"{self.bitrate}")
        if self.maxrate is not None:
            name += f"_max{self.maxrate}"
        if self.noise:
            name += f"_noise{self.noise}"
        return OUT / f"{name}_{self.seconds}s.mp4"

    def command(self, output: Path) -> list[str]:
        command = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                   "-i", f"testsrc2=size={self.width}x{self.height}:rate={self.fps}"]
        if self.noise:
            command += ["-vf", f"noise=alls={self.noise}:allf=t"]
        command += ["-t", str(self.seconds), "-c:v", "libx264", "-preset", "veryfast", "-profile:v", self.profile,
                    "-pix_fmt", "yuv420p", "-b:v", self.bitrate]
        if self.maxrate is not None:
            command += ["-maxrate", self.maxrate, "-bufsize", self.maxrate]
        return [*command, "-g", str(self.gop), "-keyint_min", str(self.gop), "-sc_threshold", "0",
                "-bf", str(self.b_frames), "-an", "-movflags", "+faststart", str(output)]


def ensure(clip: Clip, *, announce: bool = False) -> Path:
    """The clip's file, made first if bench/out/ does not hold it yet (``announce``: say so when making it)."""
    path = clip.path
    if path.exists():
        return path
    if announce:
        print(f"generating {path.name} …", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    part = path.with_suffix(".part.mp4")  # a run cut short leaves no clip that looks whole
    subprocess.run(clip.command(part), check=True)
    os.replace(part, path)
    return path
