"""/models: registered models, versions, metrics and the champion (read from MLflow)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from fovea.platform.api.deps import MAX_ROW_ID, SessionDep, SettingsDep, off_the_loop
from fovea.platform.api.http_errors import error_responses
from fovea.platform.api.schemas import (
    ModelEventOut,
    ModelList,
    PromoteIn,
    RollbackIn,
)
from fovea.platform.errors import NotFound
from fovea.platform.model_events import list_model_events
from fovea.platform.retraining import manual
from fovea.tracking.model_views import ModelDetail

router = APIRouter(prefix="/models", tags=["models"])


@router.get("", response_model=ModelList, responses=error_responses(401, 503))
async def list_models(settings: SettingsDep) -> ModelList:
    from fovea.tracking.registry import list_models as _list

    models = await off_the_loop(_list, store="model registry", tracking_uri=settings.tracking_uri)
    return ModelList(items=models)


@router.get("/{name}", response_model=ModelDetail, responses=error_responses(401, 404, 422, 503))
async def get_model(
    name: Annotated[str, Path(min_length=1, max_length=256)], settings: SettingsDep
) -> ModelDetail:
    from fovea.tracking.registry import get_model as _get

    model = await off_the_loop(
        _get, store="model registry", tracking_uri=settings.tracking_uri, name=name
    )
    if model is None:
        raise NotFound(f"no registered model named {name!r}")
    return model


# -- the promotion gate, by hand ------------------------------------------------------------


@router.post("/{name}/promote", response_model=ModelEventOut, responses=error_responses(409))
def promote_model(
    name: str, body: PromoteIn, session: SessionDep, settings: SettingsDep
) -> ModelEventOut:
    """Make a version the champion by hand (overrides the gate); audited in model_events."""
    event = manual.promote(
        session=session,
        tracking_uri=settings.tracking_uri,
        name=name,
        version=body.version,
        reason=body.reason,
    )
    return ModelEventOut.of(event)


@router.post("/{name}/rollback", response_model=ModelEventOut, responses=error_responses(409))
def rollback_model(
    name: str, body: RollbackIn, session: SessionDep, settings: SettingsDep
) -> ModelEventOut:
    """Give `champion` back to the version the current champion replaced; audited."""
    event = manual.roll_back(
        session=session, tracking_uri=settings.tracking_uri, name=name, reason=body.reason
    )
    return ModelEventOut.of(event)


@router.get("/{name}/events", response_model=list[ModelEventOut])
def model_events(
    name: str,
    session: SessionDep,
    kind: Annotated[str | None, Query(max_length=40)] = None,
    after_id: Annotated[int, Query(ge=0, le=MAX_ROW_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ModelEventOut]:
    """Drift verdicts, retrain triggers, promotions and rollbacks of a model, oldest first."""
    found = list_model_events(
        session=session, model_name=name, kind=kind, after_id=after_id, limit=limit
    )
    return [ModelEventOut.of(e) for e in found]
