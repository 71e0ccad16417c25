"""Response models of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from fovea.platform.jobs.spec import TaskName
from fovea.platform.store import Job, JobEvent, JobState


class EventOut(BaseModel):
    id: int
    at: datetime
    kind: str
    from_state: JobState | None
    to_state: JobState | None
    message: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, e: JobEvent) -> EventOut:
        return cls(
            id=e.id,
            at=e.at,
            kind=e.kind,
            from_state=e.from_state,
            to_state=e.to_state,
            message=e.message,
            data=e.data,
        )


class JobSummary(BaseModel):
    """A job in a list: everything but its spec and events (GET /jobs/{id} has those)."""

    id: str
    name: str
    task: TaskName
    project: str
    priority: int
    state: JobState
    attempt: int
    max_retries: int
    error: str | None
    cancel_requested: bool
    submitted_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    mlflow_run_id: str | None
    metrics: dict[str, float] | None
    # {"epoch", "epochs", "step", "steps", "fraction", "metrics", ...; before training
    # starts "phase" and "detail", e.g. "decoding 4,317 images"}
    progress: dict[str, Any] | None
    model_name: str | None
    model_version: str | None

    @classmethod
    def fields_of(cls, job: Job) -> dict[str, Any]:
        return {
            "id": job.id,
            "name": job.name,
            "task": job.task,
            "project": job.project,
            "priority": job.priority,
            "state": job.state,
            "attempt": job.attempt,
            "max_retries": job.max_retries,
            "error": job.error,
            "cancel_requested": job.cancel_requested,
            "submitted_at": job.submitted_at,
            "updated_at": job.updated_at,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
            "mlflow_run_id": job.mlflow_run_id,
            "metrics": job.metrics,
            "progress": job.progress,
            "model_name": job.model_name,
            "model_version": job.model_version,
        }

    @classmethod
    def of(cls, job: Job) -> JobSummary:
        return cls(**cls.fields_of(job))


class JobOut(JobSummary):
    """A job with its normalised spec (defaults filled, paths resolved) and, from
    GET /jobs/{id}, its events."""

    spec: dict[str, Any]
    events: list[EventOut] | None = None
    # What the job trained on (dataset manifest: digest, mode, files, bytes, folders) and
    # the promotion gate's decision on its model: from its events, on GET /jobs/{id}.
    dataset: dict[str, Any] | None = None
    promotion: dict[str, Any] | None = None

    @classmethod
    def of(cls, job: Job, *, events: bool = False) -> JobOut:  # type: ignore[override]
        return cls(
            **cls.fields_of(job),
            spec=job.spec,
            events=[EventOut.of(e) for e in job.events] if events else None,
            dataset=_last_data(job.events, "dataset_fingerprint") if events else None,
            promotion=_last_data(job.events, "promotion_decision") if events else None,
        )


def _last_data(events: list[JobEvent], kind: str) -> dict[str, Any] | None:
    return next((e.data for e in reversed(events) if e.kind == kind), None)


class JobList(BaseModel):
    items: list[JobSummary]
    total: int
    limit: int
    offset: int


class QueueOut(BaseModel):
    """GET /jobs/{id}/queue: why a queued job waits (its place in line, what holds it)."""

    job_id: str
    state: JobState
    position: int | None  # 1: next to be claimed; null unless queued
    queued: int
    ahead: list[JobSummary]  # the first few that go before it
    not_before: datetime | None
    running: dict[str, float]  # {"jobs", "cpus", "gpus"} of all running jobs
    project: dict[str, Any]  # {"name", "running", "quota"}; quota 0: unlimited
    reasons: list[str]
