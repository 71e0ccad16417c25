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

TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
}


def get_task(name: str, *, label_smoothing: float = 0.0) -> Task:
    """A task instance; `label_smoothing` (TrainConfig.label_smoothing) shapes its class loss."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[name](label_smoothing=label_smoothing)


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
