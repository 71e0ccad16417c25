"""Detection metrics (torchmetrics MeanAveragePrecision, pycocotools backend) and figures.

Keys of the returned dict (floats in [0, 1]):
- "map": COCO mAP@[.5:.95] over classes; the task's main metric.
- "map_50", "map_75": mAP at IoU 0.5 and 0.75.
- "mar_100": mean average recall with at most 100 detections per image.
- "ap/<class>": per-class mAP@[.5:.95], only for classes with validation boxes (others
  have no defined AP and are left out rather than reported as a number).
A validation set without any box has no defined mAP; its metrics are reported as 0.0.

Boxes are compared in the letterboxed squares the model sees; a letterbox is a uniform
scale, so IoUs and hence these numbers equal those in original image pixels (COCO's
small/medium/large areas would not, which is why they are not reported).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image, ImageDraw
from torchmetrics.detection import MeanAveragePrecision

from fovea.tasks.plots import CORRECT_COLOR, WRONG_COLOR, image_grid_png

SAMPLE_COUNT = 8
DRAW_SCORE_THRESHOLD = 0.3  # predictions drawn on the sample figure
IOU_THRESHOLDS = [round(0.5 + 0.05 * i, 2) for i in range(10)]


def new_metric() -> MeanAveragePrecision:
    return MeanAveragePrecision(
        box_format="xyxy",
        iou_type="bbox",
        class_metrics=True,
        extended_summary=True,  # precision [T, R, K, A, M] for the PR curves
        backend="pycocotools",
    )


def detection_metrics(
    metric: MeanAveragePrecision, *, class_names: list[str]
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(metrics, PR curves: class name -> precision [101] at IoU 0.5, all areas, 100 dets)."""
    with warnings.catch_warnings():  # pycocotools prints; torchmetrics warns on empty classes
        warnings.simplefilter("ignore")
        result = metric.compute()

    def value(key: str) -> float:
        number = float(result[key])
        return number if number >= 0 else 0.0  # -1: undefined (no true boxes)

    metrics = {
        "map": value("map"),
        "map_50": value("map_50"),
        "map_75": value("map_75"),
        "mar_100": value("mar_100"),
    }
    classes = torch.atleast_1d(result["classes"]).tolist()
    per_class = torch.atleast_1d(result["map_per_class"]).tolist()
    curves: dict[str, np.ndarray] = {}
    precision = result.get("precision")  # [T, R, K, A, M], K over `classes`, -1 undefined
    for k, (class_id, ap) in enumerate(zip(classes, per_class, strict=True)):
        if ap < 0 or not 0 <= class_id < len(class_names):
            continue
        metrics[f"ap/{class_names[class_id]}"] = float(ap)
        if isinstance(precision, torch.Tensor) and precision.ndim == 5:
            curves[class_names[class_id]] = precision[0, :, k, 0, -1].numpy()
    return metrics, curves


def pr_curves_png(curves: dict[str, np.ndarray]) -> bytes:
    """Precision against recall at IoU 0.5, one line per class (at most 20, by AP)."""
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    recall = np.linspace(0, 1, 101)
    ranked = sorted(curves.items(), key=lambda item: -float(np.clip(item[1], 0, 1).mean()))
    for name, precision in ranked[:20]:
        shown = np.where(precision < 0, np.nan, precision)
        ax.plot(recall, shown, label=f"{name} (AP50 {np.clip(precision, 0, 1).mean():.2f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("precision-recall per class, IoU 0.5")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    return _png(fig)


def draw_boxes(
    image: np.ndarray,
    *,
    true_boxes: np.ndarray,
    true_labels: Sequence[int],
    boxes: np.ndarray,
    scores: Sequence[float],
    labels: Sequence[int],
    class_names: list[str],
) -> np.ndarray:
    """uint8 [H, W, 3] with true boxes in green and predictions (score >=
    DRAW_SCORE_THRESHOLD) in red, each with its class name."""
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    for box, label in zip(true_boxes.tolist(), true_labels, strict=True):
        draw.rectangle(box, outline=CORRECT_COLOR, width=1)
        draw.text((box[0] + 1, box[1]), class_names[label], fill=CORRECT_COLOR)
    for box, score, label in zip(boxes.tolist(), scores, labels, strict=True):
        if score >= DRAW_SCORE_THRESHOLD:
            draw.rectangle(box, outline=WRONG_COLOR, width=1)
            draw.text(
                (box[0] + 1, box[3] - 10), f"{class_names[label]} {score:.2f}", fill=WRONG_COLOR
            )
    return np.asarray(canvas)


def predictions_png(images: list[np.ndarray]) -> bytes:
    """Drawn samples in a grid; titles explain the colours."""
    grid = np.stack(images)
    titles = ["green: true, red: predicted"] * len(images)
    return image_grid_png(grid, titles=titles, colors=["black"] * len(images))


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
