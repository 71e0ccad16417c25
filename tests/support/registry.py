"""A tiny classification model logged and registered in a real MLflow store."""

from __future__ import annotations

from typing import Any

import torch

from fovea.tracking import ModelRecord, RunLogger, log_model
from fovea.tracking.gate import on_validation_metrics
from tests.support.stores import MlflowStore

CARD = {
    "task": "classification",
    "arch": "smallcnn",
    "num_classes": 3,
    "class_names": ["red", "green", "blue"],
    "image_size": 32,
}


def register_tiny_model(
    store: MlflowStore, name: str, top1: float, *, seed: int = 0, **log_kw: Any
) -> ModelRecord:
    """Log and register a tiny model; `log_kw` go to log_model (decider, version_tags,
    metrics). The decider is the gate on recorded validation metrics unless one is given."""
    torch.manual_seed(seed)
    state_dict = {"head.weight": torch.randn(3, 4), "head.bias": torch.zeros(3)}
    with RunLogger(
        tracking_uri=store.tracking_uri, experiment=name, artifact_root=store.artifact_root
    ) as run_logger:
        return log_model(
            logger_or_run_id=run_logger,
            task_name="classification",
            card=CARD,
            state_dict=state_dict,
            registered_name=name,
            **{
                "metrics": {"top1": top1, "loss": 0.3, "f1/red": float("nan")},
                "main_metric": "top1",
                "decider": on_validation_metrics,
                **log_kw,
            },
        )
