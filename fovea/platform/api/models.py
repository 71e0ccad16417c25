"""/models: registered models, versions, metrics and the champion (read from MLflow)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path
from fastapi.concurrency import run_in_threadpool

from fovea.platform.api.deps import SettingsDep
from fovea.platform.api.errors import error_responses
from fovea.platform.errors import NotFound, Unavailable

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
