"""Placement as pure functions: what a task costs and which worker takes it (which source an input reads is
``sources.source_key``, tested in tests/sources/resolvers/test_source_key.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.runtime.placement import (
    ASSUMED_HEIGHT,
    ASSUMED_WIDTH,
    InputMeasure,
    choose_worker,
    decoded_fps,
    input_cost,
    task_cost,
)

HD = ASSUMED_WIDTH * ASSUMED_HEIGHT


def test_a_task_at_or_below_the_keyframe_rate_costs_keyframes_and_above_it_every_frame() -> None:
    assert decoded_fps(1.0) == 1.0  # one keyframe a second, assumed until measured
    assert decoded_fps(0.2) == 1.0  # keyframes are decoded whole, however few are wanted
    assert decoded_fps(5.0) == 25.0
    assert input_cost(5.0) == 25 * input_cost(1.0) == 25 * HD


def test_what_a_running_input_measured_replaces_the_assumptions() -> None:
    small = InputMeasure(width=640, height=360, source_fps=15.0, keyframe_only=False)
    assert input_cost(1.0, small) == 640 * 360 * 15.0
    assert input_cost(5.0, InputMeasure(keyframe_only=True)) == HD  # the stream chose keyframes after all
    assert task_cost(1.0, [InputMeasure(), small]) == HD + 640 * 360 * 15.0


def test_the_least_loaded_worker_takes_a_new_task_and_ties_go_to_the_lowest_index() -> None:
    assert choose_worker({0: 5.0, 1: 2.0, 2: 3.0}) == 1
    assert choose_worker({0: 1.0, 1: 1.0}) == 0
    with pytest.raises(ValueError):
        choose_worker({})


def test_a_task_on_a_source_a_worker_already_reads_goes_to_that_worker_however_loaded() -> None:
    owners = {"video_source:lobby": 0}
    assert choose_worker({0: 100.0, 1: 0.0}, ["edgecamera:cam-7", "video_source:lobby"], owners) == 0
    assert choose_worker({1: 0.0, 2: 4.0}, ["video_source:lobby"], owners) == 1  # worker 0 is not a candidate


@given(st.lists(st.sampled_from([0.2, 1.0, 5.0, 25.0]), min_size=1, max_size=60), st.integers(1, 8))
def test_placing_tasks_one_by_one_keeps_workers_within_one_task_of_each_other(rates: list[float],
                                                                               workers: int) -> None:
    loads = dict.fromkeys(range(workers), 0.0)
    biggest = 0.0
    for fps in rates:
        cost = input_cost(fps)
        biggest = max(biggest, cost)
        loads[choose_worker(loads)] += cost
    assert max(loads.values()) - min(loads.values()) <= biggest


def test_a_worker_waiting_out_its_restart_backoff_takes_nothing_while_another_is_up() -> None:
    assert choose_worker({0: 0.0, 1: 9.0}, up=[1]) == 1
    owners = {"video_source:lobby": 0}
    assert choose_worker({0: 0.0, 1: 9.0}, ["video_source:lobby"], owners, up=[1]) == 1  # not even its source
    assert choose_worker({0: 3.0, 1: 1.0, 2: 2.0}, up=[0, 2]) == 2
    # no worker is up at all: every one is a candidate (the task then waits for the one it goes to)
    assert choose_worker({0: 3.0, 1: 1.0}, up=[]) == 1
    assert choose_worker({0: 3.0, 1: 1.0}, ["video_source:lobby"], owners, up=[]) == 0
