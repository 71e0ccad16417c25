"""Firing retraining schedules: run by the scheduler process once per tick.

Exactly one job per fire, with any number of schedulers and across crashes:
- a fire, its job, its events and the advance of `next_fire_at` (or of the drift cursor)
  commit in one transaction: a crash before the commit leaves nothing, and after a
  restart the same fire happens again;
- due schedules are locked as they are read (FOR UPDATE SKIP LOCKED on PostgreSQL; SQLite
  takes its write lock at BEGIN), so a second scheduler passes them by;
- the job's idempotency key is the schedule id + the fire time (drift: + the verdict
  event's id): were both guards passed, `create_job` hands back the job the first made.

Misfires: fires missed while no scheduler ran are coalesced into one run at the latest
missed time when that is at most `misfire_grace_s` old, else dropped; either way one
`misfire` event says how many and when. Never a burst.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fovea.platform.errors import SpecError, Unavailable
from fovea.platform.jobs import service as jobs_svc
from fovea.platform.jobs.spec import JobSpec
from fovea.platform.jobs.validation import check_spec
from fovea.platform.model_events import (
    DRIFT_VERDICT,
    RETRAIN_TRIGGERED,
    list_model_events,
    record_model_event,
)
from fovea.platform.retraining import cron
from fovea.platform.retraining.service import add_event
from fovea.platform.store import (
    Job,
    JobState,
    ModelEvent,
    Overlap,
    Schedule,
    ScheduleEvent,
    ScheduleEventKind,
    utcnow,
)

log = logging.getLogger(__name__)

DAY = timedelta(days=1)
_MAX_COUNTED_MISSES = 10_000  # a per-minute cron after a week down: "10000+ fires"
_CRON, _DRIFT = "cron", "drift"


@dataclass(frozen=True)
class FireContext:
    """What a fire needs besides the database."""

    now: datetime
    data_roots: Sequence[Path]
    tracking_uri: str | None  # None: no data-unchanged check (no MLflow to ask)


def _due(now: datetime) -> Any:
    newest_verdict = (
        select(func.max(ModelEvent.id))
        .where(ModelEvent.model_name == Schedule.drift_model, ModelEvent.kind == DRIFT_VERDICT)
        .correlate(Schedule)
        .scalar_subquery()
    )
    return select(Schedule).where(
        Schedule.enabled.is_(True),
        (Schedule.next_fire_at <= now)
        | (Schedule.drift_model.is_not(None) & (Schedule.drift_cursor < newest_verdict)),
    )


def any_due(*, session: Session, now: datetime | None = None) -> bool:
    """Whether fire_due_schedules would fire anything: a read, for the scheduler to skip
    the write transaction when nothing is due."""
    stmt = _due(now or utcnow()).with_only_columns(Schedule.id).limit(1)
    return session.scalar(stmt) is not None


def fire_due_schedules(
    *,
    session: Session,
    now: datetime | None = None,
    data_roots: Sequence[Path] = (),
    tracking_uri: str | None = None,
    limit: int = 50,
) -> list[ScheduleEvent]:
    """Fire every enabled schedule that is due (its cron time reached, or a new drift
    verdict of its model), at most `limit` of them. Returns the events written; the caller
    commits (one transaction: see the module doc)."""
    ctx = FireContext(now=now or utcnow(), data_roots=data_roots, tracking_uri=tracking_uri)
    stmt = _due(ctx.now).order_by(Schedule.next_fire_at, Schedule.id).limit(limit)
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True, of=Schedule)
    written: list[ScheduleEvent] = []
    for schedule in list(session.scalars(stmt)):
        try:
            with session.begin_nested():  # one broken schedule does not stop the others
                fired = _fire_cron(session=session, schedule=schedule, ctx=ctx)
                fired += _fire_drift(session=session, schedule=schedule, ctx=ctx)
            written += fired
        except Exception as exc:
            log.exception("schedule %s could not fire", schedule.id)
            written.append(_broken(session=session, schedule=schedule, ctx=ctx, exc=exc))
    session.flush()
    return written


def _broken(
    *, session: Session, schedule: Schedule, ctx: FireContext, exc: Exception
) -> ScheduleEvent:
    """Step past what failed (no hot loop on a broken schedule) and say so."""
    if schedule.cron is not None:
        schedule.next_fire_at = cron.next_after(schedule.cron, schedule.timezone, ctx.now)
    if schedule.drift_model is not None:
        newest = list_model_events(
            session=session, model_name=schedule.drift_model, after_id=schedule.drift_cursor
        )
        schedule.drift_cursor = max([schedule.drift_cursor, *(e.id for e in newest)])
    return add_event(
        session=session,
        schedule=schedule,
        kind=ScheduleEventKind.ERROR,
        message=f"could not fire: {type(exc).__name__}: {exc}; next fire "
        f"{_iso(schedule.next_fire_at)}",
        now=ctx.now,
        data={"reason": "internal_error"},
    )


def active_jobs(*, session: Session, schedule_id: str) -> list[Job]:
    """Jobs this schedule submitted that are still queued or running, oldest first."""
    fired = select(ScheduleEvent.job_id).where(
        ScheduleEvent.schedule_id == schedule_id,
        ScheduleEvent.kind == ScheduleEventKind.FIRE.value,
        ScheduleEvent.job_id.is_not(None),
    )
    return list(
        session.scalars(
            select(Job)
            .where(
                Job.id.in_(fired), Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value])
            )
            .order_by(Job.submitted_at)
        )
    )


# -- cron -----------------------------------------------------------------------------------


def _fire_cron(*, session: Session, schedule: Schedule, ctx: FireContext) -> list[ScheduleEvent]:
    due = schedule.next_fire_at
    if schedule.cron is None or due is None or due > ctx.now:
        return []
    expr, tz = schedule.cron, schedule.timezone
    latest = cron.latest_at_or_before(expr, tz, ctx.now) or due
    schedule.next_fire_at = cron.next_after(expr, tz, ctx.now)
    missed = cron.count_between(expr, tz, due, latest, cap=_MAX_COUNTED_MISSES)
    late = ctx.now - latest
    grace = timedelta(seconds=schedule.misfire_grace_s)
    events: list[ScheduleEvent] = []
    span = {
        "missed": missed,
        "first": due.isoformat(),
        "latest": latest.isoformat(),
        "late_s": round(late.total_seconds(), 3),
        "grace_s": schedule.misfire_grace_s,
    }
    counted = f"{missed}{'+' if missed >= _MAX_COUNTED_MISSES else ''}"
    if late > grace:
        return [
            add_event(
                session=session,
                schedule=schedule,
                kind=ScheduleEventKind.MISFIRE,
                message=f"{counted} fire(s) from {due.isoformat()} to {latest.isoformat()} "
                f"were missed while no scheduler ran; the latest is {_ago(late)} old, past "
                f"the grace period of {_ago(grace)}: none run; next fire "
                f"{_iso(schedule.next_fire_at)}",
                now=ctx.now,
                trigger=_CRON,
                fire_time=latest,
                data=span,
            )
        ]
    if missed > 1:
        events.append(
            add_event(
                session=session,
                schedule=schedule,
                kind=ScheduleEventKind.MISFIRE,
                message=f"{counted} fire(s) from {due.isoformat()} to {latest.isoformat()} "
                f"were missed while no scheduler ran; coalesced into one run for "
                f"{latest.isoformat()}",
                now=ctx.now,
                trigger=_CRON,
                fire_time=latest,
                data=span,
            )
        )
    events.append(
        _attempt(
            session=session,
            schedule=schedule,
            ctx=ctx,
            trigger=_CRON,
            fire_time=latest,
            key=f"schedule:{schedule.id}:{latest.isoformat()}",
            data={"late_s": span["late_s"]},
        )
    )
    return events


# -- drift ----------------------------------------------------------------------------------


def _fire_drift(*, session: Session, schedule: Schedule, ctx: FireContext) -> list[ScheduleEvent]:
    if schedule.drift_model is None:
        return []
    events: list[ScheduleEvent] = []
    verdicts = list_model_events(
        session=session,
        model_name=schedule.drift_model,
        kind=DRIFT_VERDICT,
        after_id=schedule.drift_cursor,
        limit=100,
    )
    for verdict in verdicts:
        schedule.drift_cursor = verdict.id
        if verdict.value != "drift":
            continue  # "ok" or "warning": nothing to do
        common = {"drift_event_id": verdict.id, "verdict_at": verdict.at.isoformat()}
        blocked = _drift_limit(session=session, schedule=schedule, ctx=ctx)
        if blocked is not None:
            message, data = blocked
            events.append(
                add_event(
                    session=session,
                    schedule=schedule,
                    kind=ScheduleEventKind.SKIP,
                    message=f"drift of {schedule.drift_model} (event {verdict.id}): {message}",
                    now=ctx.now,
                    trigger=_DRIFT,
                    fire_time=verdict.at,
                    data={**common, **data},
                )
            )
            continue
        event = _attempt(
            session=session,
            schedule=schedule,
            ctx=ctx,
            trigger=_DRIFT,
            fire_time=verdict.at,
            key=f"schedule:{schedule.id}:drift:{verdict.id}",
            data=common,
        )
        events.append(event)
        if event.kind == ScheduleEventKind.FIRE.value:
            record_model_event(
                session=session,
                model_name=schedule.drift_model,
                kind=RETRAIN_TRIGGERED,
                value=_DRIFT,
                message=f"schedule {schedule.name!r} submitted job {event.job_id} "
                f"after drift verdict event {verdict.id}",
                data={"schedule_id": schedule.id, "job_id": event.job_id, **common},
                at=ctx.now,
            )
    return events


def _drift_limit(
    *, session: Session, schedule: Schedule, ctx: FireContext
) -> tuple[str, dict[str, Any]] | None:
    """(why, data) when the cooldown or the daily cap holds a drift fire back, else None."""
    since = ctx.now - max(DAY, timedelta(seconds=schedule.drift_cooldown_s))
    fired = list(
        session.scalars(
            select(ScheduleEvent.at)
            .where(
                ScheduleEvent.schedule_id == schedule.id,
                ScheduleEvent.kind == ScheduleEventKind.FIRE.value,
                ScheduleEvent.trigger == _DRIFT,
                ScheduleEvent.at >= since,
            )
            .order_by(ScheduleEvent.at)
        )
    )
    cooldown = timedelta(seconds=schedule.drift_cooldown_s)
    if fired and ctx.now - fired[-1] < cooldown:
        return (
            f"cooldown: the last drift retrain was {_ago(ctx.now - fired[-1])} ago, "
            f"the cooldown is {_ago(cooldown)}",
            {"reason": "cooldown", "last_fire_at": fired[-1].isoformat()},
        )
    today = [t for t in fired if t > ctx.now - DAY]
    if len(today) >= schedule.drift_max_per_day:
        return (
            f"daily cap: {len(today)} drift retrain(s) in the last 24 h, the cap is "
            f"{schedule.drift_max_per_day}",
            {"reason": "daily_cap", "fires_24h": len(today)},
        )
    return None


# -- one attempt ----------------------------------------------------------------------------


def _attempt(
    *,
    session: Session,
    schedule: Schedule,
    ctx: FireContext,
    trigger: str,
    fire_time: datetime,
    key: str,
    data: dict[str, Any],
) -> ScheduleEvent:
    """Submit the template for one fire, or say why not: overlap, data unchanged, error."""

    def skip(kind: ScheduleEventKind, message: str, **extra: Any) -> ScheduleEvent:
        return add_event(
            session=session,
            schedule=schedule,
            kind=kind,
            message=message,
            now=ctx.now,
            trigger=trigger,
            fire_time=fire_time,
            data={**data, **extra},
        )

    replaced: list[str] = []
    running = active_jobs(session=session, schedule_id=schedule.id)
    if running and schedule.overlap == Overlap.FORBID.value:
        ids = ", ".join(j.id for j in running)
        return skip(
            ScheduleEventKind.SKIP,
            f"previous job {ids} is still {running[0].state} (overlap=forbid)",
            reason="overlap",
            active_jobs=[j.id for j in running],
        )
    try:
        spec = check_spec(
            JobSpec.model_validate(schedule.template),
            data_roots=ctx.data_roots,
            tracking_uri=ctx.tracking_uri,
        )
    except (SpecError, Unavailable, ValueError) as exc:
        return skip(
            ScheduleEventKind.ERROR, f"template no longer valid: {exc}", reason="invalid_template"
        )
    unchanged = _data_unchanged(schedule=schedule, spec=spec, ctx=ctx)
    if unchanged is not None:
        message, extra = unchanged
        return skip(ScheduleEventKind.SKIP, message, reason="data_unchanged", **extra)
    if running and schedule.overlap == Overlap.REPLACE.value:
        for job in running:
            jobs_svc.request_cancel(session=session, job_id=job.id)
            replaced.append(job.id)
    try:
        job, created = jobs_svc.create_job(session=session, spec=spec, idempotency_key=key)
    except jobs_svc.IdempotencyConflict:
        # The fire happened before with another template (changed since): that job stands.
        job = session.scalar(select(Job).where(Job.idempotency_key == key))
        assert job is not None
        created = False
    schedule.last_fire_at = ctx.now
    schedule.last_job_id = job.id
    said = f"submitted job {job.id}" if created else f"job {job.id} of this fire already existed"
    if replaced:
        said += f"; cancelled {', '.join(replaced)} (overlap=replace)"
    if trigger == _CRON and data.get("late_s", 0) > 60:
        said += f"; {_ago(timedelta(seconds=data['late_s']))} late"
    return add_event(
        session=session,
        schedule=schedule,
        kind=ScheduleEventKind.FIRE,
        message=f"{trigger} fire for {fire_time.isoformat()}: {said}",
        now=ctx.now,
        trigger=trigger,
        fire_time=fire_time,
        job_id=job.id,
        data={**data, "created": created, "replaced": replaced, "idempotency_key": key},
    )


def _data_unchanged(
    *, schedule: Schedule, spec: JobSpec, ctx: FireContext
) -> tuple[str, dict[str, Any]] | None:
    """(why, data) when the dataset is what the champion was trained on, else None."""
    if not schedule.skip_if_data_unchanged or ctx.tracking_uri is None or not spec.register_as:
        return None
    from fovea.tasks.data.manifest import dataset_manifest
    from fovea.tracking.champion import champion_dataset

    try:
        champion = champion_dataset(tracking_uri=ctx.tracking_uri, name=spec.register_as)
        if champion is None:
            return None  # no champion, or one trained before fingerprints were recorded
        now_digest = dataset_manifest(spec.dataset.uri, mode=champion.mode).digest
    except Exception as exc:  # MLflow or the data folder unreachable: retrain anyway
        log.warning("data-unchanged check of %s skipped: %s", spec.dataset.uri, exc)
        return None
    if now_digest != champion.digest:
        return None
    return (
        f"data unchanged since champion {spec.register_as} v{champion.version} was trained "
        f"({champion.mode} manifest {now_digest[:19]}...)",
        {"digest": now_digest, "champion_version": champion.version},
    )


def _ago(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def _iso(at: datetime | None) -> str:
    return at.isoformat() if at else "none"
