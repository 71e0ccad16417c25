"""Semantic segmentation: U-Net and FPN on torchvision encoders."""

from fovea.tasks.segmentation.task import SegmentationTask

__all__ = ["SegmentationTask"]
