"""Object detection with boxes: a YOLO-style anchor-free detector."""

from fovea.tasks.detection.task import DetectionTask

__all__ = ["DetectionTask"]
