"""The one backoff policy: every retry loop in the agent (stream reconnects, MQTT links, outbox lanes)
waits ``first_s · 2ⁿ`` capped at ``max_s``, spread by ± ``jitter`` so that a fleet which lost a peer
together does not come back in lock step."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """Delay before retry ``n`` (0-based): ``first_s · 2ⁿ`` capped at ``max_s``, then ± ``jitter``."""

    first_s: float = 1.0
    max_s: float = 30.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        base = min(self.max_s, self.first_s * 2.0 ** min(max(attempt, 0), 32))
        return base * (1.0 + self.jitter * (2.0 * rng() - 1.0))


# The policies in force; each names what it paces. Tests build their own BackoffPolicy.
STREAM_RECONNECT = BackoffPolicy(first_s=1.0, max_s=30.0)
MQTT_RECONNECT = BackoffPolicy(first_s=1.0, max_s=60.0)
# An event's retries: a webhook that is down for hours is tried every few minutes, not hammered.
DELIVERY_RETRY = BackoffPolicy(first_s=1.0, max_s=300.0)


class Backoff:
    """Counts consecutive failures under a policy: ``next()`` after each failure, ``reset()`` on success."""

    def __init__(self, policy: BackoffPolicy = STREAM_RECONNECT, rng: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self._rng = rng
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt

    def next(self) -> float:
        delay = self.policy.delay(self._attempt, self._rng)
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0
