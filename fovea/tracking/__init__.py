"""MLflow tracking for Fovea: buffered run logging and the model registry.

Used inside Ray workers and by the API process alike, so it imports nothing from
fovea.platform or fovea.workers; every function takes its tracking URI explicitly.

Importing this package does not import MLflow: the public names below load on first use
(PEP 562), so the API process can read `fovea.tracking.model_views` and start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fovea.tracking._mlflow import prepare_store, sanitize_key
    from fovea.tracking.logger import RunLogger
    from fovea.tracking.model_views import ModelDetail, ModelSummary, ModelVersionInfo
    from fovea.tracking.registry import (
        CHAMPION,
        ModelNotFoundError,
        ModelRecord,
        download_weights,
        get_model,
        list_models,
        log_model,
    )

# public name -> the module that defines it
_LAZY = {
    "CHAMPION": "fovea.tracking.registry",
    "ModelDetail": "fovea.tracking.model_views",
    "ModelNotFoundError": "fovea.tracking.registry",
    "ModelRecord": "fovea.tracking.registry",
    "ModelSummary": "fovea.tracking.model_views",
    "ModelVersionInfo": "fovea.tracking.model_views",
    "RunLogger": "fovea.tracking.logger",
    "download_weights": "fovea.tracking.registry",
    "get_model": "fovea.tracking.registry",
    "list_models": "fovea.tracking.registry",
    "log_model": "fovea.tracking.registry",
    "prepare_store": "fovea.tracking._mlflow",
    "sanitize_key": "fovea.tracking._mlflow",
}
__all__ = [
    "CHAMPION",
    "ModelDetail",
    "ModelNotFoundError",
    "ModelRecord",
    "ModelSummary",
    "ModelVersionInfo",
    "RunLogger",
    "download_weights",
    "get_model",
    "list_models",
    "log_model",
    "prepare_store",
    "sanitize_key",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fovea.tracking' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
