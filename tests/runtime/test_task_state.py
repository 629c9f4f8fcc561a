"""A running task's state, derived from its inputs and its algorithm (runtime.pipeline.derive_state).

START_FAILED is not derived here: the supervisor reports it when a start-time check or the pipeline's
construction refuses the task (tests/runtime/test_supervisor.py starts such tasks for real).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.algorithms.runner import RunnerStatus
from agent.runtime.pipeline import derive_state
from agent.sources.stream import StreamState, StreamStatus
from agent.tasks.model import TaskState

DOWN = (StreamState.RECONNECTING, StreamState.STALLED, StreamState.FAILED)  # docs/api.md: down inputs


def stream(index: int, state: StreamState, error: str | None = None) -> StreamStatus:
    return StreamStatus(input_index=index, state=state, fps_in=25.0, fps_out=5.0, frames_decoded=100,
                        frames_sampled=20, dropped=0, decode_errors=0, reconnects=0, last_error=error,
                        keyframe_only=False, codec="h264", width=640, height=360, url="rtsp://cam/1", since=0.0)


def runner(healthy: bool = True, last_error: str | None = None) -> RunnerStatus:
    return RunnerStatus(task_id="t", service_name="intrusion-detection", service_version="1.0", healthy=healthy,
                        calls=10, failures=0 if healthy else 5, consecutive_failures=0 if healthy else 5,
                        slow_calls=0, last_error=last_error, in_call_s=0.0, latency_buckets=((float("inf"), 10),),
                        latency_sum=0.1, latency_count=10)


def test_every_input_running_is_running() -> None:
    inputs = [stream(0, StreamState.RUNNING), stream(1, StreamState.RUNNING)]
    assert derive_state(inputs, runner()) == (TaskState.RUNNING, "2 input(s) running")


def test_some_inputs_down_is_still_running_and_says_which_and_why() -> None:
    inputs = [stream(0, StreamState.RUNNING), stream(1, StreamState.RECONNECTING, "connection refused"),
              stream(2, StreamState.STALLED)]
    assert derive_state(inputs, runner()) == (
        TaskState.RUNNING, "1 of 3 inputs running; input 1: connection refused")


def test_every_input_down_is_abnormal_with_the_first_ones_reason() -> None:
    inputs = [stream(0, StreamState.STALLED), stream(1, StreamState.RECONNECTING, "401 Unauthorized")]
    assert derive_state(inputs, runner()) == (TaskState.ABNORMAL, "all 2 input(s) failing; input 0: stalled")
    inputs.reverse()
    assert derive_state(inputs, runner()) == (
        TaskState.ABNORMAL, "all 2 input(s) failing; input 1: 401 Unauthorized")


def test_a_failing_algorithm_is_abnormal_whatever_the_inputs_do() -> None:
    failing = runner(healthy=False, last_error="ValueError: bad pixel")
    for inputs in ([stream(0, StreamState.RUNNING)], [stream(0, StreamState.ENDED)], []):
        assert derive_state(inputs, failing) == (TaskState.ABNORMAL, "algorithm failing: ValueError: bad pixel")
    assert derive_state([stream(0, StreamState.RUNNING)], runner(healthy=False)) == (
        TaskState.ABNORMAL, "algorithm failing: repeated errors")


def test_every_file_played_to_its_end_is_succeeded() -> None:
    inputs = [stream(0, StreamState.ENDED), stream(1, StreamState.ENDED)]
    assert derive_state(inputs, runner()) == (TaskState.SUCCEEDED, "all 2 file input(s) played to their end")


def test_a_file_that_ended_beside_a_live_input_counts_as_running() -> None:
    inputs = [stream(0, StreamState.ENDED), stream(1, StreamState.RUNNING)]
    assert derive_state(inputs, runner()) == (TaskState.RUNNING, "2 input(s) running")
    inputs = [stream(0, StreamState.ENDED), stream(1, StreamState.RECONNECTING, "timeout")]
    assert derive_state(inputs, runner()) == (TaskState.RUNNING, "1 of 2 inputs running; input 1: timeout")


def test_before_any_input_runs_it_is_starting() -> None:
    for inputs in ([stream(0, StreamState.NOT_STARTED)], [stream(0, StreamState.CONNECTING)],
                   [stream(0, StreamState.CONNECTING), stream(1, StreamState.RECONNECTING)], []):
        assert derive_state(inputs, runner()) == (TaskState.STARTING, "connecting to inputs")


@given(st.lists(st.sampled_from(list(StreamState)), max_size=5), st.booleans())
def test_the_state_follows_the_rules_docs_api_md_states(states: list[StreamState], healthy: bool) -> None:
    inputs = [stream(index, state) for index, state in enumerate(states)]
    state, reason = derive_state(inputs, runner(healthy=healthy))
    assert reason
    if not healthy:
        expected = TaskState.ABNORMAL
    elif states and all(s is StreamState.ENDED for s in states):
        expected = TaskState.SUCCEEDED
    elif states and all(s in DOWN for s in states):
        expected = TaskState.ABNORMAL
    elif any(s in (StreamState.RUNNING, StreamState.ENDED) for s in states):
        expected = TaskState.RUNNING
    else:
        expected = TaskState.STARTING
    assert state is expected
