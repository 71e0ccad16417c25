"""/jobs: submit, list, inspect, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path, Query, Response, status

from fovea.platform.api.deps import ReadSessionDep, SessionDep, SettingsDep
from fovea.platform.api.http_errors import error_responses
from fovea.platform.api.schemas import JobList, JobOut, JobSummary, QueueOut
from fovea.platform.jobs import service as svc
from fovea.platform.jobs.spec import JobSpec
from fovea.platform.jobs.validation import JobLimits, check_spec, scan_notes
from fovea.platform.store import JobState

router = APIRouter(prefix="/jobs", tags=["jobs"])

MAX_PAGE = 500
MAX_OFFSET = 2**31 - 1
JobId = Annotated[str, Path(min_length=1, max_length=64)]
_BY_ID = {"parameters": {"job_id": "$response.body#/id"}}
_LINKS = {  # for clients and for stateful tests: what to do with the id
    "GetJob": {"operationId": "get_job_jobs__job_id__get", **_BY_ID},
    "CancelJob": {"operationId": "cancel_job_jobs__job_id__cancel_post", **_BY_ID},
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobOut,
    responses={
        200: {"model": JobOut, "description": "replay: this Idempotency-Key's job, as created"},
        201: {"description": "the job, queued", "links": _LINKS},
        **error_responses(401, 413, 422, 503),
    },
)
def submit_job(
    spec: JobSpec,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=200,
            description="a retried submit with the same key and spec returns the same job (200)",
        ),
    ] = None,
) -> JobOut:
    checked = check_spec(
        spec,
        data_roots=settings.data_roots,
        limits=JobLimits(
            cpus=settings.max_job_cpus,
            gpus=settings.max_job_gpus,
            epochs=settings.max_epochs,
            image_size=settings.max_image_size,
        ),
        tracking_uri=settings.tracking_uri,
        weights_root=settings.weights_dir,
    )
    notes = scan_notes(checked, data_roots=settings.data_roots)
    job, created = svc.create_job(
        session=session, spec=checked, idempotency_key=idempotency_key, notes=notes
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return JobOut.of(job)


@router.get("", response_model=JobList, responses=error_responses(401, 422, 503))
def list_jobs(
    session: ReadSessionDep,
    state: JobState | None = None,
    project: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> JobList:
    page = svc.list_jobs(session=session, state=state, project=project, limit=limit, offset=offset)
    return JobList(
        items=[JobSummary.of(j) for j in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(401, 404, 422, 503))
def get_job(job_id: JobId, session: ReadSessionDep) -> JobOut:
    return JobOut.of(svc.get_job(session=session, job_id=job_id, with_events=True), events=True)


@router.get(
    "/{job_id}/queue", response_model=QueueOut, responses=error_responses(401, 404, 422, 503)
)
def job_queue(job_id: JobId, session: ReadSessionDep, settings: SettingsDep) -> QueueOut:
    """Why the job waits: its place in line, a retry's backoff, its project's quota, and
    what the running jobs hold."""
    got = svc.queue_report(session=session, job_id=job_id, project_quota=settings.project_quota)
    return QueueOut(
        job_id=got.job_id,
        state=JobState(got.state),
        position=got.position,
        queued=got.queued,
        ahead=[JobSummary.of(j) for j in got.ahead],
        not_before=got.not_before,
        running={"jobs": got.running_jobs, "cpus": got.running_cpus, "gpus": got.running_gpus},
        project={"name": got.project, "running": got.project_running, "quota": got.project_quota},
        reasons=got.reasons,
    )


@router.post(
    "/{job_id}/cancel",
    response_model=JobOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(401, 404, 409, 422, 503),
)
def cancel_job(job_id: JobId, session: SessionDep) -> JobOut:
    job = svc.request_cancel(session=session, job_id=job_id)
    return JobOut.of(job)
