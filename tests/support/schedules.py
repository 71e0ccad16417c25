"""Schedules in a real store, fired on a fake clock: the helpers of the schedule tests."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fovea.platform.retraining.fires import fire_due_schedules
from fovea.platform.retraining.service import ScheduleSpec, create_schedule
from fovea.platform.store import Job, Schedule, ScheduleEvent, transaction
from tests.support.specs import digits_spec

# a schedule's job: digits, registered as "digits" (the model drift triggers name)
TEMPLATE = digits_spec(name="digits-retrain", register_as="digits")


def make_schedule(
    sessions: sessionmaker[Session],
    *,
    now: datetime,
    data_roots: Sequence[Path] = (),
    **fields: Any,
) -> Schedule:
    body: dict[str, Any] = {"name": "nightly", "template": TEMPLATE, "overlap": "queue"}
    body.update(fields)
    with transaction(sessions) as s:
        return create_schedule(
            session=s, spec=ScheduleSpec.model_validate(body), data_roots=data_roots, now=now
        )


def fire(sessions: sessionmaker[Session], now: datetime) -> list[ScheduleEvent]:
    with transaction(sessions) as s:
        return fire_due_schedules(session=s, now=now)


def events(sessions: sessionmaker[Session], schedule_id: str, *kinds: str) -> list[ScheduleEvent]:
    with transaction(sessions) as s:
        stmt = select(ScheduleEvent).where(ScheduleEvent.schedule_id == schedule_id)
        if kinds:
            stmt = stmt.where(ScheduleEvent.kind.in_(kinds))
        return list(s.scalars(stmt.order_by(ScheduleEvent.id)))


def job_count(sessions: sessionmaker[Session]) -> int:
    with transaction(sessions) as s:
        return s.scalar(select(func.count()).select_from(Job)) or 0
