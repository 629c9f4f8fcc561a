"""What an algorithm reports: one Event per finding, in the VIAS result vocabulary."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.sources.frame import FrameInfo


@dataclass(frozen=True)
class Event:
    event_type: int  # VIAS number: intrusion 196609, face 65536, …
    input_index: int
    frame: FrameInfo  # the frame the finding was made on (timestamp, pts, size)
    event_set: tuple[Mapping[str, Any], ...]  # JSON-ready items: bounding_box, detection_id, category, …
    images: Mapping[str, bytes] = field(default_factory=dict)  # data_category → JPEG of the whole event
    item_images: tuple[Mapping[str, bytes], ...] = ()  # per event_set item: data_category → JPEG crop
