"""The append-only `model_events` log: the one writer and its readers.

Monitoring records a `kind="drift_verdict"` row (value = the new verdict) each time a
model's verdict changes; retraining records `retrain_triggered`, `promotion` and `rollback`.
Subscribers poll rows with an id above the last one they handled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fovea.platform.store import ModelEvent, utcnow

DRIFT_VERDICT = "drift_verdict"
RETRAIN_TRIGGERED = "retrain_triggered"
PROMOTION = "promotion"
ROLLBACK = "rollback"


def record_model_event(
    *,
    session: Session,
    model_name: str,
    kind: str,
    value: str | None = None,
    model_version: str | int | None = None,
    message: str = "",
    data: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> ModelEvent:
    """Append one event (flushed, so its id is known); the caller commits."""
    if not model_name:
        raise ValueError("model_name must not be empty")
    if not kind or len(kind) > 40:
        raise ValueError(f"kind must be 1 to 40 characters, got {kind!r}")
    event = ModelEvent(
        model_name=model_name,
        model_version=None if model_version is None else str(model_version),
        kind=kind,
        value=value,
        at=at or utcnow(),
        message=message,
        data=data,
    )
    session.add(event)
    session.flush()
    return event


def list_model_events(
    *,
    session: Session,
    model_name: str,
    kind: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[ModelEvent]:
    """Events of one model with id > after_id, oldest first."""
    stmt = select(ModelEvent).where(ModelEvent.model_name == model_name, ModelEvent.id > after_id)
    if kind is not None:
        stmt = stmt.where(ModelEvent.kind == kind)
    return list(session.scalars(stmt.order_by(ModelEvent.id).limit(limit)))


def last_model_event_id(*, session: Session) -> int:
    """The newest event id (0 when there is none): where a new subscriber starts."""
    return session.scalar(select(ModelEvent.id).order_by(ModelEvent.id.desc()).limit(1)) or 0
