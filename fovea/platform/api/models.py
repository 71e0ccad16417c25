"""/models: registered models, versions, metrics and the champion (read from MLflow)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Query
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from fovea.platform.api.deps import MAX_ROW_ID, SessionDep, SettingsDep
from fovea.platform.api.http_errors import error_responses
from fovea.platform.errors import NotFound, Unavailable
from fovea.platform.model_events import list_model_events
from fovea.platform.retraining import manual as promotions
from fovea.platform.store import ModelEvent

router = APIRouter(prefix="/models", tags=["models"])

REGISTRY_RETRY_AFTER_S = 5
T = TypeVar("T")


def _jsonable(obj: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else obj


async def _registry(call: Callable[..., T], **kwargs: Any) -> T:
    """Run a registry read off the event loop; MLflow failing is 503, never a 500."""
    from mlflow.exceptions import MlflowException  # mlflow loads on first use, not at start

    try:
        return await run_in_threadpool(call, **kwargs)
    except MlflowException as exc:
        raise Unavailable(
            f"the model registry did not answer: {exc.message[:300]}",
            retry_after_s=REGISTRY_RETRY_AFTER_S,
        ) from exc


@router.get("", responses=error_responses(401, 503))
async def list_models(settings: SettingsDep) -> dict[str, Any]:
    from fovea.tracking.registry import list_models as _list

    models = await _registry(_list, tracking_uri=settings.tracking_uri)
    return {"items": [_jsonable(m) for m in models]}


@router.get("/{name}", responses=error_responses(401, 404, 422, 503))
async def get_model(
    name: Annotated[str, Path(min_length=1, max_length=256)], settings: SettingsDep
) -> dict[str, Any]:
    from fovea.tracking.registry import get_model as _get

    model = await _registry(_get, tracking_uri=settings.tracking_uri, name=name)
    if model is None:
        raise NotFound(f"no registered model named {name!r}")
    return _jsonable(model)


# -- the promotion gate, by hand ------------------------------------------------------------


class PromoteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=2000, description="why, for the audit log")


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=1, max_length=2000)


class ModelEventOut(BaseModel):
    id: int
    model_name: str
    model_version: str | None
    kind: str
    value: str | None
    at: datetime
    message: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, e: ModelEvent) -> ModelEventOut:
        return cls(
            id=e.id,
            model_name=e.model_name,
            model_version=e.model_version,
            kind=e.kind,
            value=e.value,
            at=e.at,
            message=e.message,
            data=e.data,
        )


@router.post("/{name}/promote", response_model=ModelEventOut, responses=error_responses(409))
def promote_model(
    name: str, body: PromoteIn, session: SessionDep, settings: SettingsDep
) -> ModelEventOut:
    """Make a version the champion by hand (overrides the gate); audited in model_events."""
    event = promotions.promote(
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
    event = promotions.roll_back(
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
