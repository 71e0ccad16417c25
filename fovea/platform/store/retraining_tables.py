"""SQLAlchemy models of retraining schedules and their append-only event log."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from fovea.platform.store.job_tables import Base, UTCDateTime, utcnow


class Overlap(enum.StrEnum):
    """What a fire does while this schedule's previous job is still queued or running."""

    FORBID = "forbid"  # skip the fire (with an event)
    QUEUE = "queue"  # submit anyway; the jobs run one after another as capacity allows
    REPLACE = "replace"  # cancel the previous job(s), then submit


class ScheduleEventKind(enum.StrEnum):
    """Persisted values are forever."""

    CREATED = "created"
    UPDATED = "updated"
    FIRE = "fire"  # a job was submitted
    SKIP = "skip"  # a fire that submitted nothing, with the reason
    MISFIRE = "misfire"  # fires missed while no scheduler ran (coalesced or dropped)
    ERROR = "error"  # the template no longer validates, the data folder vanished, ...


class Schedule(Base):
    __tablename__ = "schedules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    template: Mapped[dict[str, Any]] = mapped_column(JSON)  # a normalised JobSpec
    cron: Mapped[str | None] = mapped_column(String(120))  # None: drift trigger only
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")  # IANA name
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    overlap: Mapped[str] = mapped_column(String(16), default=Overlap.FORBID.value)
    misfire_grace_s: Mapped[int] = mapped_column(Integer, default=3600)
    skip_if_data_unchanged: Mapped[bool] = mapped_column(Boolean, default=True)
    # Drift trigger: retrain when `drift_model`'s verdict turns "drift" (None: no trigger).
    drift_model: Mapped[str | None] = mapped_column(String(200))
    drift_cooldown_s: Mapped[int] = mapped_column(Integer, default=6 * 3600)
    drift_max_per_day: Mapped[int] = mapped_column(Integer, default=2)
    # Highest model_events.id this schedule has looked at (its subscription cursor).
    drift_cursor: Mapped[int] = mapped_column(Integer, default=0)
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # next cron time
    last_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # last job submitted
    last_job_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    events: Mapped[list[ScheduleEvent]] = relationship(
        back_populates="schedule",
        lazy="raise",
        order_by="ScheduleEvent.id",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )

    __table_args__ = (Index("ix_schedules_due", "enabled", "next_fire_at"),)


class ScheduleEvent(Base):
    """Append-only: every fire, skip, misfire and change of a schedule, with its reason."""

    __tablename__ = "schedule_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    schedule_id: Mapped[str] = mapped_column(ForeignKey("schedules.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))  # ScheduleEventKind
    trigger: Mapped[str | None] = mapped_column(String(16))  # "cron" | "drift"
    # The cron time the event is about (or the drift verdict's time).
    fire_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    job_id: Mapped[str | None] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    schedule: Mapped[Schedule] = relationship(back_populates="events", lazy="raise")

    __table_args__ = (
        Index("ix_schedule_events_schedule", "schedule_id", "id"),
        Index("ix_schedule_events_job", "job_id"),
    )
