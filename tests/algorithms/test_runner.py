"""The runner contains what an algorithm does wrong: exceptions, wrong results, slow calls."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Iterator, Mapping

import numpy as np
import pytest

from agent.algorithms.base import Algorithm, AlgorithmConfig
from agent.algorithms.event import Event
from agent.algorithms.runner import CALL_LATENCY_BUCKETS, AlgorithmRunner
from agent.logging_setup import configure_logging
from agent.redact import secrets
from agent.sources.frame import Frame
from tests.waiting import wait_until


def frame(index: int = 0) -> Frame:
    return Frame.from_bgr(np.zeros((48, 64, 3), np.uint8), input_index=index)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def agent_log() -> Iterator[tuple[io.StringIO, FakeClock]]:
    """The agent's own log handler (the one that rate-limits repeats) writing text lines to a buffer."""
    root = logging.getLogger()
    level = root.level
    out, clock = io.StringIO(), FakeClock()
    handler = configure_logging("INFO", "text", stream=out, clock=clock)
    yield out, clock
    root.removeHandler(handler)
    handler.close()
    root.setLevel(level)
    logging.captureWarnings(False)


class Scripted(Algorithm):
    """Does per call what the test scripted: raise, sleep, block until an event is set, or return something."""

    service_name = "scripted"
    versions = ("1.0",)
    event_type = 1

    def __init__(self, script: list[object]) -> None:
        super().__init__(AlgorithmConfig(), "1.0")
        self.script = script
        self.calls = 0

    def process(self, frames: Mapping[int, Frame]) -> list[Event]:
        self.calls += 1
        action = self.script.pop(0) if self.script else "ok"
        if isinstance(action, BaseException):
            raise action
        if isinstance(action, float):
            time.sleep(action)
            action = "ok"
        if isinstance(action, threading.Event):  # a call that lasts until the test ends it
            action.wait(30)
            action = "ok"
        if action == "ok":
            return [Event(1, i, f.info, ({"n": self.calls},)) for i, f in frames.items()]
        return action  # type: ignore[return-value]  # deliberately wrong results

    def input_down(self, input_index: int, reason: str, now: float) -> list[Event]:
        raise RuntimeError(f"cannot handle {reason}")


def test_exceptions_are_counted_logged_and_skip_the_frame(caplog: pytest.LogCaptureFixture) -> None:
    algorithm = Scripted([ValueError("bad pixel"), "ok"])
    runner = AlgorithmRunner(algorithm, "task-1", max_consecutive_failures=3)
    with caplog.at_level(logging.WARNING, logger="agent.algorithms.runner"):
        assert runner.process({0: frame(0), 3: frame(3)}) == []
    assert "task-1" in caplog.text and "[0, 3]" in caplog.text and "ValueError: bad pixel" in caplog.text
    events = runner.process({0: frame()})
    assert [e.event_set[0]["n"] for e in events] == [2]
    status = runner.status()
    assert (status.calls, status.failures, status.consecutive_failures) == (2, 1, 0)
    assert status.last_error == "ValueError: bad pixel"
    assert status.healthy and runner.healthy


def test_consecutive_failures_make_it_unhealthy_until_a_call_succeeds() -> None:
    runner = AlgorithmRunner(Scripted([RuntimeError("x")] * 3), "t", max_consecutive_failures=3)
    for expected_healthy in (True, True, False):
        runner.process({0: frame()})
        assert runner.healthy is expected_healthy
    assert runner.status().consecutive_failures == 3
    assert runner.process({0: frame()}) != []
    assert runner.healthy
    assert runner.status().failures == 3


def test_failures_that_are_not_consecutive_never_make_it_unhealthy() -> None:
    runner = AlgorithmRunner(Scripted([RuntimeError("x"), "ok"] * 5), "t", max_consecutive_failures=2)
    for _ in range(10):
        runner.process({0: frame()})
        assert runner.healthy
    assert runner.status().failures == 5


@pytest.mark.parametrize("wrong", [None, "events", [object()], ({},)])
def test_a_result_that_is_not_a_list_of_events_is_a_failure(wrong: object) -> None:
    runner = AlgorithmRunner(Scripted([wrong]), "t")
    assert runner.process({0: frame()}) == []
    status = runner.status()
    assert status.failures == 1 and status.last_error is not None and status.last_error.startswith("TypeError")


def test_secrets_in_exception_messages_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    secrets.register("test:runner", ["hunter2-runner"])
    try:
        runner = AlgorithmRunner(Scripted([RuntimeError("cannot open rtsp://admin:hunter2-runner@10.0.0.9/live")]), "t")
        with caplog.at_level(logging.WARNING):
            runner.process({0: frame()})
        assert "hunter2-runner" not in caplog.text
        assert "hunter2-runner" not in str(runner.status())
    finally:
        secrets.forget("test:runner")


def test_slow_calls_are_counted_and_logged_but_their_events_kept(caplog: pytest.LogCaptureFixture) -> None:
    runner = AlgorithmRunner(Scripted([0.3, "ok"]), "task-slow", budget_s=0.1)
    with caplog.at_level(logging.WARNING):
        assert len(runner.process({0: frame()})) == 1
    assert "task-slow" in caplog.text and "budget" in caplog.text
    runner.process({0: frame()})
    status = runner.status()
    assert status.slow_calls == 1 and status.failures == 0
    assert status.latency_count == 2 and status.latency_sum >= 0.3


def test_a_call_in_progress_is_visible_to_another_thread() -> None:
    release = threading.Event()
    runner = AlgorithmRunner(Scripted([release]), "t", budget_s=0.1)
    worker = threading.Thread(target=runner.process, args=({0: frame()},), name="test-slow-algorithm")
    worker.start()
    try:
        wait_until(lambda: runner.status().in_call_s >= 0.2, 10, "the running call to show in the status")
    finally:
        release.set()
    worker.join(timeout=10)
    assert runner.status().in_call_s == 0.0


def test_latency_histogram_is_cumulative_and_ends_with_infinity() -> None:
    runner = AlgorithmRunner(Scripted(["ok", 0.03, "ok"]), "t")
    for _ in range(3):
        runner.process({0: frame()})
    buckets = runner.status().latency_buckets
    assert [bound for bound, _ in buckets] == [*CALL_LATENCY_BUCKETS, float("inf")]
    counts = [count for _, count in buckets]
    assert counts == sorted(counts) and counts[-1] == 3
    assert dict(buckets)[0.025] <= 2  # the 30 ms call is above that bound


def test_input_down_faults_are_contained_and_no_frames_means_no_call() -> None:
    algorithm = Scripted([])
    runner = AlgorithmRunner(algorithm, "t")
    assert runner.input_down(2, "connection refused", 0.0) == []
    assert runner.status().last_error == "RuntimeError: cannot handle connection refused"
    assert runner.input_up(2, 1.0) == []
    assert runner.process({}) == [] and algorithm.calls == 0


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        AlgorithmRunner(Scripted([]), "t", max_consecutive_failures=0)
    with pytest.raises(ValueError):
        AlgorithmRunner(Scripted([]), "t", budget_s=0)


def test_a_failure_on_every_frame_does_not_flood_the_log(agent_log: tuple[io.StringIO, FakeClock]) -> None:
    out, clock = agent_log
    failures = [RuntimeError(f"bad frame {n}") for n in range(50)]  # a new message every time
    runner = AlgorithmRunner(Scripted(list(failures)), "t-flood", max_consecutive_failures=3)
    for _ in range(50):
        runner.process({0: frame()})
        clock.now += 0.2
    failure_lines = [line for line in out.getvalue().splitlines() if "failed on inputs" in line]
    assert len(failure_lines) == 1 and "bad frame 0" in failure_lines[0]
    assert runner.status().failures == 50
    assert sum("in a row; the task is unhealthy" in line for line in out.getvalue().splitlines()) == 1
    clock.now += 60.0
    runner.process({0: frame()})  # a success is another line: it writes the summary of the run first
    summary = [line for line in out.getvalue().splitlines() if "failed on inputs" in line][1]
    assert "bad frame 49" in summary and "(repeated 49 times in 10 s)" in summary


def test_another_task_failing_is_not_a_repeat(agent_log: tuple[io.StringIO, FakeClock]) -> None:
    out, _ = agent_log
    for task in ("t-a", "t-b"):
        AlgorithmRunner(Scripted([RuntimeError("same")]), task).process({0: frame()})
    failure_lines = [line for line in out.getvalue().splitlines() if "failed on inputs" in line]
    assert [("t-a" in line, "t-b" in line) for line in failure_lines] == [(True, False), (False, True)]
