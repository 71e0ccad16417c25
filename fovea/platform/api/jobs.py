"""/jobs: submit, list, inspect, cancel."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from fovea.platform import jobs as svc
from fovea.platform.api.deps import SessionDep, SettingsDep
from fovea.platform.api.schemas import JobList, JobOut
from fovea.platform.spec import JobSpec
from fovea.platform.store import JobState

router = APIRouter(prefix="/jobs", tags=["jobs"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=JobOut)
def submit_job(
    spec: JobSpec,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobOut:
    spec = svc.normalise_spec(spec, data_roots=settings.data_roots)
    job, created = svc.create_job(session=session, spec=spec, idempotency_key=idempotency_key)
    if not created:
        response.status_code = status.HTTP_200_OK
    return JobOut.of(job)


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    state: JobState | None = None,
    project: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobList:
    page = svc.list_jobs(session=session, state=state, project=project, limit=limit, offset=offset)
    return JobList(
        items=[JobOut.of(j) for j in page.items],
        total=page.total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get("/{job_id}", response_model=JobOut)
def get_job(job_id: str, session: SessionDep) -> JobOut:
    return JobOut.of(svc.get_job(session=session, job_id=job_id, with_events=True), events=True)


@router.post("/{job_id}/cancel", response_model=JobOut, status_code=status.HTTP_202_ACCEPTED)
def cancel_job(job_id: str, session: SessionDep) -> JobOut:
    job = svc.request_cancel(session=session, job_id=job_id)
    return JobOut.of(job)
