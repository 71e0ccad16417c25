"""/models/{name}/predict, /score and /predictions: serving a registered model and its log.

Routes read and bound the request; the serving service (fovea.platform.monitoring.predictor)
resolves the alias, calls the replicas on Ray, keeps sampled images and writes the log.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool

from fovea.platform.api.deps import MAX_BIG_ROW_ID, PredictorDep, SessionDep, SettingsDep
from fovea.platform.api.http_errors import error_responses
from fovea.platform.api.schemas import (
    PREDICT_REQUEST_BODY,
    PredictionPage,
    PredictionRowOut,
    PredictOut,
    ScoreRequest,
    ScoreRunOut,
)
from fovea.platform.errors import NotFound, PayloadTooLarge, SpecError
from fovea.platform.jobs.validation import resolve_data_path

if TYPE_CHECKING:
    from fovea.config import Settings

router = APIRouter(prefix="/models", tags=["serving"])
RowId = Annotated[int, PathParam(ge=1, le=MAX_BIG_ROW_ID)]


@router.post(
    "/{name}/predict",
    response_model=PredictOut,
    openapi_extra={"requestBody": PREDICT_REQUEST_BODY},
    responses=error_responses(401, 404, 413, 422, 503),
)
async def predict(
    name: str,
    request: Request,
    settings: SettingsDep,
    predictor: PredictorDep,
    alias: Annotated[str | None, Query(max_length=100)] = None,
    version: Annotated[int | None, Query(ge=1)] = None,
    masks: bool = False,
) -> PredictOut:
    """Images as multipart files (field `files`), or JSON {"images": [base64, ...]} or
    {"images": [{"name", "data"}, ...]}; the answer per image, in order."""
    from fovea.workers.serving import ImageInput

    images = [ImageInput(n, d) for n, d in await _read_images(request, settings)]
    served = await run_in_threadpool(
        predictor.predict, name, images, alias=alias, version=version, masks=masks
    )
    return PredictOut(
        model=name,
        version=served.resolved.version,
        aliases=list(served.resolved.aliases),
        task=served.resolved.task,
        request_id=served.request_id,
        predictions=[
            {"file": r["file"], "ok": True, **r["response"]}
            if r["ok"]
            else {"file": r["file"], "ok": False, "error": r["error"]}
            for r in served.results
        ],
    )


async def _read_images(request: Request, settings: Settings) -> list[tuple[str, bytes]]:
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


def _json_images(body: object) -> list[tuple[str, bytes]]:
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


@router.post(
    "/{name}/score",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ScoreRunOut,
    responses=error_responses(401, 404, 422, 503),
)
async def score(
    name: str, body: ScoreRequest, settings: SettingsDep, predictor: PredictorDep
) -> ScoreRunOut:
    """Score every image under a folder (a data root) on the Ray cluster, in the background;
    the rows go to the log with source "batch". Poll GET /models/{name}/score/{id}."""
    from fovea.platform.monitoring.scoring import start_scoring

    folder = resolve_data_path(body.folder, roots=settings.data_roots, field="folder")
    if not folder.is_dir():
        raise SpecError("folder", f"{body.folder!r} is not a folder")
    resolved = await run_in_threadpool(predictor.resolve, name, body.alias, body.version)
    run = await run_in_threadpool(
        start_scoring,
        sessions=predictor.sessions,
        pool=predictor.pool,
        resolved=resolved,
        folder=folder,
        roots=settings.data_roots,
    )
    return ScoreRunOut(**run)


@router.get("/{name}/score/{run_id}", response_model=ScoreRunOut)
def score_status(name: str, run_id: str, session: SessionDep) -> ScoreRunOut:
    from fovea.platform.monitoring.scoring import get_run

    run = get_run(session=session, model_name=name, run_id=run_id)
    if run is None:
        raise NotFound(f"no scoring run {run_id!r} of model {name!r}")
    return ScoreRunOut(**run)


@router.get("/{name}/predictions", response_model=PredictionPage)
def predictions(
    name: str,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_BIG_ROW_ID)] = None,
    from_id: Annotated[int | None, Query(ge=1, le=MAX_BIG_ROW_ID)] = None,
    sampled: bool = False,
) -> PredictionPage:
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
    return PredictionPage(
        items=[
            PredictionRowOut(
                id=r.id,
                at=r.at,
                version=int(r.model_version),
                request_id=r.request_id,
                source=r.source,
                file=r.file_name,
                sha256=r.sha256,
                stats={s: getattr(r, s) for s in STATISTICS},
                summary=r.summary,
                sampled=r.image_uri is not None,
                image=f"/models/{name}/predictions/{r.id}/image" if r.image_uri else None,
            )
            for r in rows
        ]
    )


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
