"""The restart pacing of what keeps dying (agent.backoff.RestartBackoff): worker processes and their tasks."""

from __future__ import annotations

from agent.backoff import WORKER_RESTART, BackoffPolicy, RestartBackoff

EXACT = BackoffPolicy(first_s=1.0, max_s=8.0, jitter=0.0)


def test_a_first_death_starts_again_at_once_and_quick_deaths_after_it_back_off_to_the_cap() -> None:
    restarts = RestartBackoff(EXACT, stable_s=60.0)
    assert [restarts.died(0.5) for _ in range(7)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


def test_a_run_that_lasted_the_stable_time_starts_again_at_once_and_forgets_the_deaths_before_it() -> None:
    restarts = RestartBackoff(EXACT, stable_s=60.0)
    assert [restarts.died(2.0) for _ in range(4)] == [0.0, 1.0, 2.0, 4.0]
    assert restarts.died(60.0) == 0.0
    assert restarts.died(2.0) == 1.0  # the streak starts over


def test_the_policy_in_force_is_jittered_around_a_second_first() -> None:
    restarts = RestartBackoff(WORKER_RESTART)
    assert restarts.died(0.0) == 0.0
    assert 0.8 <= restarts.died(0.0) <= 1.2
    assert all(delay <= WORKER_RESTART.max_s * 1.2 for delay in (restarts.died(0.0) for _ in range(20)))
