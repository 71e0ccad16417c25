"""The explicit list of tasks: `TASKS`, and `get_task` to build one by name."""

from __future__ import annotations

from fovea.tasks.base import Task, TrainConfig
from fovea.tasks.classification import ClassificationTask
from fovea.tasks.detection import DetectionTask
from fovea.tasks.errors import UserError
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
