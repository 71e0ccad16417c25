"""Services of the append-only model_events table: what happened to a registered model.

Monitoring writes a "drift_verdict" row whenever a model's verdict changes; retraining
subscribes by reading rows with an id above the last one it handled.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from fovea.platform.store import ModelEvent, utcnow


def record_model_event(
    *,
    session: Session,
    model_name: str,
    kind: str,
    value: str | None = None,
    model_version: str | None = None,
    message: str = "",
    data: dict[str, Any] | None = None,
) -> ModelEvent:
    event = ModelEvent(
        model_name=model_name,
        model_version=model_version,
        kind=kind,
        value=value,
        at=utcnow(),
        message=message,
        data=data,
    )
    session.add(event)
    session.flush()
    return event


def model_events(
    *,
    session: Session,
    model_name: str | None = None,
    kind: str | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[ModelEvent]:
    """Events oldest first, optionally of one model and kind, with an id above `after_id`."""
    stmt = select(ModelEvent).where(ModelEvent.id > after_id)
    if model_name is not None:
        stmt = stmt.where(ModelEvent.model_name == model_name)
    if kind is not None:
        stmt = stmt.where(ModelEvent.kind == kind)
    return list(session.scalars(stmt.order_by(ModelEvent.id).limit(limit)))
