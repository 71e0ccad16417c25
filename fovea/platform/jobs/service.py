"""Job services: the only code that writes jobs and their events. Routes stay thin."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from fovea.platform import wake  # noqa: F401  (commits of jobs wake the schedulers)
from fovea.platform.errors import IdempotencyConflict, InvalidTransition, NotFound
from fovea.platform.jobs.policy import Backoff, decide
from fovea.platform.jobs.spec import JobSpec
from fovea.platform.store import TRANSITIONS, Job, JobEvent, JobState, utcnow
from fovea.tasks.data.files import Note
from fovea.workers.failures import Outcome, OutcomeKind

if TYPE_CHECKING:
    from fovea.workers.types import JobResult


# pg_advisory_xact_lock key of claiming ("fovea" in ASCII)
CLAIM_LOCK_KEY = 0x666F766561


def create_job(
    *,
    session: Session,
    spec: JobSpec,
    idempotency_key: str | None = None,
    notes: Sequence[Note] = (),
) -> tuple[Job, bool]:
    """Insert a queued job (or return the one this idempotency key already made); `notes`
    (what the submit-time dataset scan found odd) become "dataset_note" events."""
    spec_hash = spec.canonical_hash()
    if idempotency_key is not None:
        existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is not None:
            if existing.spec_hash != spec_hash:
                raise IdempotencyConflict(
                    "Idempotency-Key was already used with a different job spec"
                )
            return existing, False
    now = utcnow()
    job = Job(
        id=uuid.uuid4().hex[:16],
        name=spec.name,
        task=spec.task,
        project=spec.project,
        priority=spec.priority,
        state=JobState.QUEUED,
        attempt=0,
        max_retries=spec.max_retries,
        cpus=spec.resources.total_cpus,  # all workers: what admission counts
        gpus=spec.resources.total_gpus,
        spec=spec.model_dump(mode="json"),
        spec_hash=spec_hash,
        idempotency_key=idempotency_key,
        cancel_requested=False,
        submitted_at=now,
        updated_at=now,
    )
    try:
        with session.begin_nested():
            session.add(job)
            session.flush()
    except IntegrityError:
        # Another request with the same key won the race: answer as a replay.
        existing = session.scalar(select(Job).where(Job.idempotency_key == idempotency_key))
        if existing is None:
            raise
        if existing.spec_hash != spec_hash:
            raise IdempotencyConflict(
                "Idempotency-Key was already used with a different job spec"
            ) from None
        return existing, False
    add_event(
        session=session,
        job_id=job.id,
        kind="submitted",
        to_state=JobState.QUEUED,
        message=f"{spec.task} job {spec.name!r} queued (priority {spec.priority})",
    )
    for note in notes:
        add_event(
            session=session,
            job_id=job.id,
            kind="dataset_note",
            message=note.message,
            data={"kind": note.kind, "count": note.count},
        )
    return job, True


def add_event(
    *,
    session: Session,
    job_id: str,
    kind: str,
    message: str = "",
    data: dict[str, Any] | None = None,
    from_state: JobState | None = None,
    to_state: JobState | None = None,
) -> JobEvent:
    event = JobEvent(
        job_id=job_id,
        kind=kind,
        message=message,
        data=data,
        from_state=from_state,
        to_state=to_state,
        at=utcnow(),
    )
    session.add(event)
    return event


class Keep(enum.Enum):
    """A transition() argument left out: the job's field keeps its value."""

    KEEP = "keep"


KEEP = Keep.KEEP


def transition(
    *,
    session: Session,
    job: Job,
    to: JobState,
    message: str = "",
    data: dict[str, Any] | None = None,
    attempt: int | Keep = KEEP,
    error: str | Keep | None = KEEP,
    progress: dict[str, Any] | Keep | None = KEEP,
    metrics: dict[str, float] | Keep | None = KEEP,
    model_name: str | Keep | None = KEEP,
    model_version: str | Keep | None = KEEP,
) -> Job:
    """The one place a job changes state: checks the table, sets the fields given (a
    misspelt one is a TypeError, never a silent no-op), appends an event."""
    current = job.state
    if to not in TRANSITIONS[current]:
        raise InvalidTransition(f"job {job.id}: {current.value} -> {to.value} is not allowed")
    now = utcnow()
    job.state = to
    job.updated_at = now
    if to is JobState.RUNNING:
        job.started_at = now
    if to.is_terminal:
        job.finished_at = now
    if to.is_terminal or to is JobState.QUEUED:
        job.lease_owner = None
        job.lease_expires_at = None
    fields = {
        "attempt": attempt,
        "error": error,
        "progress": progress,
        "metrics": metrics,
        "model_name": model_name,
        "model_version": model_version,
    }
    for name, value in fields.items():
        if value is not KEEP:
            setattr(job, name, value)
    add_event(
        session=session,
        job_id=job.id,
        kind="state",
        message=message,
        data=data,
        from_state=current,
        to_state=to,
    )
    return job


def get_job(*, session: Session, job_id: str, with_events: bool = False) -> Job:
    stmt = select(Job).where(Job.id == job_id)
    if with_events:
        stmt = stmt.options(selectinload(Job.events))
    job = session.scalar(stmt)
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    return job


@dataclass
class JobPage:
    items: list[Job]
    total: int
    limit: int
    offset: int


def list_jobs(
    *,
    session: Session,
    state: JobState | None = None,
    project: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> JobPage:
    stmt = select(Job)
    count = select(func.count()).select_from(Job)
    if state is not None:
        stmt = stmt.where(Job.state == state)
        count = count.where(Job.state == state)
    if project is not None:
        stmt = stmt.where(Job.project == project)
        count = count.where(Job.project == project)
    stmt = stmt.order_by(Job.submitted_at.desc(), Job.id.desc()).limit(limit).offset(offset)
    return JobPage(
        items=list(session.scalars(stmt)),
        total=session.scalar(count) or 0,
        limit=limit,
        offset=offset,
    )


def request_cancel(*, session: Session, job_id: str) -> Job:
    """Queued: cancelled at once. Running: flagged; the scheduler stops the Ray work.

    The row is locked (FOR UPDATE on PostgreSQL, where claiming skips locked rows; SQLite
    transactions are serial already), so a scheduler cannot start the job meanwhile.
    """
    job = session.scalar(select(Job).where(Job.id == job_id).with_for_update())
    if job is None:
        raise NotFound(f"no job with id {job_id!r}")
    state = job.state
    if state.is_terminal:
        raise InvalidTransition(f"job {job_id} already ended ({state.value}); nothing to cancel")
    if state is JobState.QUEUED:
        return transition(
            session=session, job=job, to=JobState.CANCELLED, message="cancelled while queued"
        )
    if not job.cancel_requested:
        job.cancel_requested = True
        add_event(
            session=session,
            job_id=job.id,
            kind="cancel_requested",
            message="cancel requested; stopping the Ray work",
        )
    return job


# --- scheduler-side services -------------------------------------------------------------


@dataclass(frozen=True)
class Capacity:
    cpus: float
    gpus: float

    def fits(self, job: Job) -> bool:
        return job.cpus <= self.cpus + 1e-9 and job.gpus <= self.gpus + 1e-9

    def minus(self, job: Job | Capacity) -> Capacity:
        return Capacity(self.cpus - job.cpus, self.gpus - job.gpus)


# The order queued jobs are claimed in: highest priority first, then first come (id breaks ties)
CLAIM_ORDER = (Job.priority.desc(), Job.submitted_at.asc(), Job.id.asc())


def claim_jobs(
    *,
    session: Session,
    owner: str,
    free: Capacity,
    lease: timedelta,
    project_quota: int = 0,
    limit: int = 16,
) -> list[Job]:
    """Claim queued jobs, highest priority first and FIFO within a priority, that fit `free`.

    Atomic on every backend: PostgreSQL locks candidate rows with FOR UPDATE SKIP LOCKED
    (re-checked against the newest row version after the lock), SQLite runs write
    transactions one at a time (BEGIN IMMEDIATE), so the rows read are the rows written.
    The caller commits; claimed jobs are RUNNING with a lease owned by `owner`.
    """
    now = utcnow()
    stmt = (
        select(Job)
        .where(Job.state == JobState.QUEUED, claimable(now))
        .order_by(*CLAIM_ORDER)
        .limit(max(64, 4 * limit))
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(skip_locked=True)
    candidates = list(session.scalars(stmt))
    running_by_project: dict[str, int] = {}
    if project_quota > 0:
        rows = session.execute(
            select(Job.project, func.count())
            .where(Job.state == JobState.RUNNING)
            .group_by(Job.project)
        )
        running_by_project = {p: n for p, n in rows}
    claimed: list[Job] = []
    for job in candidates:
        if len(claimed) >= limit:
            break
        if not free.fits(job):
            continue
        if project_quota > 0 and running_by_project.get(job.project, 0) >= project_quota:
            continue
        job.lease_owner = owner
        job.lease_expires_at = now + lease
        job.not_before = None
        job.run_end_pending = None  # the new attempt resumes the run: RUNNING again
        transition(
            session=session,
            job=job,
            to=JobState.RUNNING,
            message=f"attempt {job.attempt + 1} dispatched by {owner}",
            data={"owner": owner, "cpus": job.cpus, "gpus": job.gpus},
            attempt=job.attempt + 1,
            error=None,
            progress=None,
        )
        free = free.minus(job)
        running_by_project[job.project] = running_by_project.get(job.project, 0) + 1
        claimed.append(job)
    return claimed


def claimable(now: datetime) -> Any:
    """Queued rows past their retry backoff."""
    return (Job.not_before.is_(None)) | (Job.not_before <= now)


def lock_claims(session: Session) -> None:
    """Serialise claiming across schedulers for the rest of this transaction, so each
    computes the cluster's free capacity from the running jobs of all the others. SQLite
    serialises every write transaction already (BEGIN IMMEDIATE); PostgreSQL takes a
    transaction-level advisory lock (released at commit)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CLAIM_LOCK_KEY})


def running_usage(*, session: Session) -> Capacity:
    """CPUs and GPUs that running jobs hold, whichever scheduler started them."""
    cpus, gpus = session.execute(
        select(
            func.coalesce(func.sum(Job.cpus), 0.0), func.coalesce(func.sum(Job.gpus), 0.0)
        ).where(Job.state == JobState.RUNNING)
    ).one()
    return Capacity(float(cpus), float(gpus))


@dataclass(frozen=True)
class QueueReport:
    """Why a queued job has not started: its place in line and what holds it back."""

    job_id: str
    state: str
    position: int | None  # 1: the next to be claimed; None unless queued
    queued: int  # jobs queued in all
    ahead: list[Job]  # the first few queued before it
    not_before: datetime | None  # a retry's backoff, when still in the future
    running_jobs: int
    running_cpus: float
    running_gpus: float
    project: str
    project_running: int
    project_quota: int
    reasons: list[str]


def queue_report(
    *, session: Session, job_id: str, project_quota: int = 0, show: int = 5
) -> QueueReport:
    """What a person asks of a queued job: how many go first (CLAIM_ORDER, as claim_jobs
    takes them), whether a retry backoff, the project's quota or its resource request holds
    it, and what the running jobs hold."""
    job = get_job(session=session, job_id=job_id, with_events=True)
    held = running_usage(session=session)
    running_jobs = session.scalar(select(func.count()).where(Job.state == JobState.RUNNING)) or 0
    project_running = (
        session.scalar(
            select(func.count()).where(Job.state == JobState.RUNNING, Job.project == job.project)
        )
        or 0
    )
    queued = session.scalar(select(func.count()).where(Job.state == JobState.QUEUED)) or 0
    report = dict(
        job_id=job.id,
        state=job.state.value,
        queued=queued,
        running_jobs=running_jobs,
        running_cpus=held.cpus,
        running_gpus=held.gpus,
        project=job.project,
        project_running=int(project_running),
        project_quota=project_quota,
    )
    if job.state is not JobState.QUEUED:
        return QueueReport(
            **report, position=None, ahead=[], not_before=None,
            reasons=[f"it is not waiting: the job is {job.state.value}"],
        )  # fmt: skip
    before = (Job.priority > job.priority) | (
        (Job.priority == job.priority)
        & (
            (Job.submitted_at < job.submitted_at)
            | ((Job.submitted_at == job.submitted_at) & (Job.id < job.id))
        )
    )
    first = select(Job).where(Job.state == JobState.QUEUED, before)
    n_ahead = session.scalar(select(func.count()).select_from(first.subquery())) or 0
    ahead = list(session.scalars(first.order_by(*CLAIM_ORDER).limit(show)))
    now = utcnow()
    not_before = job.not_before if job.not_before is not None and job.not_before > now else None
    reasons: list[str] = []
    if not_before is not None:
        wait = (not_before - now).total_seconds()
        reasons.append(
            f"it is a retry (attempt {job.attempt + 1}) in its backoff: not started before "
            f"{not_before.isoformat(timespec='seconds')} (in {wait:.0f} s)"
        )
    unfit = [e for e in job.events if e.kind == "waiting_for_resources"]
    if unfit:
        reasons.append(unfit[-1].message)
    if project_quota > 0 and project_running >= project_quota:
        reasons.append(
            f"its project {job.project!r} already runs {project_running} jobs, its quota "
            f"(project_quota = {project_quota}); it starts when one of them ends"
        )
    if n_ahead:
        reasons.append(
            f"{n_ahead} queued job{'s' if n_ahead != 1 else ''} go first (higher priority, or "
            f"the same priority {job.priority} and submitted earlier)"
        )
    if running_jobs:
        reasons.append(
            f"{running_jobs} running job{'s' if running_jobs != 1 else ''} hold "
            f"{held.cpus:g} CPUs and {held.gpus:g} GPUs; it needs "
            f"{job.cpus:g} CPUs and {job.gpus:g} GPUs free"
        )
    if not reasons:
        reasons.append(
            "nothing holds it back here: it is next in line, and a scheduler claims it when it "
            "wakes (at once when one runs: `fovea up` or `fovea scheduler`)"
        )
    return QueueReport(
        **report, position=n_ahead + 1, ahead=ahead, not_before=not_before, reasons=reasons
    )


def unfit_queued_jobs(*, session: Session, total: Capacity) -> list[Job]:
    """Queued jobs that ask for more than the whole cluster has."""
    return list(
        session.scalars(
            select(Job).where(
                Job.state == JobState.QUEUED,
                (Job.cpus > total.cpus + 1e-9) | (Job.gpus > total.gpus + 1e-9),
            )
        )
    )


def renew_leases(*, session: Session, owner: str, job_ids: Sequence[str], lease: timedelta) -> None:
    if job_ids:
        session.execute(
            update(Job)
            .where(Job.id.in_(list(job_ids)), Job.lease_owner == owner)
            .values(lease_expires_at=utcnow() + lease)
            .execution_options(synchronize_session=False)
        )


def expired_running_jobs(*, session: Session, now: datetime | None = None) -> list[Job]:
    now = now or utcnow()
    return list(
        session.scalars(
            select(Job).where(
                Job.state == JobState.RUNNING,
                Job.lease_expires_at.is_not(None),
                Job.lease_expires_at < now,
            )
        )
    )


def retry_or_fail(
    *, session: Session, job: Job, reason: str, backoff: Backoff | None = None
) -> Job:
    """A worker died or its lease expired (not the user's fault): the policy's INFRA row."""
    return record_outcome(
        session=session,
        job=job,
        outcome=Outcome(OutcomeKind.INFRA, reason),
        backoff=backoff or Backoff(),
    )


def record_outcome(*, session: Session, job: Job, outcome: Outcome, backoff: Backoff) -> Job:
    """The end of a running attempt, mapped to the job's next state by the one policy."""
    decision = decide(
        outcome=outcome,
        attempt=job.attempt,
        max_retries=job.max_retries,
        cancel_requested=job.cancel_requested,
        backoff=backoff,
    )
    result = outcome.result
    if result is not None and result.mlflow_run_id:
        job.mlflow_run_id = result.mlflow_run_id
    if decision.end_run and job.mlflow_run_id:
        job.run_end_pending = decision.end_run
    if decision.to is JobState.SUCCEEDED and result is not None:
        return _succeeded(session=session, job=job, result=result)
    if decision.retry_in_s:
        job.not_before = utcnow() + timedelta(seconds=decision.retry_in_s)
    return transition(
        session=session,
        job=job,
        to=decision.to,
        message=decision.message,
        data={"outcome": outcome.kind.value, "retries_left": max(0, job.max_retries - job.attempt)}
        if decision.to is JobState.QUEUED
        else {"outcome": outcome.kind.value},
        error=decision.error if decision.to is JobState.FAILED else KEEP,
    )


def _succeeded(*, session: Session, job: Job, result: JobResult) -> Job:
    model = f"; model {result.model_name} v{result.model_version}" if result.model_name else ""
    champion = " is champion" if result.model_name and result.is_champion else ""
    return transition(
        session=session,
        job=job,
        to=JobState.SUCCEEDED,
        message=f"succeeded{model}{champion}",
        data={"timings": result.timings, "train_images_per_s": result.train_images_per_s},
        metrics=result.metrics,
        model_name=result.model_name,
        model_version=result.model_version,
        progress={**(job.progress or {}), "fraction": 1.0},
    )


def requeue_unpenalised(*, session: Session, job: Job, reason: str) -> Job:
    """A scheduler shutting down hands a running job back: the attempt does not count."""
    if job.mlflow_run_id:
        job.run_end_pending = "KILLED"
    return transition(
        session=session,
        job=job,
        to=JobState.QUEUED,
        message=f"attempt {job.attempt} handed back: {reason}; resumes from the last checkpoint",
        attempt=max(0, job.attempt - 1),
    )


def runs_to_end(*, session: Session, limit: int = 50) -> list[tuple[str, str, str]]:
    """(job id, MLflow run id, status) of attempts whose run the scheduler must still end."""
    rows = session.execute(
        select(Job.id, Job.mlflow_run_id, Job.run_end_pending)
        .where(Job.run_end_pending.is_not(None), Job.state != JobState.RUNNING)
        .limit(limit)
    )
    return [(a, b, c) for a, b, c in rows if b]


def run_ended(*, session: Session, job_id: str, status: str) -> None:
    """Clear the mark, unless a newer attempt has started (or set another) meanwhile."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.run_end_pending == status, Job.state != JobState.RUNNING)
        .values(run_end_pending=None)
        .execution_options(synchronize_session=False)
    )
