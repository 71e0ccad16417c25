"""Detection losses: IoU-aware BCE for classes, GIoU for boxes, as a named dict.

Both are normalised by the sum of the soft classification targets (the assigner's
alignment-weighted quality), so an image with many objects does not outweigh one with few
and the scale does not depend on the number of cells (image size).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch.nn import functional as F
from torchvision.ops import generalized_box_iou_loss

from fovea.tasks.base import UserError
from fovea.tasks.detection.assigner import Assignment

DEFAULT_WEIGHTS = {"cls": 1.0, "box": 2.0}  # TOOD's balance of BCE and GIoU


def check_loss_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """TrainConfig.loss_weights for detection: keys "cls" and "box", each >= 0."""
    merged = dict(DEFAULT_WEIGHTS)
    for name, value in (weights or {}).items():
        if name not in DEFAULT_WEIGHTS:
            raise UserError(
                f"train.loss_weights: unknown detection loss {name!r}; "
                f"valid: {', '.join(DEFAULT_WEIGHTS)}"
            )
        if not value >= 0:
            raise UserError(f"train.loss_weights.{name} must be >= 0, got {value}")
        merged[name] = float(value)
    return merged


def detection_loss(
    *,
    cls_logits: torch.Tensor,  # [B, P, C]
    pred_boxes: torch.Tensor,  # [B, P, 4] xyxy pixels
    assignment: Assignment,
    weights: Mapping[str, float],
) -> dict[str, torch.Tensor]:
    # float32: fp16 autocast logits would overflow the BCE's exp
    cls_logits, pred_boxes = cls_logits.float(), pred_boxes.float()
    normaliser = assignment.scores.sum().clamp(min=1.0)
    loss_cls = (
        F.binary_cross_entropy_with_logits(cls_logits, assignment.scores, reduction="sum")
        / normaliser
    )
    foreground = assignment.foreground
    if foreground.any():
        box_weight = assignment.scores.sum(dim=-1)[foreground]  # [F]
        giou = generalized_box_iou_loss(
            pred_boxes[foreground], assignment.boxes[foreground], reduction="none"
        )
        loss_box = (giou * box_weight).sum() / normaliser
    else:  # keeps the graph (and DDP's gradient buckets) identical on empty batches
        loss_box = pred_boxes.sum() * 0.0
    total = weights["cls"] * loss_cls + weights["box"] * loss_box
    return {"loss": total, "loss_cls": loss_cls.detach(), "loss_box": loss_box.detach()}
