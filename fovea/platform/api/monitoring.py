"""/models/{name}/predict, /score, /drift, /predictions: serving and monitoring routes.

Thin routes: reading and limiting the request here, everything else in services
(fovea.platform.monitoring.service, fovea.workers.serving), imported on first use so the API
starts fast (numpy/scipy and ray are not needed to list jobs).
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from fovea.platform.api.deps import MAX_BIG_ROW_ID, SessionDep, SettingsDep
from fovea.platform.api.http_errors import error_response, error_responses
from fovea.platform.errors import NotFound, SpecError, Unavailable
from fovea.platform.jobs.validation import resolve_data_path
from fovea.platform.store import transaction

router = APIRouter(prefix="/models", tags=["monitoring"])
RowId = Annotated[int, PathParam(ge=1, le=MAX_BIG_ROW_ID)]  # a report's or a prediction's


class PayloadTooLarge(Exception):
    """413: a request over the configured image count or size."""


class BadImages(Exception):
    """422: no image of the request could be read; names each file and why."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("no image could be read: " + "; ".join(p["problem"] for p in problems))
        self.problems = problems


def register_errors(app: FastAPI) -> None:
    """The monitoring errors in the API's error body {error, message, detail}."""

    @app.exception_handler(PayloadTooLarge)
    async def _too_large(_: Request, exc: PayloadTooLarge) -> JSONResponse:
        return error_response(413, "too_large", str(exc))

    @app.exception_handler(BadImages)
    async def _bad_images(_: Request, exc: BadImages) -> JSONResponse:
        return error_response(422, "invalid_images", str(exc), exc.problems)

    from fovea.platform.monitoring.service import NoReference

    @app.exception_handler(NoReference)
    async def _no_reference(_: Request, exc: NoReference) -> JSONResponse:
        return error_response(409, "no_reference", str(exc))


class ScoreRequest(BaseModel):
    folder: str = Field(min_length=1, max_length=4096, description="a folder under a data root")
    alias: str | None = Field(None, max_length=100)
    version: int | None = Field(None, ge=1)


# ---- predict -------------------------------------------------------------------------------


_IMAGES_BODY = {
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


@router.post("/{name}/predict", openapi_extra={"requestBody": _IMAGES_BODY})
async def predict(
    name: str,
    request: Request,
    settings: SettingsDep,
    alias: Annotated[str | None, Query(max_length=100)] = None,
    version: Annotated[int | None, Query(ge=1)] = None,
    masks: bool = False,
) -> dict[str, Any]:
    """Images as multipart files (field `files`), or JSON {"images": [base64, ...]} or
    {"images": [{"name", "data"}, ...]}; the answer per image, in order."""
    from fovea.workers.serving import ImageInput

    images = [ImageInput(n, d) for n, d in await _read_images(request, settings)]
    resolved, results = await run_in_threadpool(
        _resolve_and_predict, request, name, alias, version, images, masks
    )
    if not any(r["ok"] for r in results):
        raise BadImages([{"field": r["file"], "problem": r["error"]} for r in results])
    request_id = uuid.uuid4().hex
    uris = _sample(settings, name, images, results)
    await run_in_threadpool(
        _log, request.app.state.sessions, resolved, request_id, "api", results, uris
    )
    return {
        "model": name,
        "version": resolved.version,
        "aliases": list(resolved.aliases),
        "task": resolved.task,
        "request_id": request_id,
        "predictions": [_item(r) for r in results],
    }


async def _read_images(request: Request, settings: Any) -> list[tuple[str, bytes]]:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > settings.predict_max_bytes:
        raise PayloadTooLarge(
            f"request body of {int(length):,} bytes exceeds predict_max_bytes "
            f"({settings.predict_max_bytes:,})"
        )
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form(
            max_files=settings.predict_max_images + 1, max_part_size=settings.predict_max_bytes
        )
        files = [
            (getattr(v, "filename", None) or f"file{i}", await v.read())
            for i, v in enumerate(form.getlist("files"))
            if hasattr(v, "read")
        ]
    else:
        try:
            body = await request.json()
        except ValueError:  # not JSON, or not UTF-8
            raise SpecError(
                "body", "expected multipart field 'files' or JSON {'images': [...]}"
            ) from None
        files = _json_images(body)
    if not files:
        raise SpecError(
            "files", "no images in the request (multipart field 'files' or JSON 'images')"
        )
    if len(files) > settings.predict_max_images:
        raise PayloadTooLarge(
            f"{len(files)} images exceed predict_max_images ({settings.predict_max_images})"
        )
    if sum(len(data) for _, data in files) > settings.predict_max_bytes:
        raise PayloadTooLarge(f"images exceed predict_max_bytes ({settings.predict_max_bytes:,})")
    return files


def _json_images(body: Any) -> list[tuple[str, bytes]]:
    items = body.get("images") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise SpecError("images", "expected {'images': [base64 string or {name, data}, ...]}")
    files = []
    for i, item in enumerate(items):
        name, data = (f"image{i}", item) if isinstance(item, str) else (None, None)
        if isinstance(item, dict):
            name, data = str(item.get("name") or f"image{i}"), item.get("data")
        if not isinstance(data, str):
            raise SpecError(f"images[{i}]", "expected a base64 string or {name, data}")
        try:
            files.append((name, base64.b64decode(data, validate=True)))
        except (binascii.Error, ValueError):
            raise SpecError(f"images[{i}]", f"{name}: not valid base64") from None
    return files


def _resolve(settings: Any, name: str, alias: str | None, version: int | None) -> Any:
    """The version an alias names, looked up at most every RESOLVE_TTL_S per alias: an
    alias moved in MLflow reaches serving within that time."""
    from fovea.tracking.registry import ModelNotFoundError
    from fovea.tracking.versions import resolve_version

    key = (settings.tracking_uri, name, alias, version)
    cached = _resolved.get(key)
    if cached is not None and time.monotonic() - cached[0] < RESOLVE_TTL_S:
        return cached[1]
    try:
        found = resolve_version(
            tracking_uri=settings.tracking_uri, name=name, alias=alias, version=version
        )
    except ModelNotFoundError as exc:
        raise NotFound(str(exc)) from None
    _resolved[key] = (time.monotonic(), found)
    return found


RESOLVE_TTL_S = 2.0
_resolved: dict[tuple[Any, ...], tuple[float, Any]] = {}


def _resolve_and_predict(
    request: Request,
    name: str,
    alias: str | None,
    version: int | None,
    images: list[Any],
    masks: bool,
) -> tuple[Any, list[dict[str, Any]]]:
    resolved = _resolve(request.app.state.settings, name, alias, version)
    return resolved, _predict(_serving(request), resolved, images, masks)


def _serving(request: Request) -> Any:
    state = request.app.state
    if getattr(state, "serving", None) is None:
        from fovea.workers.serving import ServingPool

        settings = state.settings
        state.serving = ServingPool(
            tracking_uri=settings.tracking_uri,
            ray_address=settings.ray_address,
            cpus=settings.serving_cpus,
            threads=settings.serving_threads,
            max_pixels=settings.predict_max_pixels,
        )
    return state.serving


def _predict(pool: Any, resolved: Any, images: list[Any], masks: bool) -> list[dict[str, Any]]:
    try:
        results = pool.predict(resolved.name, resolved.version, images, masks=masks)
    except ConnectionError as exc:
        raise Unavailable(f"serving needs a Ray cluster: {exc}", retry_after_s=30) from None
    if "champion" in resolved.aliases:
        pool.retire(resolved.name, keep=resolved.version)  # the champion moved: old ones go
    return results


def _log(
    sessions: Any, resolved: Any, request_id: str, source: str, results: list, uris: list
) -> None:
    from fovea.platform.monitoring.service import log_predictions

    with transaction(sessions) as session:
        log_predictions(
            session=session,
            model_name=resolved.name,
            version=resolved.version,
            request_id=request_id,
            source=source,
            results=results,
            image_uris=uris,
        )


def _sample(settings: Any, name: str, images: list[Any], results: list[dict]) -> list[str | None]:
    """Keep a share (prediction_sample_rate) of the images for people to look at later."""
    import random

    uris: list[str | None] = []
    for image, result in zip(images, results, strict=True):
        if not result["ok"] or random.random() >= settings.prediction_sample_rate:
            uris.append(None)
            continue
        folder = settings.prediction_samples / name
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (result["log"]["sha256"] + Path(image.name).suffix.lower()[:8])
        path.write_bytes(image.data)
        uris.append(str(path))
    return uris


def _item(result: dict[str, Any]) -> dict[str, Any]:
    if not result["ok"]:
        return {"file": result["file"], "ok": False, "error": result["error"]}
    return {"file": result["file"], "ok": True, **result["response"]}


# ---- batch scoring -------------------------------------------------------------------------


@router.post("/{name}/score", status_code=status.HTTP_202_ACCEPTED)
async def score(
    name: str, body: ScoreRequest, request: Request, settings: SettingsDep
) -> dict[str, Any]:
    """Score every image under a folder (a data root) on the Ray cluster, in the background;
    the rows go to the log with source "batch". Poll GET /models/{name}/score/{id}."""
    from fovea.platform.monitoring.scoring import start_scoring

    folder = resolve_data_path(body.folder, roots=settings.data_roots, field="folder")
    if not folder.is_dir():
        raise SpecError("folder", f"{body.folder!r} is not a folder")
    resolved = await run_in_threadpool(_resolve, settings, name, body.alias, body.version)
    run = await run_in_threadpool(
        start_scoring,
        sessions=request.app.state.sessions,
        pool=_serving(request),
        resolved=resolved,
        folder=folder,
        roots=settings.data_roots,
    )
    return run


@router.get("/{name}/score/{run_id}")
def score_status(name: str, run_id: str, session: SessionDep) -> dict[str, Any]:
    from fovea.platform.monitoring.scoring import get_run

    run = get_run(session=session, model_name=name, run_id=run_id)
    if run is None:
        raise NotFound(f"no scoring run {run_id!r} of model {name!r}")
    return run


# ---- drift ---------------------------------------------------------------------------------


@router.get("/{name}/drift")
def drift(
    name: str,
    session: SessionDep,
    settings: SettingsDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """The latest report in full, and the history (newest first) without test details."""
    from fovea.platform.monitoring.service import drift_settings, list_reports

    reports = list_reports(session=session, model_name=name, limit=limit)
    return {
        "model": name,
        "latest": _report(reports[0], full=True) if reports else None,
        "history": [_report(r, full=False) for r in reports],
        "thresholds": drift_settings(settings).__dict__,
        "interval_s": settings.drift_interval_s,
    }


@router.post("/{name}/drift", status_code=status.HTTP_201_CREATED, responses=error_responses(409))
async def compute_drift(
    name: str,
    request: Request,
    settings: SettingsDep,
    window: Annotated[int, Query(ge=1, le=1_000_000)] = 500,
    alias: Annotated[str | None, Query(max_length=100)] = None,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """A report now, on the newest `window` predictions of the version `alias` (default
    champion) or `version` names."""
    resolved = await run_in_threadpool(_resolve, settings, name, alias, version)
    return await run_in_threadpool(_compute, request, resolved, window)


def _compute(request: Request, resolved: Any, window: int) -> dict[str, Any]:
    from fovea.platform.monitoring.service import compute_report, drift_settings, references

    state = request.app.state
    reference = references(state).get(resolved.name, resolved.version)
    with transaction(state.sessions) as session:
        report = compute_report(
            session=session,
            model_name=resolved.name,
            version=resolved.version,
            reference=reference,
            settings=drift_settings(state.settings),
            trigger="request",
            window=window,
        )
        return _report(report, full=True)


@router.get("/{name}/drift/{report_id}")
def drift_report(name: str, report_id: RowId, session: SessionDep) -> dict[str, Any]:
    return _report(_get_report(session, name, report_id), full=True)


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


def _get_report(session: Any, name: str, report_id: int) -> Any:
    from fovea.platform.monitoring.service import get_report

    report = get_report(session=session, model_name=name, report_id=report_id)
    if report is None:
        raise NotFound(f"no drift report {report_id} of model {name!r}")
    return report


def _report(report: Any, *, full: bool) -> dict[str, Any]:
    out = {
        "id": report.id,
        "created_at": report.created_at.isoformat(),
        "model": report.model_name,
        "version": int(report.model_version),
        "trigger": report.trigger,
        "verdict": report.verdict,
        "window_verdict": report.window_verdict,
        "reasons": report.reasons,
        "n_live": report.n_live,
        "n_reference": report.n_reference,
        "first_prediction_id": report.first_prediction_id,
        "last_prediction_id": report.last_prediction_id,
        "seconds": round(report.seconds, 3),
        "plots": [f"/models/{report.model_name}/drift/{report.id}/plots/{p}"
                  for p in ("histograms.png", "mmd.png")],
    }  # fmt: skip
    if full:
        out.update(report.result)
    return out


# ---- the log -------------------------------------------------------------------------------


@router.get("/{name}/predictions")
def predictions(
    name: str,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_BIG_ROW_ID)] = None,
    from_id: Annotated[int | None, Query(ge=1, le=MAX_BIG_ROW_ID)] = None,
    sampled: bool = False,
) -> dict[str, Any]:
    """The newest rows of the prediction log (embeddings left out), below `before_id` and
    from `from_id` on; `sampled=true`: only those whose image was kept
    (prediction_sample_rate), each with the route of its image."""
    from fovea.platform.monitoring.service import recent_predictions
    from fovea.tasks.reference import STATISTICS

    rows = recent_predictions(
        session=session,
        model_name=name,
        limit=limit,
        before_id=before_id,
        from_id=from_id,
        sampled=sampled,
    )
    return {
        "items": [
            {
                "id": r.id,
                "at": r.at.isoformat(),
                "version": int(r.model_version),
                "request_id": r.request_id,
                "source": r.source,
                "file": r.file_name,
                "sha256": r.sha256,
                "stats": {s: getattr(r, s) for s in STATISTICS},
                "summary": r.summary,
                "sampled": r.image_uri is not None,
                "image": f"/models/{name}/predictions/{r.id}/image" if r.image_uri else None,
            }
            for r in rows
        ]
    }


_IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
                ".bmp": "image/bmp", ".webp": "image/webp", ".gif": "image/gif",
                ".tif": "image/tiff", ".tiff": "image/tiff"}  # fmt: skip


@router.get(
    "/{name}/predictions/{prediction_id}/image",
    response_class=Response,
    responses={
        200: {"content": {"image/*": {}}, "description": "the kept copy of the live image"},
        **error_responses(401, 404, 422, 503),
    },
)
def prediction_image(
    name: str, prediction_id: RowId, session: SessionDep, settings: SettingsDep
) -> Response:
    """The sampled copy of a live image. Its file is the one the log row names, and only
    when it lies under the samples folder: no path ever comes from the request."""
    from fovea.platform.monitoring.service import get_prediction

    row = get_prediction(session=session, model_name=name, prediction_id=prediction_id)
    if row is None:
        raise NotFound(f"no prediction {prediction_id} of model {name!r}")
    if row.image_uri is None:
        raise NotFound(
            f"prediction {prediction_id} of model {name!r} kept no image "
            "(prediction_sample_rate decides which are kept)"
        )
    root = settings.prediction_samples.resolve()
    path = Path(row.image_uri).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise NotFound(
            f"the image of prediction {prediction_id} is gone (retention, or a moved samples "
            "folder)"
        )
    kind = _IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return Response(path.read_bytes(), media_type=kind)
