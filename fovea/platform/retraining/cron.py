"""Cron expressions in an IANA time zone, evaluated with cronsim; every instant is UTC.

Five fields (minute hour day-of-month month day-of-week, with names, ranges, steps, `L`);
cronsim's optional seconds field is refused, so a schedule fires at most once a minute.

Daylight-saving changes follow Debian cron (cronsim mimics it): a job at a fixed local
time that falls into the hour skipped in spring runs once, right after the jump (02:30 on
a day that goes 02:00 -> 03:00 runs at 03:00); one in the hour repeated in autumn runs
once, at the first pass. Jobs with a wildcard hour (`0 * * * *`, `*/15 * * * *`) follow
the real clock: 23 hourly fires on the spring day, 25 on the autumn day.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError


class CronError(ValueError):
    """A cron expression or time zone that cannot be used; `field` names which."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(
            "timezone", f"unknown IANA time zone {name!r} (e.g. UTC, Europe/Berlin)"
        ) from None


def check(expr: str, tz: str) -> str:
    """The expression, stripped, if it parses in time zone `tz`; else CronError."""
    expr = " ".join(expr.split())
    if len(expr.split(" ")) != 5:
        raise CronError(
            "cron",
            f"{expr!r} must have 5 fields (minute hour day-of-month month day-of-week), "
            "e.g. '0 3 * * *' for 03:00 every day",
        )
    try:
        next(CronSim(expr, datetime.now(zone(tz))))
    except CronSimError as exc:
        raise CronError("cron", f"{expr!r}: {exc}") from None
    except StopIteration:
        raise CronError("cron", f"{expr!r} never fires") from None
    return expr


def describe(expr: str) -> str:
    """Plain words, e.g. 'At 03:00 every day'."""
    try:
        return CronSim(expr, datetime.now(UTC)).explain()
    except Exception:  # explain() covers most but not every expression cronsim parses
        return expr


def next_after(expr: str, tz: str, after: datetime) -> datetime | None:
    """The first fire time strictly after `after` (UTC), or None if there is none."""
    try:
        return next(CronSim(expr, after.astimezone(zone(tz)))).astimezone(UTC)
    except StopIteration:
        return None


def latest_at_or_before(expr: str, tz: str, at: datetime) -> datetime | None:
    """The last fire time at or before `at` (UTC), or None."""
    # cronsim steps one second back before matching: start one second past `at`.
    start = at.replace(microsecond=0) + timedelta(seconds=1)
    try:
        return next(CronSim(expr, start.astimezone(zone(tz)), reverse=True)).astimezone(UTC)
    except StopIteration:
        return None


def count_between(expr: str, tz: str, start: datetime, end: datetime, *, cap: int) -> int:
    """Fire times t with start <= t <= end, counting up to `cap`."""
    n = 0
    t = next_after(expr, tz, start - timedelta(seconds=1))
    while t is not None and t <= end and n < cap:
        n += 1
        t = next_after(expr, tz, t)
    return n
