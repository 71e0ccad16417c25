"""Real job stores (SQLite and PostgreSQL) and helpers for schedule tests on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fovea.platform.retraining.fires import fire_due_schedules
from fovea.platform.retraining.service import ScheduleSpec, create_schedule
from fovea.platform.store import (
    Job,
    Schedule,
    ScheduleEvent,
    make_engine,
    session_factory,
    transaction,
    upgrade,
)

TEMPLATE = {
    "name": "digits-retrain",
    "task": "classification",
    "dataset": {"uri": "builtin://digits"},
    "model": {"arch": "smallcnn"},
    "train": {"epochs": 1},
    "register_as": "digits",
}


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


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
