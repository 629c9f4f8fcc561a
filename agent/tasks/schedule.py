"""Weekly schedules as pure functions of time: "active at t?" and "when does that change next?".

A schedule is reduced to *runs*: maximal half-open intervals of the local week (seconds since Monday
00:00 in the schedule's UTC offset) during which the task runs. Building runs once makes every answer
a lookup, and makes each run boundary a real flip of ``is_active`` (adjacent or overlapping windows
are merged, so a boundary inside a continuous run never shows up as a change).

Rules (docs/schedules.md has examples):
- Windows are half-open, ``[begin_at, end_at)``, in the schedule's local time.
- Windows of days missing from ``days_of_week`` are ignored.
- Midnight bridge (the documented rule): a window that ends at 23:59:00 or later (the last minute
  the API can express, up to 23:59:59) followed by a window starting 00:00:00 on the next day is one
  continuous run — it is extended to midnight, so the task does not stop for the last minute or
  second of the day. Sunday bridges into Monday the same way.
- Without a 00:00:00 window on the next (scheduled) day, such a window ends at its own ``end_at``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone

from agent.tasks.model import TaskSchedule

DAY_S = 24 * 3600
WEEK_S = 7 * DAY_S
# a window ending at or after this local time continues into a 00:00:00 window of the next day
_BRIDGE_FROM_S = 23 * 3600 + 59 * 60


@dataclass(frozen=True)
class ScheduleStatus:
    """Where a schedule stands at one instant; ``next_start`` is what a WAITING task reports."""

    active: bool
    next_change: datetime | None
    next_start: datetime | None


@dataclass(frozen=True)
class _Runs:
    """Maximal runs on the week circle as ``(start, end)`` seconds, ``0 <= start < WEEK_S``.

    A run crossing Sunday→Monday has ``end > WEEK_S``. ``always`` marks a schedule with no stop at all.
    """

    spans: tuple[tuple[int, int], ...]
    always: bool


def _seconds(clock: time) -> int:
    return clock.hour * 3600 + clock.minute * 60 + clock.second


def _runs(schedule: TaskSchedule) -> _Runs:
    windows: list[tuple[int, int]] = []
    for day in range(1, 8):
        next_day = day % 7 + 1
        starts_at_midnight = any(_seconds(p.begin_time) == 0 for p in schedule.windows_of(next_day))
        base = (day - 1) * DAY_S
        for period in schedule.windows_of(day):
            begin, end = _seconds(period.begin_time), _seconds(period.end_time)
            if end >= _BRIDGE_FROM_S and starts_at_midnight:
                end = DAY_S
            windows.append((base + begin, base + end))
    windows.sort()
    merged: list[list[int]] = []
    for begin, end in windows:
        if merged and begin <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([begin, end])
    if len(merged) == 1 and merged[0] == [0, WEEK_S]:
        return _Runs((), always=True)
    if len(merged) > 1 and merged[0][0] == 0 and merged[-1][1] == WEEK_S:
        # Sunday's run continues into Monday's: one run across the week boundary
        first = merged.pop(0)
        merged[-1][1] = WEEK_S + first[1]
    return _Runs(tuple((begin, end) for begin, end in merged), always=False)


def _week_position(schedule: TaskSchedule, at: datetime) -> tuple[datetime, float]:
    """The UTC instant of local Monday 00:00 of ``at``'s week, and ``at``'s seconds since then."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("schedule times must be timezone-aware")
    offset = timedelta(minutes=schedule.offset_minutes)
    local = at.astimezone(timezone.utc).replace(tzinfo=None) + offset
    monday = datetime.combine(local.date() - timedelta(days=local.weekday()), time())
    position = (local - monday).total_seconds()
    return (monday - offset).replace(tzinfo=timezone.utc), position


def _contains(runs: _Runs, position: float) -> bool:
    if runs.always:
        return True
    return any(begin <= p < end for begin, end in runs.spans for p in (position, position + WEEK_S))


def _next_boundary(boundaries: list[int], position: float) -> float | None:
    """Seconds from Monday 00:00 of the next boundary strictly after ``position`` (may be next week)."""
    candidates = [b if b > position else b + WEEK_S for b in (b % WEEK_S for b in boundaries)]
    return min(candidates, default=None)


def _at(monday: datetime, seconds: float | None, like: datetime) -> datetime | None:
    if seconds is None:
        return None
    return (monday + timedelta(seconds=seconds)).astimezone(like.tzinfo)


def schedule_status(schedule: TaskSchedule, at: datetime) -> ScheduleStatus:
    """Whether the task runs at ``at`` (a timezone-aware instant), and when that changes next.

    Instants are returned in ``at``'s timezone.
    """
    runs = _runs(schedule)
    monday, position = _week_position(schedule, at)
    edges = [edge for span in runs.spans for edge in span]
    starts = [begin for begin, _ in runs.spans]
    return ScheduleStatus(
        active=_contains(runs, position),
        next_change=_at(monday, _next_boundary(edges, position), at),
        next_start=_at(monday, _next_boundary(starts, position), at),
    )


def is_active(schedule: TaskSchedule, at: datetime) -> bool:
    return schedule_status(schedule, at).active


def next_change(schedule: TaskSchedule, at: datetime) -> datetime | None:
    """The first instant after ``at`` where ``is_active`` differs from ``is_active(at)``; None if never."""
    return schedule_status(schedule, at).next_change


def next_start(schedule: TaskSchedule, at: datetime) -> datetime | None:
    """The first instant after ``at`` where a run begins (inactive just before, active from then).

    While a run is on, this is the start of the following run. None if the schedule never stops.
    """
    return schedule_status(schedule, at).next_start
