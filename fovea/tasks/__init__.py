"""Pure-PyTorch tasks and the shared training engine; nothing here knows Ray or MLflow.

`TASKS` is the explicit list of tasks; `get_task` builds one by name.
"""

from __future__ import annotations

from fovea.tasks.base import (
    AugmentConfig,
    DataBundle,
    DataConfig,
    EvalResult,
    EventSink,
    ModelConfig,
    Task,
    TrainConfig,
    UserError,
    no_events,
)
from fovea.tasks.classification import ClassificationTask
from fovea.tasks.detection import DetectionTask
from fovea.tasks.segmentation import SegmentationTask

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "detection": DetectionTask,
    "segmentation": SegmentationTask,
}


def get_task(name: str, *, train: TrainConfig | None = None) -> Task:
    """A task instance; the loss-shaping fields of `train` (label smoothing, loss weights)
    go to the task's constructor through its `from_train_config`."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name].from_train_config(train or TrainConfig())


__all__ = [
    "TASKS",
    "AugmentConfig",
    "DataBundle",
    "DataConfig",
    "EvalResult",
    "EventSink",
    "ModelConfig",
    "Task",
    "TrainConfig",
    "UserError",
    "get_task",
    "no_events",
]
