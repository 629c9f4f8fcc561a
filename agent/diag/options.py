"""What the operator asked ``edge-agent diag`` for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DiagOptions:
    config: str | None = None
    as_json: bool = False
    url: str | None = None  # probe this one stream instead of the tasks
    timeout_s: float = 5.0  # per network check
    sample_s: float = 5.0  # decoding per stream probe
    project: str = "default"  # for the API token check; task views are asked in each task's own project
