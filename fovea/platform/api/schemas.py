"""The HTTP API's bodies: every route's response model, and the request bodies that are not
a resource's own input type (JobSpec and ScheduleSpec are). One module, so the API's shape
is read in one place; the routers only build these."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from fovea.platform.jobs.spec import TaskName
from fovea.platform.retraining import cron
from fovea.platform.retraining import service as schedules
from fovea.platform.store import (
    DriftReport,
    Job,
    JobEvent,
    JobState,
    Schedule,
    ScheduleEvent,
)
from fovea.tracking.model_views import ModelSummary


class _Row(BaseModel):
    """A response read from a stored row's attributes of the same names."""

    model_config = ConfigDict(from_attributes=True)

    @classmethod
    def of(cls, row: object) -> Self:
        return cls.model_validate(row)


class EventOut(_Row):
    id: int
    at: datetime
    kind: str
    from_state: JobState | None
    to_state: JobState | None
    message: str
    data: dict[str, Any] | None


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


# -- runs: a job's MLflow run read back --------------------------------------------------


class MetricPointOut(BaseModel):
    step: int
    value: float
    timestamp: int  # ms since the epoch


class MetricHistoryOut(BaseModel):
    job_id: str
    run_id: str | None  # None until the worker opened the run
    metrics: dict[str, list[MetricPointOut]]


class ArtifactOut(BaseModel):
    name: str
    media_type: str
    size: int | None
    url: str


class ArtifactListOut(BaseModel):
    job_id: str
    run_id: str | None
    items: list[ArtifactOut]


# -- models and their events ------------------------------------------------------------


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=2000, description="why, for the audit log")


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class ModelEventOut(_Row):
    id: int
    model_name: str
    model_version: str | None
    kind: str
    value: str | None
    at: datetime
    message: str
    data: dict[str, Any] | None


# GET /models and /models/{name} answer with the registry's own dataclasses
# (fovea.tracking.model_views): ModelSummary in a list, ModelDetail with its versions.


class ModelList(BaseModel):
    items: list[ModelSummary]


# -- schedules --------------------------------------------------------------------------


class ScheduleEventOut(_Row):
    id: int
    at: datetime
    kind: str
    trigger: str | None
    fire_time: datetime | None
    job_id: str | None
    message: str
    data: dict[str, Any] | None


class ScheduleOut(BaseModel):
    id: str
    name: str
    template: dict[str, Any]
    cron: str | None
    cron_description: str | None  # e.g. "At 03:00 every day"
    timezone: str
    enabled: bool
    overlap: str
    misfire_grace_s: int
    skip_if_data_unchanged: bool
    drift: schedules.DriftTriggerSpec | None
    next_fire_at: datetime | None
    last_fire_at: datetime | None
    last_job_id: str | None
    created_at: datetime
    updated_at: datetime
    events: list[ScheduleEventOut] | None = None  # newest first

    @classmethod
    def of(cls, s: Schedule, *, events: list[ScheduleEvent] | None = None) -> ScheduleOut:
        return cls(
            id=s.id,
            name=s.name,
            template=s.template,
            cron=s.cron,
            cron_description=cron.describe(s.cron) if s.cron else None,
            timezone=s.timezone,
            enabled=s.enabled,
            overlap=s.overlap,
            misfire_grace_s=s.misfire_grace_s,
            skip_if_data_unchanged=s.skip_if_data_unchanged,
            drift=schedules.spec_of(s).drift,
            next_fire_at=s.next_fire_at,
            last_fire_at=s.last_fire_at,
            last_job_id=s.last_job_id,
            created_at=s.created_at,
            updated_at=s.updated_at,
            events=None if events is None else [ScheduleEventOut.of(e) for e in events],
        )


class WeightsOut(BaseModel):
    """One weights-store entry (fovea/platform/weights/service.py WeightsEntry)."""

    name: str = Field(description="<arch>/<tag>: what model.weights names")
    arch: str = Field(description="the torchvision classifier architecture of the file")
    sha256: str
    size: int = Field(description="bytes")
    format: str = Field(description="pth or safetensors")
    file_name: str = Field(description="the file as imported")
    source: str = Field(description="provenance: where the file came from")
    licence: str
    imported_at: str
    keys: int = Field(description="tensors in its state dict")
    classes: int | None = Field(description="rows of its head; null: no head in the file")
    fits: list[str] = Field(
        description="what it initialises: <task>:<arch or backbone>, per GET /catalog"
    )
    verified: bool | None = Field(
        None, description="?verify=true: the file re-hashed and unchanged since import"
    )


class WeightsList(BaseModel):
    weights: list[WeightsOut]
    root: str = Field(description="the store's folder (FOVEA_WEIGHTS_ROOT)")


class ScheduleList(BaseModel):
    items: list[ScheduleOut]


# -- serving and monitoring -------------------------------------------------------------


class ScoreRequest(BaseModel):
    folder: str = Field(min_length=1, max_length=4096, description="a folder under a data root")
    alias: str | None = Field(None, max_length=100)
    version: int | None = Field(None, ge=1)


class PredictionOut(BaseModel):
    """One image's answer. The task's fields (label and probabilities, boxes, mask summary)
    follow `ok`; a file that could not be read has `ok` false and `error`."""

    model_config = ConfigDict(extra="allow")
    file: str
    ok: bool
    error: str | None = None


class PredictOut(BaseModel):
    model: str
    version: int
    aliases: list[str]
    task: str | None
    request_id: str
    predictions: list[PredictionOut]  # in the order of the images sent


class ScoreRunOut(BaseModel):
    """A batch scoring of a folder (POST /models/{name}/score), polled until it ends."""

    id: str
    model: str
    version: int
    folder: str
    state: str  # running | succeeded | failed
    total: int
    done: int
    failed_images: int
    error: str | None
    created_at: str
    finished_at: str | None


class DriftReportOut(BaseModel):
    """A drift report. In full (the latest, or one by id) it also carries the tests: the
    statistics, MMD on embeddings and the prediction shift, as computed."""

    model_config = ConfigDict(extra="allow")
    id: int
    created_at: str
    model: str
    version: int
    trigger: str
    verdict: str
    window_verdict: str  # this window alone; `verdict` after the k-of-m alarm rule
    reasons: list[str]
    n_live: int
    n_reference: int
    first_prediction_id: int | None
    last_prediction_id: int | None
    seconds: float
    plots: list[str]  # routes of its PNG plots

    @classmethod
    def of(cls, report: DriftReport, *, full: bool) -> DriftReportOut:
        """From a stored DriftReport; `full` adds the tests (report.result)."""
        out = cls(
            id=report.id,
            created_at=report.created_at.isoformat(),
            model=report.model_name,
            version=int(report.model_version),
            trigger=report.trigger,
            verdict=report.verdict,
            window_verdict=report.window_verdict,
            reasons=report.reasons,
            n_live=report.n_live,
            n_reference=report.n_reference,
            first_prediction_id=report.first_prediction_id,
            last_prediction_id=report.last_prediction_id,
            seconds=round(report.seconds, 3),
            plots=[
                f"/models/{report.model_name}/drift/{report.id}/plots/{plot}"
                for plot in ("histograms.png", "mmd.png")
            ],
        )
        if full:
            out = cls.model_validate({**out.model_dump(), **report.result})
        return out


class DriftOut(BaseModel):
    model: str
    latest: DriftReportOut | None  # in full
    history: list[DriftReportOut]  # newest first, without the tests
    thresholds: dict[str, Any]  # alpha, windows, permutations, alarm k-of-m
    interval_s: float


class PredictionRowOut(BaseModel):
    """A row of the prediction log (its embedding left out)."""

    id: int
    at: datetime
    version: int
    request_id: str
    source: str  # api | batch
    file: str | None
    sha256: str
    stats: dict[str, float]  # the image statistics drift tests compare
    summary: dict[str, Any]  # the prediction, summarised
    sampled: bool
    image: str | None  # the route of the kept image, when it was sampled


class PredictionPage(BaseModel):
    items: list[PredictionRowOut]


# POST /models/{name}/predict takes its images either as multipart files or as JSON: FastAPI
# declares one body encoding per route, so the request body is documented by hand.
PREDICT_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {"type": "array", "items": {"type": "string", "format": "binary"}}
                },
            }
        },
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["images"],
                "properties": {
                    "images": {
                        "type": "array",
                        "description": "base64 strings, or {name, data} with data base64",
                        "items": {
                            "anyOf": [
                                {"type": "string", "format": "byte"},
                                {
                                    "type": "object",
                                    "required": ["data"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "data": {"type": "string", "format": "byte"},
                                    },
                                },
                            ]
                        },
                    }
                },
            }
        },
    },
}
