"""What a resolver hands the stream: a playable URL and how to open it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from agent.redact import mask_url


@dataclass(frozen=True)
class StreamTarget:
    url: str  # may carry credentials: log ``masked`` only
    transport: Literal["tcp", "udp"] | None = None  # None: the agent's stream.rtsp_transport
    is_file: bool = False  # a local file or a finite HTTP file: plays to its end, then the stream ends
    options: dict[str, str] = field(default_factory=dict)  # extra FFmpeg demuxer options
    expires_at: float | None = None  # epoch seconds after which the URL must be resolved again

    @property
    def masked(self) -> str:
        return mask_url(self.url)

    def __repr__(self) -> str:
        return f"StreamTarget(url={self.masked!r}, is_file={self.is_file})"
