"""Fovea: a vision training platform (classification, detection, segmentation on Ray + MLflow)."""

__version__ = "0.1.0"
