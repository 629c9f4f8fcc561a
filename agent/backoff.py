"""The one backoff policy: every retry loop in the agent (stream reconnects, MQTT links, outbox lanes,
restarts of worker processes and of the tasks on them) waits ``first_s · 2ⁿ`` capped at ``max_s``, spread
by ± ``jitter`` so that a fleet which lost a peer together does not come back in lock step."""

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
# Starting again what died with a worker process: the pool's replacement of a worker, the supervisor's
# relaunch of each task that was on it. A poison stream whose decoder crashes its worker, or a worker that
# dies at start-up, then forks and relaunches once a minute at worst, not as fast as the box can go.
WORKER_RESTART = BackoffPolicy(first_s=1.0, max_s=60.0)
# A worker or task that ran this long before it died was not crash-looping: it starts again at once and
# its earlier deaths are forgotten. Well past a worker's imports and its tasks' connects and first
# keyframes (seconds), where a poison stream crashes a decoder; as long as a stream's HEALTHY_AFTER_S.
STABLE_RUN_S = 60.0


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


class RestartBackoff:
    """When to start again something that died, like systemd's start limit or Kubernetes'
    CrashLoopBackOff: at once after a first death, and after a run that lasted ``stable_s`` (which forgets
    the deaths before it); a run that died sooner after its restart waits the policy's next delay."""

    def __init__(self, policy: BackoffPolicy = WORKER_RESTART, stable_s: float = STABLE_RUN_S,
                 rng: Callable[[], float] = random.random) -> None:
        self.stable_s = stable_s
        self._backoff = Backoff(policy, rng)
        self._deaths = 0  # in a row, each soon after the start before it

    def died(self, lived_s: float) -> float:
        """Seconds to wait before starting again what died after running ``lived_s``."""
        if lived_s >= self.stable_s:
            self._deaths = 0
            self._backoff.reset()
        self._deaths += 1
        return 0.0 if self._deaths == 1 else self._backoff.next()
