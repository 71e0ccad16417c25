"""Segmentation metrics from one pixel confusion matrix (torchmetrics), and figures.

The confusion matrix is accumulated over every labelled validation pixel (pixels equal to
ignore_index are left out), so the metrics are dataset-level, as in the usual mIoU:
- "miou": mean over classes of IoU = TP / (TP + FP + FN); the task's main metric.
- "iou/<class>": per class.
- "dice": mean over classes of Dice = 2 TP / (2 TP + FP + FN).
- "pixel_acc": correctly labelled pixels / labelled pixels.
A class with no pixel in the targets and none predicted has no defined IoU or Dice: it is
left out of the means, and its "iou/<class>" key is absent.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

from fovea.tasks.plots import CORRECT_COLOR, WRONG_COLOR, bar_chart_png, image_grid_png

SAMPLE_COUNT = 8
OVERLAY_ALPHA = 0.5
IGNORED_COLOUR = (255, 255, 255)


class PixelConfusion:
    """Streaming pixel confusion matrix [true, predicted] over batches of label maps."""

    def __init__(self, *, num_classes: int, ignore_index: int) -> None:
        self.metric = MulticlassConfusionMatrix(
            num_classes=num_classes, ignore_index=ignore_index, validate_args=False
        )

    def update(self, predicted: torch.Tensor, targets: torch.Tensor) -> None:
        """predicted, targets: int64 [N, H, W] (on any device; counted on the CPU)."""
        self.metric.update(predicted.flatten().cpu(), targets.flatten().cpu())

    def compute(self) -> np.ndarray:
        return self.metric.compute().numpy().astype(np.int64)  # [C, C]


def segmentation_metrics(confusion: np.ndarray, *, class_names: Sequence[str]) -> dict[str, float]:
    matrix = confusion.astype(np.float64)
    tp = np.diag(matrix)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    defined = (tp + fp + fn) > 0
    iou = np.divide(tp, tp + fp + fn, out=np.zeros_like(tp), where=defined)
    dice = np.divide(2 * tp, 2 * tp + fp + fn, out=np.zeros_like(tp), where=defined)
    total = matrix.sum()
    metrics = {
        "miou": float(iou[defined].mean()) if defined.any() else 0.0,
        "dice": float(dice[defined].mean()) if defined.any() else 0.0,
        "pixel_acc": float(tp.sum() / total) if total > 0 else 0.0,
    }
    for name, value, ok in zip(class_names, iou.tolist(), defined.tolist(), strict=True):
        if ok:
            metrics[f"iou/{name}"] = value
    return metrics


def palette(num_classes: int) -> np.ndarray:
    """uint8 [C, 3] distinct colours; class 0 (usually background) is black."""
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for c in range(1, num_classes):
        hue = (c * 0.618033988749895) % 1.0  # golden-ratio hues stay apart for any C
        colours[c] = _hsv_to_rgb(hue, 0.85, 1.0)
    return colours


def overlay(
    image: np.ndarray, mask: np.ndarray, *, colours: np.ndarray, ignore_index: int
) -> np.ndarray:
    """uint8 [H, W, 3] image with class colours blended in (class 0 and ignored pixels:
    class 0 left as is, ignored pixels whitened)."""
    out = image.astype(np.float32)
    labelled = (mask != ignore_index) & (mask > 0)
    safe = np.where(mask == ignore_index, 0, mask)
    tint = colours[safe].astype(np.float32)
    out[labelled] = (1 - OVERLAY_ALPHA) * out[labelled] + OVERLAY_ALPHA * tint[labelled]
    ignored = mask == ignore_index
    out[ignored] = 0.5 * out[ignored] + 0.5 * np.array(IGNORED_COLOUR, dtype=np.float32)
    return out.clip(0, 255).round().astype(np.uint8)


def predictions_png(
    images: np.ndarray,
    predicted: np.ndarray,
    targets: np.ndarray,
    *,
    num_classes: int,
    ignore_index: int,
) -> bytes:
    """Per sample two tiles: "true" (target overlay) and "pred" (prediction overlay, titled
    with the sample's pixel accuracy). images uint8 [K, H, W, 3], masks int [K, H, W]."""
    colours = palette(num_classes)
    tiles, titles, tile_colours = [], [], []
    for image, pred, true in zip(images, predicted, targets, strict=True):
        labelled = true != ignore_index
        accuracy = float((pred[labelled] == true[labelled]).mean()) if labelled.any() else 1.0
        tiles += [
            overlay(image, true, colours=colours, ignore_index=ignore_index),
            overlay(image, pred, colours=colours, ignore_index=ignore_index),
        ]
        titles += ["true", f"pred (acc {accuracy:.2f})"]
        tile_colours += ["black", CORRECT_COLOR if accuracy >= 0.9 else WRONG_COLOR]
    return image_grid_png(np.stack(tiles), titles=titles, colors=tile_colours, columns=4)


def per_class_iou_png(metrics: dict[str, float], *, class_names: Sequence[str]) -> bytes:
    """Bars of IoU per class; a class with no defined IoU is shown as "n/a"."""
    return bar_chart_png(
        {name: metrics.get(f"iou/{name}", math.nan) for name in class_names},
        title=f"per-class IoU (mIoU {metrics['miou']:.3f})",
        xlabel="IoU",
    )


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(g * 255), round(b * 255)
