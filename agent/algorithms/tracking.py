"""Following objects from one analysed frame to the next, so each is reported once, not every frame.

One ``Tracker`` per input. Boxes are matched to known objects by the nearest centre, predicted from the
object's last movement (a person walking past moves a body width or more between samples at a few
frames a second), or by overlap; only boxes of the same label match. A new object is reported once it
has been seen in ``confirm_hits`` samples, and again every ``cooldown_s`` while it stays; one unseen for
``ttl_s`` is forgotten, and if it comes back it is a new object with a new ``detection_id``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from agent.sources.frame import FrameInfo

Box = tuple[int, int, int, int]  # x, y, w, h

_REACH = 0.75  # how far (in box sizes) an object may stray from where its movement predicted it


@dataclass
class Track:
    detection_id: int
    box: Box
    label: int | None
    last_seen: float
    hits: int = 1
    velocity: tuple[float, float] = (0.0, 0.0)  # of the centre, pixels per second
    reported_at: float | None = None


class Tracker:
    def __init__(self, *, cooldown_s: float, confirm_hits: int = 1, ttl_s: float = 1.5) -> None:
        self.cooldown_s = cooldown_s
        self.confirm_hits = confirm_hits
        self.ttl_s = ttl_s
        self._tracks: list[Track] = []
        self._next_id = 1
        self._last_time = -math.inf

    def update(self, boxes: Sequence[Box], now: float,
               labels: Sequence[int | None] | None = None) -> list[tuple[Track, int]]:
        """Match this sample's boxes (seconds ``now`` on the stream's clock); return the objects due for a
        report, each with the index of its box in ``boxes``."""
        if now < self._last_time:  # a new stream restarted the clock: forget tracks timed on the old one
            self._tracks.clear()
        self._last_time = now
        kinds = list(labels) if labels is not None else [None] * len(boxes)
        unmatched = list(range(len(boxes)))
        matched: dict[int, int] = {}  # detection_id → box index
        for track in sorted(self._tracks, key=lambda t: -t.hits):
            candidates = [i for i in unmatched if kinds[i] == track.label]
            if not candidates:
                continue
            dt = now - track.last_seen
            cx, cy = _centre(track.box)
            expected = (cx + track.velocity[0] * dt, cy + track.velocity[1] * dt)
            reach = max(track.box[2], track.box[3]) * _REACH + 4
            nearest = min(candidates, key=lambda i: math.dist(expected, _centre(boxes[i])))
            # Overlap also counts: an object merged with a neighbour or a decoding smear for a frame has
            # its centre moved far, but it is still the same object.
            if math.dist(expected, _centre(boxes[nearest])) <= reach or _overlap(track.box, boxes[nearest]):
                unmatched.remove(nearest)
                nx, ny = _centre(boxes[nearest])
                if dt > 0:
                    track.velocity = ((nx - cx) / dt, (ny - cy) / dt)
                track.box, track.last_seen = boxes[nearest], now
                track.hits += 1
                matched[track.detection_id] = nearest
        for index in unmatched:
            self._tracks.append(Track(self._next_id, boxes[index], kinds[index], now))
            matched[self._next_id] = index
            self._next_id += 1
        self._tracks = [t for t in self._tracks if now - t.last_seen <= self.ttl_s]
        due = []
        for track in self._tracks:
            if track.last_seen != now or track.hits < self.confirm_hits:
                continue
            if track.reported_at is None or now - track.reported_at >= self.cooldown_s:
                track.reported_at = now
                due.append((track, matched[track.detection_id]))
        return due

    def live_ids(self) -> set[int]:
        return {track.detection_id for track in self._tracks}


def frame_time(info: FrameInfo) -> float:
    """Seconds on the stream's clock when known (files are decoded faster than real time), else wall time."""
    return info.stream_time if info.stream_time is not None else info.captured_at


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _centre(box: Box) -> tuple[float, float]:
    return box[0] + box[2] / 2, box[1] + box[3] / 2
