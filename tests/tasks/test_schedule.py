"""Weekly schedules: examples walked with an injected clock, and properties against a brute-force oracle.

The oracle below reads the raw windows day by day (no runs, no merging, no week wrap arithmetic) so it
is an independent statement of the rules in agent/tasks/schedule.py.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.tasks.model import TaskSchedule
from agent.tasks.schedule import (
    ScheduleStatus,
    is_active,
    next_change,
    next_start,
    schedule_status,
)

UTC = timezone.utc
TICK = timedelta(microseconds=1)
MONDAY = datetime(2026, 11, 23)  # a Monday, local wall time


def weekly(periods: list[list[tuple[str, str]]], tz: str = "+00:00", days: list[int] | None = None) -> TaskSchedule:
    return TaskSchedule.model_validate({
        "type": "weekly",
        "timezone": tz,
        "days_of_week": days if days is not None else list(range(1, 8)),
        "periods": [[{"begin_at": b, "end_at": e} for b, e in day] for day in periods],
    })


def local(schedule: TaskSchedule, day: int, clock: str, week: int = 0) -> datetime:
    """The UTC instant of ``clock`` on weekday ``day`` (1 = Monday) in the schedule's own offset."""
    wall = datetime.combine(MONDAY.date() + timedelta(days=day - 1 + 7 * week), time.fromisoformat(clock))
    return (wall - timedelta(minutes=schedule.offset_minutes)).replace(tzinfo=UTC)


def transitions(schedule: TaskSchedule, start: datetime, end: datetime) -> list[tuple[datetime, bool]]:
    """Follow next_change like the supervisor's timer does: (instant, active from then on)."""
    seen: list[tuple[datetime, bool]] = []
    at = start
    while (change := next_change(schedule, at)) is not None and change < end:
        assert change > at
        seen.append((change, is_active(schedule, change)))
        at = change
    return seen


# --- the oracle ----------------------------------------------------------------------------------

def _sec(clock: str) -> int:
    value = time.fromisoformat(clock)
    return value.hour * 3600 + value.minute * 60 + value.second


def oracle_active(schedule: TaskSchedule, at: datetime) -> bool:
    wall = at.astimezone(UTC).replace(tzinfo=None) + timedelta(minutes=schedule.offset_minutes)
    day = wall.isoweekday()
    clock = wall.hour * 3600 + wall.minute * 60 + wall.second + wall.microsecond / 1e6
    following = wall.isoweekday() % 7 + 1
    midnight_start = any(_sec(p.begin_at) == 0 for p in schedule.windows_of(following))
    for period in schedule.windows_of(day):
        begin, end = _sec(period.begin_at), _sec(period.end_at)
        if begin <= clock < end:
            return True
        if midnight_start and end >= _sec("23:59:00") and begin <= clock:
            return True
    return False


def oracle_candidates(schedule: TaskSchedule, at: datetime) -> list[datetime]:
    """Every instant where the oracle could change, over the 9 local days around ``at``."""
    offsets = {0} | {_sec(p.begin_at) for d in schedule.periods for p in d} | {
        _sec(p.end_at) for d in schedule.periods for p in d}
    wall = at.astimezone(UTC).replace(tzinfo=None) + timedelta(minutes=schedule.offset_minutes)
    first = datetime.combine(wall.date() - timedelta(days=1), time())
    shift = timedelta(minutes=schedule.offset_minutes)
    return sorted(
        (first + timedelta(days=d, seconds=s) - shift).replace(tzinfo=UTC)
        for d in range(10) for s in offsets
    )


def oracle_next_change(schedule: TaskSchedule, at: datetime) -> datetime | None:
    now = oracle_active(schedule, at)
    for candidate in oracle_candidates(schedule, at):
        if candidate > at and oracle_active(schedule, candidate) != now:
            return candidate
    return None


def oracle_next_start(schedule: TaskSchedule, at: datetime) -> datetime | None:
    for candidate in oracle_candidates(schedule, at):
        if candidate > at and oracle_active(schedule, candidate) and not oracle_active(schedule, candidate - TICK):
            return candidate
    return None


# --- examples ------------------------------------------------------------------------------------

def test_documented_example_runs_friday_night_through_saturday_and_sunday_night() -> None:
    schedule = weekly(
        [[], [], [], [], [("22:15:00", "23:59:00")], [("00:00:00", "23:59:00")], [("22:15:00", "23:59:00")]],
        tz="+08:00",
    )
    start = local(schedule, 1, "00:00:00")
    assert transitions(schedule, start, start + timedelta(days=14)) == [
        (local(schedule, 5, "22:15:00"), True),
        (local(schedule, 6, "23:59:00"), False),  # Sunday has no 00:00 window: stops at Saturday 23:59
        (local(schedule, 7, "22:15:00"), True),
        (local(schedule, 7, "23:59:00"), False),  # Monday has no 00:00 window: no week wrap
        (local(schedule, 5, "22:15:00", week=1), True),
        (local(schedule, 6, "23:59:00", week=1), False),
        (local(schedule, 7, "22:15:00", week=1), True),
        (local(schedule, 7, "23:59:00", week=1), False),
    ]
    # no stop at Friday midnight: active through the bridged minute and into Saturday
    for clock in ("23:58:59", "23:59:00", "23:59:59"):
        assert is_active(schedule, local(schedule, 5, clock))
    assert is_active(schedule, local(schedule, 6, "00:00:00"))
    assert next_change(schedule, local(schedule, 5, "23:59:30")) == local(schedule, 6, "23:59:00")
    # the +08:00 offset: Friday 22:15 local is Friday 14:15 UTC
    assert local(schedule, 5, "22:15:00") == datetime(2026, 11, 27, 14, 15, tzinfo=UTC)


def test_documented_example_minute_by_minute_over_a_week() -> None:
    schedule = weekly(
        [[], [], [], [], [("22:15:00", "23:59:00")], [("00:00:00", "23:59:00")], [("22:15:00", "23:59:00")]],
        tz="+08:00",
    )
    start = local(schedule, 1, "00:00:00")
    runs = [(local(schedule, 5, "22:15:00"), local(schedule, 6, "23:59:00")),
            (local(schedule, 7, "22:15:00"), local(schedule, 7, "23:59:00"))]
    for minute in range(7 * 24 * 60):
        at = start + timedelta(minutes=minute)
        expected = any(begin <= at < end for begin, end in runs)
        assert is_active(schedule, at) is expected, at


def test_midnight_bridge_makes_one_run_across_days() -> None:
    schedule = weekly([[("08:00:00", "23:59:00")], [("00:00:00", "06:00:00")]])
    status = schedule_status(schedule, local(schedule, 1, "12:00:00"))
    assert status == ScheduleStatus(True, local(schedule, 2, "06:00:00"), local(schedule, 1, "08:00:00", week=1))
    assert is_active(schedule, local(schedule, 1, "23:59:30"))


def test_window_ending_235959_also_bridges_to_a_midnight_window() -> None:
    schedule = weekly([[("08:00:00", "23:59:59")], [("00:00:00", "06:00:00")]])
    assert is_active(schedule, local(schedule, 1, "23:59:59.5"))
    assert next_change(schedule, local(schedule, 1, "08:00:00")) == local(schedule, 2, "06:00:00")


@pytest.mark.parametrize("end", ["23:59:00", "23:59:59"])
def test_late_window_without_midnight_follow_up_ends_at_its_end(end: str) -> None:
    schedule = weekly([[("20:00:00", end)], [("00:00:01", "06:00:00")]])
    assert next_change(schedule, local(schedule, 1, "21:00:00")) == local(schedule, 1, end)
    assert not is_active(schedule, local(schedule, 1, end))
    assert next_start(schedule, local(schedule, 1, end)) == local(schedule, 2, "00:00:01")


def test_window_ending_before_2359_does_not_bridge() -> None:
    schedule = weekly([[("20:00:00", "23:58:59")], [("00:00:00", "06:00:00")]])
    assert transitions(schedule, local(schedule, 1, "19:00:00"), local(schedule, 2, "07:00:00")) == [
        (local(schedule, 1, "20:00:00"), True),
        (local(schedule, 1, "23:58:59"), False),
        (local(schedule, 2, "00:00:00"), True),
        (local(schedule, 2, "06:00:00"), False),
    ]


def test_no_bridge_into_a_day_missing_from_days_of_week() -> None:
    schedule = weekly([[("20:00:00", "23:59:00")], [("00:00:00", "06:00:00")]], days=[1])
    assert next_change(schedule, local(schedule, 1, "21:00:00")) == local(schedule, 1, "23:59:00")
    assert not is_active(schedule, local(schedule, 2, "01:00:00"))
    assert next_start(schedule, local(schedule, 1, "23:59:00")) == local(schedule, 1, "20:00:00", week=1)


def test_week_wraps_from_sunday_into_monday() -> None:
    schedule = weekly([[("00:00:00", "02:00:00")], [], [], [], [], [], [("20:00:00", "23:59:00")]])
    at = local(schedule, 7, "21:00:00")
    assert is_active(schedule, at)
    assert next_change(schedule, at) == local(schedule, 1, "02:00:00", week=1)
    assert next_change(schedule, local(schedule, 1, "01:00:00")) == local(schedule, 1, "02:00:00")
    assert next_start(schedule, local(schedule, 1, "01:00:00")) == local(schedule, 7, "20:00:00")
    assert transitions(schedule, local(schedule, 1, "03:00:00"), local(schedule, 1, "03:00:00", week=2)) == [
        (local(schedule, 7, "20:00:00"), True),
        (local(schedule, 1, "02:00:00", week=1), False),
        (local(schedule, 7, "20:00:00", week=1), True),
        (local(schedule, 1, "02:00:00", week=2), False),
    ]


def test_every_day_bridged_never_changes() -> None:
    schedule = weekly([[("00:00:00", "23:59:00")]] * 7)
    at = local(schedule, 3, "10:00:00")
    assert schedule_status(schedule, at) == ScheduleStatus(True, None, None)
    assert is_active(schedule, local(schedule, 7, "23:59:30"))
    assert is_active(schedule, local(schedule, 1, "00:00:00"))


def test_chain_of_bridged_days_is_one_run_of_the_week() -> None:
    schedule = weekly([[("00:00:00", "23:59:00")]] * 6 + [[("00:00:00", "23:00:00")]])
    assert transitions(schedule, local(schedule, 1, "12:00:00"), local(schedule, 1, "12:00:00", week=2)) == [
        (local(schedule, 7, "23:00:00"), False),
        (local(schedule, 1, "00:00:00", week=1), True),
        (local(schedule, 7, "23:00:00", week=1), False),
        (local(schedule, 1, "00:00:00", week=2), True),
    ]


def test_windows_are_half_open() -> None:
    schedule = weekly([[("10:00:00", "11:00:00")]])
    assert is_active(schedule, local(schedule, 1, "10:00:00"))
    assert not is_active(schedule, local(schedule, 1, "10:00:00") - TICK)
    assert is_active(schedule, local(schedule, 1, "11:00:00") - TICK)
    assert not is_active(schedule, local(schedule, 1, "11:00:00"))
    assert next_change(schedule, local(schedule, 1, "10:00:00")) == local(schedule, 1, "11:00:00")
    assert next_change(schedule, local(schedule, 1, "11:00:00")) == local(schedule, 1, "10:00:00", week=1)


def test_adjacent_and_overlapping_windows_merge() -> None:
    schedule = weekly([[("10:00:00", "11:00:00"), ("11:00:00", "12:00:00"), ("11:30:00", "12:30:00")]])
    assert transitions(schedule, local(schedule, 1, "09:00:00"), local(schedule, 1, "13:00:00")) == [
        (local(schedule, 1, "10:00:00"), True),
        (local(schedule, 1, "12:30:00"), False),
    ]


def test_windows_of_unscheduled_days_are_ignored() -> None:
    schedule = weekly([[("10:00:00", "11:00:00")], [("10:00:00", "11:00:00")]], days=[2])
    assert not is_active(schedule, local(schedule, 1, "10:30:00"))
    assert is_active(schedule, local(schedule, 2, "10:30:00"))
    assert next_start(schedule, local(schedule, 1, "00:00:00")) == local(schedule, 2, "10:00:00")


def test_negative_offset_shifts_the_local_day() -> None:
    schedule = weekly([[("22:00:00", "23:00:00")]], tz="-03:30", days=[1])
    # Monday 22:00 at -03:30 is Tuesday 01:30 UTC
    assert next_start(schedule, datetime(2026, 11, 23, tzinfo=UTC)) == datetime(2026, 11, 24, 1, 30, tzinfo=UTC)
    assert is_active(schedule, datetime(2026, 11, 24, 2, 0, tzinfo=UTC))
    assert not is_active(schedule, datetime(2026, 11, 23, 22, 30, tzinfo=UTC))


def test_results_keep_the_callers_timezone_and_naive_times_are_refused() -> None:
    schedule = weekly([[("10:00:00", "11:00:00")]], days=[1])
    tokyo = timezone(timedelta(hours=9))
    at = datetime(2026, 11, 23, 12, 0, tzinfo=tokyo)  # Monday 03:00 UTC
    change = next_change(schedule, at)
    assert change is not None and change.utcoffset() == timedelta(hours=9)
    assert change == datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        is_active(schedule, datetime(2026, 11, 23, 10, 0))


def test_status_of_a_waiting_task_names_the_next_start() -> None:
    schedule = weekly([[], [], [("09:00:00", "17:00:00")]], tz="+08:00")
    status = schedule_status(schedule, local(schedule, 1, "12:00:00"))
    assert not status.active
    assert status.next_start == status.next_change == local(schedule, 3, "09:00:00")


# --- properties ----------------------------------------------------------------------------------

EDGY_SECONDS = [0, 1, 59, 60, 3600, 43200, _sec("23:58:59"), _sec("23:59:00"), _sec("23:59:30"), _sec("23:59:59")]
second_of_day = st.one_of(st.sampled_from(EDGY_SECONDS), st.integers(0, 86399))


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@st.composite
def windows(draw: st.DrawFn) -> tuple[str, str]:
    a, b = draw(second_of_day), draw(second_of_day)
    assume(a != b)
    return _clock(min(a, b)), _clock(max(a, b))


@st.composite
def schedules(draw: st.DrawFn) -> TaskSchedule:
    sign = draw(st.sampled_from("+-"))
    hours, minutes = draw(st.integers(0, 14)), draw(st.sampled_from([0, 30, 45, 59]))
    body: dict[str, Any] = {
        "type": "weekly",
        "timezone": f"{sign}{hours:02d}:{minutes:02d}",
        "days_of_week": draw(st.lists(st.integers(1, 7), min_size=1, max_size=7, unique=True)),
        "periods": [
            [{"begin_at": b, "end_at": e} for b, e in day]
            for day in draw(st.lists(st.lists(windows(), max_size=3), min_size=1, max_size=7))
        ],
    }
    try:
        return TaskSchedule.model_validate(body)
    except ValidationError:
        assume(False)
        raise


instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


@FAST
@given(schedules(), instants)
def test_matches_the_oracle(schedule: TaskSchedule, at: datetime) -> None:
    status = schedule_status(schedule, at)
    assert status.active == oracle_active(schedule, at)
    assert status.next_change == oracle_next_change(schedule, at)
    assert status.next_start == oracle_next_start(schedule, at)
    assert status == ScheduleStatus(is_active(schedule, at), next_change(schedule, at), next_start(schedule, at))


@FAST
@given(schedules(), instants, st.integers(0, 200), st.sampled_from([-TICK, timedelta(0), TICK]))
def test_matches_the_oracle_at_boundaries(
    schedule: TaskSchedule, around: datetime, pick: int, nudge: timedelta
) -> None:
    candidates = oracle_candidates(schedule, around)
    at = candidates[pick % len(candidates)] + nudge
    assert is_active(schedule, at) == oracle_active(schedule, at)
    assert next_change(schedule, at) == oracle_next_change(schedule, at)
    assert next_start(schedule, at) == oracle_next_start(schedule, at)


@FAST
@given(schedules(), instants, st.floats(0.0, 1.0))
def test_next_change_is_a_real_flip_and_nothing_flips_before_it(
    schedule: TaskSchedule, at: datetime, fraction: float
) -> None:
    now = is_active(schedule, at)
    change = next_change(schedule, at)
    if change is None:
        later = at + timedelta(days=7 * fraction)
        assert is_active(schedule, later) == now
        return
    assert at < change <= at + timedelta(days=7)
    assert is_active(schedule, change) != now
    assert is_active(schedule, change - TICK) == now
    between = at + (change - at) * fraction
    if between < change:
        assert is_active(schedule, between) == now
        assert next_change(schedule, between) == change


@FAST
@given(schedules(), instants)
def test_next_start_begins_a_run(schedule: TaskSchedule, at: datetime) -> None:
    start = next_start(schedule, at)
    if start is None:
        assert next_change(schedule, at) is None
        return
    assert is_active(schedule, start)
    assert not is_active(schedule, start - TICK)
    if not is_active(schedule, at):
        assert start == next_change(schedule, at)


@FAST
@given(schedules(), instants, st.integers(-3, 3))
def test_week_periodicity(schedule: TaskSchedule, at: datetime, weeks: int) -> None:
    shift = timedelta(days=7 * weeks)
    assume(datetime(1990, 1, 1, tzinfo=UTC) < at + shift < datetime(2100, 1, 1, tzinfo=UTC))
    moved = schedule_status(schedule, at + shift)
    here = schedule_status(schedule, at)
    assert moved.active == here.active
    assert moved.next_change == (None if here.next_change is None else here.next_change + shift)
    assert moved.next_start == (None if here.next_start is None else here.next_start + shift)


@FAST
@given(schedules(), instants)
def test_offset_only_shifts_the_schedule(schedule: TaskSchedule, at: datetime) -> None:
    in_utc = schedule.model_copy(update={"timezone": "+00:00"})
    shift = timedelta(minutes=schedule.offset_minutes)
    here, there = schedule_status(schedule, at), schedule_status(in_utc, at + shift)
    assert here.active == there.active
    assert here.next_change == (None if there.next_change is None else there.next_change - shift)
    assert here.next_start == (None if there.next_start is None else there.next_start - shift)
