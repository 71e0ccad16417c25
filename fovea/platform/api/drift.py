"""/models/{name}/drift: drift reports of a model's live images against its training data,
and their plots. The statistics live in fovea.platform.monitoring."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from fovea.platform.api.deps import MAX_BIG_ROW_ID, PredictorDep, SessionDep, SettingsDep
from fovea.platform.api.http_errors import error_responses
from fovea.platform.api.schemas import DriftOut, DriftReportOut
from fovea.platform.errors import NotFound
from fovea.platform.store import DriftReport, transaction

if TYPE_CHECKING:
    from fovea.platform.monitoring.predictor import Predictor
    from fovea.tracking.versions import ResolvedVersion

router = APIRouter(prefix="/models", tags=["drift"])
RowId = Annotated[int, PathParam(ge=1, le=MAX_BIG_ROW_ID)]


@router.get("/{name}/drift", response_model=DriftOut)
def drift(
    name: str,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DriftOut:
    """The latest report in full, and the history (newest first) without test details."""
    from fovea.platform.monitoring.service import drift_settings, list_reports

    reports = list_reports(session=session, model_name=name, limit=limit)
    return DriftOut(
        model=name,
        latest=DriftReportOut.of(reports[0], full=True) if reports else None,
        history=[DriftReportOut.of(r, full=False) for r in reports],
        thresholds=drift_settings(settings).__dict__,
        interval_s=settings.drift_interval_s,
    )


@router.post(
    "/{name}/drift",
    status_code=status.HTTP_201_CREATED,
    response_model=DriftReportOut,
    responses=error_responses(409),
)
async def compute_drift(
    name: str,
    predictor: PredictorDep,
    window: Annotated[int, Query(ge=1, le=1_000_000)] = 500,
    alias: Annotated[str | None, Query(max_length=100)] = None,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> DriftReportOut:
    """A report now, on the newest `window` predictions of the version `alias` (default
    champion) or `version` names."""
    resolved = await run_in_threadpool(predictor.resolve, name, alias, version)
    return await run_in_threadpool(_compute, predictor, resolved, window)


def _compute(predictor: Predictor, resolved: ResolvedVersion, window: int) -> DriftReportOut:
    from fovea.platform.monitoring.service import compute_report, drift_settings

    reference = predictor.references.get(resolved.name, resolved.version)
    with transaction(predictor.sessions) as session:
        report = compute_report(
            session=session,
            model_name=resolved.name,
            version=resolved.version,
            reference=reference,
            settings=drift_settings(predictor.settings),
            trigger="request",
            window=window,
        )
        return DriftReportOut.of(report, full=True)


@router.get("/{name}/drift/{report_id}", response_model=DriftReportOut)
def drift_report(name: str, report_id: RowId, session: SessionDep) -> DriftReportOut:
    return DriftReportOut.of(_get_report(session, name, report_id), full=True)


@router.get(
    "/{name}/drift/{report_id}/plots/{plot}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "the plot"}},
)
def drift_plot(name: str, report_id: RowId, plot: str, session: SessionDep) -> Response:
    from fovea.platform.monitoring.report_plots import PLOTS

    if plot not in PLOTS:
        raise NotFound(f"no plot {plot!r}; plots: {', '.join(PLOTS)}")
    report = _get_report(session, name, report_id)
    return Response(PLOTS[plot](report.result), media_type="image/png")


def _get_report(session: Session, name: str, report_id: int) -> DriftReport:
    from fovea.platform.monitoring.service import get_report

    report = get_report(session=session, model_name=name, report_id=report_id)
    if report is None:
        raise NotFound(f"no drift report {report_id} of model {name!r}")
    return report
