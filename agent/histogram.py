"""A Prometheus-style latency histogram kept by a component and read by /metrics and the benches."""

from __future__ import annotations

import bisect


class LatencyHistogram:
    """Counts per upper bound (seconds; +Inf implied). Not locked: the owner holds its own lock."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.sum += seconds
        self._counts[bisect.bisect_left(self.bounds, seconds)] += 1  # a value on a bound counts in it

    def cumulative(self) -> tuple[tuple[float, int], ...]:
        """(upper bound, observations at or below it), ending with (+Inf, total)."""
        result, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += count
            result.append((bound, running))
        return tuple(result)

    @property
    def count(self) -> int:
        return sum(self._counts)
