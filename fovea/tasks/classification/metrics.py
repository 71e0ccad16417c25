"""Classification metrics (torchmetrics) and figures, from all validation logits at once.

Keys of the returned dict (all floats in [0, 1] except "loss"):
- "top1": accuracy; the task's main metric.
- "top5": top-5 accuracy, only when there are more than 5 classes (with 5 or fewer it
  is trivially 1.0, so it is left out rather than reported as a meaningless number).
- "precision/<class>", "recall/<class>", "f1/<class>": per class; a class never
  predicted has precision 0.
- "f1_macro": unweighted mean of the per-class F1.
- "roc_auc_macro": one-vs-rest ROC-AUC averaged over the classes that have both positive
  and negative validation samples (others have no defined AUC); absent if none has.
- "loss": plain cross-entropy (no label smoothing, so runs stay comparable).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch.nn import functional as F
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_auroc,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from fovea.tasks.plots import CORRECT_COLOR, WRONG_COLOR, image_grid_png

SAMPLE_GRID_SIZE = 16


def classification_metrics(
    logits: torch.Tensor, targets: torch.Tensor, *, class_names: list[str]
) -> tuple[dict[str, float], np.ndarray]:
    """logits [N, C] float, targets [N] -> (metrics, confusion matrix [C, C] (true, pred))."""
    num_classes = len(class_names)
    probabilities = logits.float().softmax(dim=1)
    common = {"num_classes": num_classes, "validate_args": False}
    metrics = {
        "top1": multiclass_accuracy(probabilities, targets, average="micro", **common).item(),
        "loss": F.cross_entropy(logits.float(), targets).item(),
    }
    if num_classes > 5:
        metrics["top5"] = multiclass_accuracy(
            probabilities, targets, top_k=5, average="micro", **common
        ).item()
    per_class = {
        "precision": multiclass_precision(probabilities, targets, average=None, **common),
        "recall": multiclass_recall(probabilities, targets, average=None, **common),
        "f1": multiclass_f1_score(probabilities, targets, average=None, **common),
    }
    for name, values in per_class.items():
        for class_name, value in zip(class_names, values.tolist(), strict=True):
            metrics[f"{name}/{class_name}"] = value
    metrics["f1_macro"] = per_class["f1"].mean().item()

    counts = torch.bincount(targets, minlength=num_classes)
    defined = (counts > 0) & (counts < len(targets))  # AUC needs positives and negatives
    if defined.any():
        with warnings.catch_warnings():  # torchmetrics warns about the undefined classes
            warnings.simplefilter("ignore")
            auc = multiclass_auroc(probabilities, targets, average=None, **common)
        metrics["roc_auc_macro"] = auc[defined].mean().item()

    confusion = multiclass_confusion_matrix(probabilities, targets, **common)
    return metrics, confusion.numpy()


def sample_predictions_png(
    images: np.ndarray, predicted: list[int], actual: list[int], *, class_names: list[str]
) -> bytes:
    """uint8 [N, H, W, 3] images titled "pred / true", green when right, red when wrong."""
    titles = [
        f"pred {class_names[p]} / true {class_names[t]}"
        for p, t in zip(predicted, actual, strict=True)
    ]
    colors = [
        CORRECT_COLOR if p == t else WRONG_COLOR for p, t in zip(predicted, actual, strict=True)
    ]
    return image_grid_png(images, titles=titles, colors=colors)
