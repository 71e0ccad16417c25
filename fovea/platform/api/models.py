"""/models: registered models, versions, metrics and the champion (read from MLflow)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool

from fovea.platform.api.deps import SettingsDep
from fovea.platform.jobs import NotFound

router = APIRouter(prefix="/models", tags=["models"])


def _jsonable(obj: Any) -> Any:
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else obj


@router.get("")
async def list_models(settings: SettingsDep) -> dict[str, Any]:
    from fovea.tracking.registry import list_models as _list

    models = await run_in_threadpool(_list, tracking_uri=settings.tracking_uri)
    return {"items": [_jsonable(m) for m in models]}


@router.get("/{name}")
async def get_model(name: str, settings: SettingsDep) -> dict[str, Any]:
    from fovea.tracking.registry import get_model as _get

    model = await run_in_threadpool(_get, tracking_uri=settings.tracking_uri, name=name)
    if model is None:
        raise NotFound(f"no registered model named {name!r}")
    return _jsonable(model)
