"""SQLAlchemy 2.0 models of the job store. Persisted enum values are forever."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


# The only allowed state changes; `fovea.platform.jobs.service.transition` is the only writer.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.QUEUED}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def _state_values(enum_class: type[JobState]) -> list[str]:
    return [member.value for member in enum_class]


def job_state_type(*, constraint: str | None = None) -> Enum:
    """JobState stored as its value ("queued", ...) in a VARCHAR(16), never the member
    name; with `constraint`, a CHECK of that name admits only the known values."""
    return Enum(
        JobState,
        native_enum=False,
        length=16,
        values_callable=_state_values,
        validate_strings=True,
        create_constraint=constraint is not None,
        name=constraint,
    )


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    task: Mapped[str] = mapped_column(String(32))
    project: Mapped[str] = mapped_column(String(100))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[JobState] = mapped_column(
        job_state_type(constraint="ck_jobs_state"), default=JobState.QUEUED
    )
    attempt: Mapped[int] = mapped_column(Integer, default=0)  # runs started so far
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    cpus: Mapped[float] = mapped_column(Float, default=1.0)
    gpus: Mapped[float] = mapped_column(Float, default=0.0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    metrics: Mapped[dict[str, float] | None] = mapped_column(JSON)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    model_name: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(32))
    # a queued retry is not claimed before this (backoff); None: at once
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # "FAILED" | "KILLED": the MLflow run of an attempt that ended badly, still to be ended
    # by a scheduler (the worker died, or MLflow was down); cleared once done
    run_end_pending: Mapped[str | None] = mapped_column(String(16))

    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", lazy="raise", order_by="JobEvent.id"
    )

    __table_args__ = (
        Index("ix_jobs_claim_order", "state", "priority", "submitted_at"),
        Index("ix_jobs_project_submitted", "project", "submitted_at"),
        Index("ix_jobs_submitted", "submitted_at"),
        Index("ix_jobs_run_end_pending", "run_end_pending"),
    )

    @property
    def job_state(self) -> JobState:
        # Kept for callers written when `state` was a plain string; use `state`.
        return self.state


class JobEvent(Base):
    """Append-only: rows are inserted, never updated or deleted."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    from_state: Mapped[JobState | None] = mapped_column(job_state_type())
    to_state: Mapped[JobState | None] = mapped_column(job_state_type())
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    job: Mapped[Job] = relationship(back_populates="events", lazy="raise")

    __table_args__ = (Index("ix_job_events_job_id", "job_id", "id"),)


class ModelEvent(Base):
    """Append-only log of things that happened to a registered model: drift verdict changes
    (monitoring), promotion decisions, alias moves, retraining triggers. Other components
    subscribe by polling rows with an id above the last one they handled."""

    __tablename__ = "model_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(40))  # e.g. "drift_verdict", "promotion"
    # The new value the event reports, e.g. the verdict "ok" | "warning" | "drift".
    value: Mapped[str | None] = mapped_column(String(40))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    message: Mapped[str] = mapped_column(Text, default="")
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (
        Index("ix_model_events_model", "model_name", "id"),
        Index("ix_model_events_kind", "kind", "id"),
    )
