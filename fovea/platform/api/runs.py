"""/jobs/{id}/metrics and /jobs/{id}/artifacts: a job's MLflow run, read back for the
dashboard (curves while it trains, plots and tables when it ends).

Artifacts are named from a fixed allow-list (fovea.tracking.run_reader.ARTIFACTS); a request names
one of them, never a path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from fovea.platform.api.deps import off_the_loop
from fovea.platform.api.http_errors import error_responses
from fovea.platform.api.schemas import (
    ArtifactListOut,
    ArtifactOut,
    MetricHistoryOut,
    MetricPointOut,
)
from fovea.platform.errors import NotFound
from fovea.platform.jobs import service as svc

router = APIRouter(prefix="/jobs", tags=["runs"])

JobId = Annotated[str, Path(min_length=1, max_length=64)]


def _run_id(request: Request, job_id: str) -> str | None:
    with request.app.state.read_sessions() as session, session.begin():
        return svc.get_job(session=session, job_id=job_id).mlflow_run_id


@router.get(
    "/{job_id}/metrics",
    response_model=MetricHistoryOut,
    responses=error_responses(401, 404, 422, 503),
)
async def job_metrics(
    job_id: JobId,
    request: Request,
    key: Annotated[list[str] | None, Query(max_length=100, description="only these")] = None,
) -> MetricHistoryOut:
    """Every logged point of the job's run metrics (loss, lr, validation metrics), by step."""
    from fovea.tracking.run_reader import RunNotFound, metric_history

    run_id = await run_in_threadpool(_run_id, request, job_id)
    if run_id is None:
        return MetricHistoryOut(job_id=job_id, run_id=None, metrics={})
    tracking_uri = request.app.state.settings.tracking_uri
    try:
        history = await off_the_loop(
            metric_history,
            store="tracking store",
            tracking_uri=tracking_uri,
            run_id=run_id,
            keys=key,
        )
    except RunNotFound as exc:
        raise NotFound(str(exc)) from None
    metrics = {
        name: [MetricPointOut(step=p.step, value=p.value, timestamp=p.timestamp) for p in points]
        for name, points in history.items()
    }
    return MetricHistoryOut(job_id=job_id, run_id=run_id, metrics=metrics)


@router.get(
    "/{job_id}/artifacts",
    response_model=ArtifactListOut,
    responses=error_responses(401, 404, 422, 503),
)
async def job_artifacts(job_id: JobId, request: Request) -> ArtifactListOut:
    """The plots and tables the job's run has, from the fixed list the API serves."""
    from fovea.tracking.run_reader import list_artifacts

    run_id = await run_in_threadpool(_run_id, request, job_id)
    if run_id is None:
        return ArtifactListOut(job_id=job_id, run_id=None, items=[])
    tracking_uri = request.app.state.settings.tracking_uri
    found = await off_the_loop(
        list_artifacts, store="tracking store", tracking_uri=tracking_uri, run_id=run_id
    )
    items = [
        ArtifactOut(
            name=a.name,
            media_type=a.media_type,
            size=a.size,
            url=f"/jobs/{job_id}/artifacts/{a.name}",
        )
        for a in found
    ]
    return ArtifactListOut(job_id=job_id, run_id=run_id, items=items)


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}, "application/json": {}}},
        **error_responses(401, 404, 422, 503),
    },
)
async def job_artifact(
    job_id: JobId, name: Annotated[str, Path(max_length=100)], request: Request
) -> Response:
    """One artifact by its name in the allow-list (e.g. confusion_matrix.png)."""
    from fovea.tracking.run_reader import ARTIFACTS, read_artifact

    if name not in ARTIFACTS:
        raise NotFound(f"no artifact {name!r}; artifacts: {', '.join(ARTIFACTS)}")
    run_id = await run_in_threadpool(_run_id, request, job_id)
    if run_id is None:
        raise NotFound(f"job {job_id} has no run yet")
    tracking_uri = request.app.state.settings.tracking_uri
    try:
        data, media = await off_the_loop(
            read_artifact,
            store="tracking store",
            tracking_uri=tracking_uri,
            run_id=run_id,
            name=name,
        )
    except FileNotFoundError:
        raise NotFound(f"job {job_id} has no artifact {name}") from None
    return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=60"})
