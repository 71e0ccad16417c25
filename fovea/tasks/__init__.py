"""Pure-PyTorch tasks and the shared training engine; nothing here knows Ray or MLflow.

`TASKS` is the explicit list of tasks (in `fovea.tasks.all_tasks`); `get_task` builds one
by name.

Importing this package does not import torch: the public names below are loaded on first
use (PEP 562), so torch-free modules inside it (`fovea.tasks.catalog`, the dataset format
parsers under `fovea.tasks.data`) serve the API process, which must start fast and
without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fovea.tasks.errors import UserError

if TYPE_CHECKING:
    from fovea.tasks.all_tasks import TASKS, get_task
    from fovea.tasks.base import (
        AugmentConfig,
        DataBundle,
        DataConfig,
        EvalResult,
        EventSink,
        ModelConfig,
        Task,
        TrainConfig,
        no_events,
    )

# public name -> the module that defines it
_LAZY = {
    "AugmentConfig": "fovea.tasks.base",
    "DataBundle": "fovea.tasks.base",
    "DataConfig": "fovea.tasks.base",
    "EvalResult": "fovea.tasks.base",
    "EventSink": "fovea.tasks.base",
    "ModelConfig": "fovea.tasks.base",
    "Task": "fovea.tasks.base",
    "TrainConfig": "fovea.tasks.base",
    "no_events": "fovea.tasks.base",
    "TASKS": "fovea.tasks.all_tasks",
    "get_task": "fovea.tasks.all_tasks",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fovea.tasks' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


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
