"""Schedules on real SQLite and PostgreSQL, driven by a fake clock (`now=` arguments)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError
from sqlalchemy import inspect, select

from fovea.platform.errors import SpecError
from fovea.platform.jobs import service as jobs_svc
from fovea.platform.jobs.spec import JobSpec
from fovea.platform.model_events import list_model_events, record_model_event
from fovea.platform.retraining import cron
from fovea.platform.retraining.fires import fire_due_schedules
from fovea.platform.retraining.service import (
    SchedulePatch,
    ScheduleSpec,
    delete_schedule,
    list_schedules,
    next_due_at,
    update_schedule,
)
from fovea.platform.store import Job, JobState, Schedule, transaction
from tests.support.schedules import TEMPLATE, events, fire, job_count, make_schedule

T0 = datetime(2026, 3, 2, 9, 0, 10, tzinfo=UTC)  # a Monday, 10 s past the hour


def step(sessions, start: datetime, end: datetime, every: timedelta) -> None:  # type: ignore[no-untyped-def]
    t = start
    while t <= end:
        fire(sessions, t)
        t += every


def fire_times(sessions, schedule_id: str) -> list[datetime]:  # type: ignore[no-untyped-def]
    return [e.fire_time for e in events(sessions, schedule_id, "fire")]


def test_migration_creates_the_tables(sessions) -> None:
    insp = inspect(sessions.kw["bind"])
    assert {"schedules", "schedule_events"} <= set(insp.get_table_names())
    assert "ix_schedules_due" in {i["name"] for i in insp.get_indexes("schedules")}


def test_bad_cron_and_zone_name_the_field() -> None:
    base = {"name": "n", "template": TEMPLATE}
    with pytest.raises(ValidationError) as bad_cron:
        ScheduleSpec.model_validate({**base, "cron": "61 * * * *"})
    assert bad_cron.value.errors()[0]["loc"] == ("cron",)
    assert "Bad minute" in str(bad_cron.value)
    with pytest.raises(ValidationError) as six:
        ScheduleSpec.model_validate({**base, "cron": "0 0 3 * * *"})
    assert "5 fields" in str(six.value)
    with pytest.raises(ValidationError) as zone:
        ScheduleSpec.model_validate({**base, "cron": "0 3 * * *", "timezone": "Mars/Olympus"})
    assert zone.value.errors()[0]["loc"] == ("timezone",)
    with pytest.raises(ValidationError, match="cron expression, a drift trigger"):
        ScheduleSpec.model_validate(base)


def test_create_update_pause_delete(sessions) -> None:
    s = make_schedule(sessions, now=T0, cron="0 3 * * *", timezone="Europe/Berlin")
    assert s.next_fire_at == datetime(2026, 3, 3, 2, 0, tzinfo=UTC)  # 03:00 CET
    with transaction(sessions) as db:
        assert next_due_at(session=db) == s.next_fire_at
        paused = update_schedule(
            session=db, schedule_id=s.id, patch=SchedulePatch(enabled=False), data_roots=[], now=T0
        )
        assert paused.next_fire_at is None
        assert next_due_at(session=db) is None
    with transaction(sessions) as db:
        moved = update_schedule(
            session=db,
            schedule_id="nightly",  # by name too
            patch=SchedulePatch.model_validate({"enabled": True, "cron": "15 4 * * *"}),
            data_roots=[],
            now=T0,
        )
        assert moved.next_fire_at == datetime(2026, 3, 3, 3, 15, tzinfo=UTC)
        assert moved.template["register_as"] == "digits"
    with transaction(sessions) as db, pytest.raises(SpecError) as err:
        update_schedule(
            session=db,
            schedule_id=s.id,
            patch=SchedulePatch.model_validate({"cron": None}),  # and no drift trigger
            data_roots=[],
            now=T0,
        )
    assert "drift trigger" in err.value.problem
    kinds = [e.kind for e in events(sessions, s.id)]
    assert kinds == ["created", "updated", "updated"]
    with transaction(sessions) as db:
        delete_schedule(session=db, schedule_id=s.id)
    with transaction(sessions) as db:
        assert list_schedules(session=db) == []
    assert events(sessions, s.id) == []


@pytest.mark.parametrize(
    "expr,tz,start,expected",
    [
        # Berlin springs forward on 2026-03-29 at 02:00 -> 03:00: 02:30 does not exist that
        # day; the fire runs once at 03:00 CEST (01:00 UTC), as Debian cron does.
        (
            "30 2 * * *",
            "Europe/Berlin",
            datetime(2026, 3, 27, 12, tzinfo=UTC),
            ["2026-03-28T01:30", "2026-03-29T01:00", "2026-03-30T00:30", "2026-03-31T00:30"],
        ),
        # New York falls back on 2026-11-01 at 02:00 -> 01:00: 01:30 happens twice; the
        # fire runs once, at the first pass (EDT, 05:30 UTC).
        (
            "30 1 * * *",
            "America/New_York",
            datetime(2026, 10, 30, 12, tzinfo=UTC),
            ["2026-10-31T05:30", "2026-11-01T05:30", "2026-11-02T06:30", "2026-11-03T06:30"],
        ),
    ],
)
def test_cron_in_two_zones_across_dst(sessions, expr, tz, start, expected) -> None:
    s = make_schedule(sessions, now=start, cron=expr, timezone=tz)
    step(sessions, start, start + timedelta(days=4), timedelta(minutes=10))
    got = [t.strftime("%Y-%m-%dT%H:%M") for t in fire_times(sessions, s.id)]
    assert got == expected
    assert job_count(sessions) == 4
    assert events(sessions, s.id, "misfire") == []  # a tick every 10 min is never late


def test_hourly_cron_follows_the_real_clock_on_dst_days(sessions) -> None:
    # Local days of 23 and 25 hours: Berlin 2026-03-29, New York 2026-11-01.
    from zoneinfo import ZoneInfo

    for name, tz, day, hours in [
        ("berlin", "Europe/Berlin", datetime(2026, 3, 29), 23),
        ("newyork", "America/New_York", datetime(2026, 11, 1), 25),
    ]:
        local_start = day.replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
        local_end = (day + timedelta(days=1)).replace(tzinfo=ZoneInfo(tz)).astimezone(UTC)
        before = local_start - timedelta(seconds=1)
        s = make_schedule(sessions, now=before, name=name, cron="0 * * * *", timezone=tz)
        step(sessions, local_start, local_end - timedelta(seconds=1), timedelta(minutes=5))
        assert len(fire_times(sessions, s.id)) == hours, name


def test_three_hour_outage_gives_exactly_one_run(sessions) -> None:
    s = make_schedule(sessions, now=T0, cron="0 * * * *")
    assert s.next_fire_at == datetime(2026, 3, 2, 10, tzinfo=UTC)
    # Down from 09:00:10 to 12:20: the 10:00, 11:00 and 12:00 fires were missed.
    back = datetime(2026, 3, 2, 12, 20, tzinfo=UTC)
    fire(sessions, back)
    fire(sessions, back + timedelta(seconds=1))
    assert job_count(sessions) == 1
    (misfire,) = events(sessions, s.id, "misfire")
    assert misfire.data["missed"] == 3 and "coalesced into one run" in misfire.message
    (fired,) = events(sessions, s.id, "fire")
    assert fired.fire_time == datetime(2026, 3, 2, 12, tzinfo=UTC)
    assert fired.data["late_s"] == 20 * 60 and "20 min late" in fired.message
    with transaction(sessions) as db:
        assert db.get(Schedule, s.id).next_fire_at == datetime(2026, 3, 2, 13, tzinfo=UTC)
    fire(sessions, datetime(2026, 3, 2, 13, 0, 1, tzinfo=UTC))
    assert job_count(sessions) == 2  # back to one a fire


def test_outage_past_the_grace_period_runs_nothing(sessions) -> None:
    s = make_schedule(sessions, now=T0, cron="0 10 * * *", misfire_grace_s=3600)
    fire(sessions, datetime(2026, 3, 2, 13, 5, tzinfo=UTC))  # 10:00 missed by 3 h 5 min
    assert job_count(sessions) == 0
    (misfire,) = events(sessions, s.id, "misfire")
    assert "past the grace period of 60 min: none run" in misfire.message
    with transaction(sessions) as db:
        assert db.get(Schedule, s.id).next_fire_at == datetime(2026, 3, 3, 10, tzinfo=UTC)


def test_overlap_forbid_skips_while_the_previous_job_runs(sessions) -> None:
    s = make_schedule(sessions, now=T0, cron="*/5 * * * *", overlap="forbid")
    fire(sessions, datetime(2026, 3, 2, 9, 5, 1, tzinfo=UTC))
    (first,) = events(sessions, s.id, "fire")
    fire(sessions, datetime(2026, 3, 2, 9, 10, 1, tzinfo=UTC))
    (skip,) = events(sessions, s.id, "skip")
    assert skip.data["reason"] == "overlap" and first.job_id in skip.message
    assert "overlap=forbid" in skip.message and job_count(sessions) == 1
    with transaction(sessions) as db:
        jobs_svc.request_cancel(session=db, job_id=first.job_id)
    fire(sessions, datetime(2026, 3, 2, 9, 15, 1, tzinfo=UTC))
    assert job_count(sessions) == 2


def test_overlap_replace_cancels_and_queue_stacks(sessions) -> None:
    rep = make_schedule(sessions, now=T0, name="rep", cron="*/5 * * * *", overlap="replace")
    que = make_schedule(sessions, now=T0, name="que", cron="*/5 * * * *", overlap="queue")
    fire(sessions, datetime(2026, 3, 2, 9, 5, 1, tzinfo=UTC))
    fire(sessions, datetime(2026, 3, 2, 9, 10, 1, tzinfo=UTC))
    rep_fires = events(sessions, rep.id, "fire")
    que_fires = events(sessions, que.id, "fire")
    assert len(rep_fires) == 2 and len(que_fires) == 2
    assert rep_fires[1].data["replaced"] == [rep_fires[0].job_id]
    with transaction(sessions) as db:
        state = {j.id: j.state for j in db.scalars(select(Job))}
    assert state[rep_fires[0].job_id] == JobState.CANCELLED.value
    assert state[rep_fires[1].job_id] == JobState.QUEUED.value
    assert {state[e.job_id] for e in que_fires} == {JobState.QUEUED.value}


def test_a_crash_mid_fire_leaves_exactly_one_job(sessions) -> None:
    s = make_schedule(sessions, now=T0, cron="0 * * * *")
    at = datetime(2026, 3, 2, 10, 0, 2, tzinfo=UTC)
    # 1. The process dies after the job insert, before the commit: all of it rolls back.
    with pytest.raises(RuntimeError), transaction(sessions) as db:
        fire_due_schedules(session=db, now=at)
        assert db.scalar(select(Job.id)) is not None
        raise RuntimeError("killed")
    assert job_count(sessions) == 0 and events(sessions, s.id, "fire") == []
    # 2. A job with this fire's key exists (a scheduler that committed it but whose schedule
    # row update was lost): the fire after the restart finds it instead of making another.
    spec = JobSpec.model_validate({**TEMPLATE})
    with transaction(sessions) as db:
        job, _ = jobs_svc.create_job(
            session=db, spec=spec, idempotency_key=f"schedule:{s.id}:2026-03-02T10:00:00+00:00"
        )
    fire(sessions, at)
    fire(sessions, at + timedelta(seconds=1))
    assert job_count(sessions) == 1
    (fired,) = events(sessions, s.id, "fire")
    assert fired.job_id == job.id and fired.data["created"] is False
    assert "already existed" in fired.message


def test_drift_trigger_cooldown_and_daily_cap(sessions) -> None:
    with transaction(sessions) as db:  # history before the schedule never fires it
        record_model_event(session=db, model_name="digits", kind="drift_verdict", value="drift")
    s = make_schedule(
        sessions,
        now=T0,
        name="on-drift",
        drift={"cooldown_hours": 6, "max_per_day": 2},
        overlap="queue",
    )
    assert s.next_fire_at is None and s.drift_model == "digits"

    def verdict(value: str, at: datetime) -> None:
        with transaction(sessions) as db:
            record_model_event(
                session=db, model_name="digits", kind="drift_verdict", value=value, at=at
            )
        fire(sessions, at + timedelta(seconds=5))

    fire(sessions, T0)
    assert job_count(sessions) == 0
    verdict("drift", T0 + timedelta(hours=1))  # fires
    verdict("ok", T0 + timedelta(hours=2))  # not a drift: nothing
    verdict("drift", T0 + timedelta(hours=3))  # 2 h after the last fire: cooldown
    verdict("drift", T0 + timedelta(hours=8))  # 7 h after: fires (2 in 24 h)
    verdict("drift", T0 + timedelta(hours=15))  # 7 h after, but 2 in 24 h: daily cap
    verdict("drift", T0 + timedelta(hours=26))  # 1 fire in the last 24 h: fires
    verdict("warning", T0 + timedelta(hours=27))
    assert job_count(sessions) == 3
    skips = events(sessions, s.id, "skip")
    assert [e.data["reason"] for e in skips] == ["cooldown", "daily_cap"]
    assert "cooldown is 6.0 h" in skips[0].message and "the cap is 2" in skips[1].message
    fires = events(sessions, s.id, "fire")
    assert all(e.trigger == "drift" for e in fires)
    with transaction(sessions) as db:
        triggered = list_model_events(session=db, model_name="digits", kind="retrain_triggered")
        assert [e.data["job_id"] for e in triggered] == [e.job_id for e in fires]
        assert db.get(Schedule, s.id).drift_cursor == max(
            e.id for e in list_model_events(session=db, model_name="digits")
        )


def test_a_paused_schedule_ignores_verdicts_from_its_pause(sessions) -> None:
    s = make_schedule(sessions, now=T0, name="d", drift={})
    with transaction(sessions) as db:
        update_schedule(
            session=db, schedule_id=s.id, patch=SchedulePatch(enabled=False), data_roots=[]
        )
        record_model_event(session=db, model_name="digits", kind="drift_verdict", value="drift")
    fire(sessions, T0)
    with transaction(sessions) as db:
        update_schedule(
            session=db, schedule_id=s.id, patch=SchedulePatch(enabled=True), data_roots=[]
        )
    fire(sessions, T0 + timedelta(minutes=1))
    assert job_count(sessions) == 0


def test_count_between_is_capped() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert cron.count_between("* * * * *", "UTC", start, start + timedelta(days=30), cap=50) == 50
    assert cron.count_between("0 * * * *", "UTC", start, start + timedelta(hours=3), cap=50) == 4
