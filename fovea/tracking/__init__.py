"""MLflow tracking for Fovea: buffered run logging and the model registry.

Used inside Ray workers and by the API process alike, so it imports nothing from
fovea.platform or fovea.workers; every function takes its tracking URI explicitly.
"""

from fovea.tracking._mlflow import prepare_store, sanitize_key
from fovea.tracking.logger import RunLogger
from fovea.tracking.registry import (
    CHAMPION,
    ModelDetail,
    ModelNotFoundError,
    ModelRecord,
    ModelSummary,
    ModelVersionInfo,
    download_weights,
    get_model,
    list_models,
    log_model,
)

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
