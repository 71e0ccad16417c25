"""Retraining schedules: the typed input, and the services that create, change, list and
delete them. Firing lives in `fovea.platform.retraining.fires`.

A schedule submits its JobSpec template when its cron expression fires (in its IANA time
zone) and/or when its model's drift verdict turns "drift". Every change, fire, skip and
misfire leaves a `schedule_events` row with the reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from fovea.platform.errors import ScheduleConflict, SpecError
from fovea.platform.jobs import service as jobs_svc
from fovea.platform.jobs.spec import NAME_PATTERN, JobSpec
from fovea.platform.jobs.validation import check_spec
from fovea.platform.model_events import last_model_event_id
from fovea.platform.retraining import cron
from fovea.platform.store import Overlap, Schedule, ScheduleEvent, ScheduleEventKind, utcnow

Name = Annotated[str, Field(pattern=NAME_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DriftTriggerSpec(_Strict):
    model: Name | None = Field(
        None, description="registered model whose verdict is watched (default: register_as)"
    )
    cooldown_hours: float = Field(
        6.0, ge=0.0, le=24 * 365, description="no second drift retrain within this many hours"
    )
    max_per_day: int = Field(2, ge=1, le=1000, description="drift retrains in any 24 hours")


class ScheduleSpec(_Strict):
    name: Name
    template: JobSpec
    timezone: str = Field("UTC", max_length=64, description="IANA name, e.g. Europe/Berlin")
    cron: str | None = Field(
        None, max_length=120, description="5 fields, e.g. '0 3 * * *'; null: drift only"
    )
    enabled: bool = True
    overlap: Overlap = Overlap.FORBID
    misfire_grace_s: int = Field(
        3600, ge=0, le=7 * 86400, description="a missed fire runs once if this recent"
    )
    skip_if_data_unchanged: bool = Field(
        True, description="skip when the dataset is unchanged since the champion trained"
    )
    drift: DriftTriggerSpec | None = None

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            cron.zone(value)
        except cron.CronError as exc:
            raise ValueError(exc.problem) from None
        return value

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        try:
            return cron.check(value, info.data.get("timezone") or "UTC")
        except cron.CronError as exc:
            raise ValueError(exc.problem) from None

    @model_validator(mode="after")
    def _has_a_trigger(self) -> ScheduleSpec:
        if self.cron is None and self.drift is None:
            raise ValueError("give a cron expression, a drift trigger, or both")
        return self


class SchedulePatch(_Strict):
    """Fields to change; those left out keep their value (null clears `cron`/`drift`)."""

    template: JobSpec | None = None
    cron: str | None = Field(None, max_length=120)
    timezone: str | None = Field(None, max_length=64)
    enabled: bool | None = None
    overlap: Overlap | None = None
    misfire_grace_s: int | None = Field(None, ge=0, le=7 * 86400)
    skip_if_data_unchanged: bool | None = None
    drift: DriftTriggerSpec | None = None


# -- CRUD ----------------------------------------------------------------------------------


def spec_of(schedule: Schedule) -> ScheduleSpec:
    drift = None
    if schedule.drift_model is not None:
        drift = DriftTriggerSpec(
            model=schedule.drift_model,
            cooldown_hours=schedule.drift_cooldown_s / 3600,
            max_per_day=schedule.drift_max_per_day,
        )
    return ScheduleSpec.model_construct(
        name=schedule.name,
        template=JobSpec.model_validate(schedule.template),
        cron=schedule.cron,
        timezone=schedule.timezone,
        enabled=schedule.enabled,
        overlap=Overlap(schedule.overlap),
        misfire_grace_s=schedule.misfire_grace_s,
        skip_if_data_unchanged=schedule.skip_if_data_unchanged,
        drift=drift,
    )


def _apply(schedule: Schedule, spec: ScheduleSpec, *, now: datetime) -> None:
    schedule.name = spec.name
    schedule.template = spec.template.model_dump(mode="json")
    schedule.cron = spec.cron
    schedule.timezone = spec.timezone
    schedule.enabled = spec.enabled
    schedule.overlap = spec.overlap.value
    schedule.misfire_grace_s = spec.misfire_grace_s
    schedule.skip_if_data_unchanged = spec.skip_if_data_unchanged
    drift = spec.drift
    schedule.drift_model = (drift.model or spec.template.register_as) if drift else None
    schedule.drift_cooldown_s = round(drift.cooldown_hours * 3600) if drift else 6 * 3600
    schedule.drift_max_per_day = drift.max_per_day if drift else 2
    schedule.next_fire_at = (
        cron.next_after(spec.cron, spec.timezone, now) if spec.cron and spec.enabled else None
    )
    schedule.updated_at = now


def create_schedule(
    *, session: Session, spec: ScheduleSpec, data_roots: Sequence[Path], now: datetime | None = None
) -> Schedule:
    now = now or utcnow()
    spec = spec.model_copy(update={"template": _normalised(spec.template, data_roots)})
    if session.scalar(select(Schedule.id).where(Schedule.name == spec.name)) is not None:
        raise ScheduleConflict(f"a schedule named {spec.name!r} exists already")
    schedule = Schedule(id=uuid.uuid4().hex[:16], created_at=now)
    _apply(schedule, spec, now=now)
    # Only verdicts that change after this moment trigger it, never the history.
    schedule.drift_cursor = last_model_event_id(session=session)
    try:
        with session.begin_nested():  # two creates of one name racing: one gets 409
            session.add(schedule)
            session.flush()
    except IntegrityError:
        raise ScheduleConflict(f"a schedule named {spec.name!r} exists already") from None
    add_event(
        session=session,
        schedule=schedule,
        kind=ScheduleEventKind.CREATED,
        message=_summary(schedule),
        now=now,
    )
    return schedule


def update_schedule(
    *,
    session: Session,
    schedule_id: str,
    patch: SchedulePatch,
    data_roots: Sequence[Path],
    now: datetime | None = None,
) -> Schedule:
    now = now or utcnow()
    schedule = _locked(session, schedule_id)
    changes = patch.model_dump(exclude_unset=True)
    if "template" in changes:
        assert patch.template is not None
        changes["template"] = _normalised(patch.template, data_roots)
    merged = {**spec_of(schedule).model_dump(), **changes}
    try:
        spec = ScheduleSpec.model_validate(merged)
    except ValidationError as exc:  # the merged whole is checked like a new schedule
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise SpecError(field, first["msg"].removeprefix("Value error, ")) from None
    was_enabled = schedule.enabled
    _apply(schedule, spec, now=now)
    if spec.enabled and not was_enabled:
        # Resumed: verdicts that changed while paused do not fire now.
        schedule.drift_cursor = last_model_event_id(session=session)
    add_event(
        session=session,
        schedule=schedule,
        kind=ScheduleEventKind.UPDATED,
        message=f"changed {', '.join(sorted(changes)) or 'nothing'}; {_summary(schedule)}",
        now=now,
        data={"fields": sorted(changes)},
    )
    return schedule


def delete_schedule(*, session: Session, schedule_id: str) -> None:
    """Delete the schedule and its events; jobs it submitted stay."""
    session.delete(_locked(session, schedule_id))


def get_schedule(*, session: Session, schedule_id: str) -> Schedule:
    schedule = session.get(Schedule, schedule_id)
    if schedule is None:
        schedule = session.scalar(select(Schedule).where(Schedule.name == schedule_id))
    if schedule is None:
        raise jobs_svc.NotFound(f"no schedule with id or name {schedule_id!r}")
    return schedule


def list_schedules(*, session: Session) -> list[Schedule]:
    return list(session.scalars(select(Schedule).order_by(Schedule.name)))


def schedule_events(
    *, session: Session, schedule_id: str, limit: int = 100, kind: str | None = None
) -> list[ScheduleEvent]:
    """The newest `limit` events of a schedule, newest first."""
    stmt = select(ScheduleEvent).where(ScheduleEvent.schedule_id == schedule_id)
    if kind is not None:
        stmt = stmt.where(ScheduleEvent.kind == kind)
    return list(session.scalars(stmt.order_by(ScheduleEvent.id.desc()).limit(limit)))


def next_due_at(*, session: Session) -> datetime | None:
    """When the next cron fire is due (None: no enabled cron schedule), so an idle
    scheduler may sleep until then. Drift triggers have no time: poll for them each tick."""
    return session.scalar(select(func.min(Schedule.next_fire_at)).where(Schedule.enabled.is_(True)))


def _locked(session: Session, schedule_id: str) -> Schedule:
    schedule = get_schedule(session=session, schedule_id=schedule_id)
    session.refresh(schedule, with_for_update=True)
    return schedule


def _normalised(template: JobSpec, data_roots: Sequence[Path]) -> JobSpec:
    try:
        return check_spec(template, data_roots=data_roots)
    except SpecError as exc:
        raise SpecError(f"template.{exc.field}", exc.problem) from None


def _summary(schedule: Schedule) -> str:
    parts = []
    if schedule.cron:
        parts.append(f"cron {schedule.cron!r} ({schedule.timezone})")
    if schedule.drift_model:
        parts.append(f"drift of {schedule.drift_model}")
    state = "enabled" if schedule.enabled else "paused"
    nxt = schedule.next_fire_at.isoformat() if schedule.next_fire_at else "none"
    return f"{' and '.join(parts)}; {state}; next fire {nxt}"


def add_event(
    *,
    session: Session,
    schedule: Schedule,
    kind: ScheduleEventKind,
    message: str,
    now: datetime,
    trigger: str | None = None,
    fire_time: datetime | None = None,
    job_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> ScheduleEvent:
    event = ScheduleEvent(
        schedule_id=schedule.id,
        at=now,
        kind=kind.value,
        trigger=trigger,
        fire_time=fire_time,
        job_id=job_id,
        message=message,
        data=data,
    )
    session.add(event)
    return event
