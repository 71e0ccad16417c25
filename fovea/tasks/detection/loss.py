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

from fovea.tasks.base import merge_loss_weights
from fovea.tasks.detection.assigner import Assignment

DEFAULT_WEIGHTS = {"cls": 1.0, "box": 2.0}  # TOOD's balance of BCE and GIoU


def check_loss_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """TrainConfig.loss_weights for detection: keys "cls" and "box", each >= 0."""
    return merge_loss_weights(weights, defaults=DEFAULT_WEIGHTS, task="detection")


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
