"""Single-label image classification."""

from fovea.tasks.classification.task import ClassificationTask

__all__ = ["ClassificationTask"]
