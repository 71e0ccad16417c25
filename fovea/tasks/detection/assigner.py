"""Task-aligned label assignment (TOOD, Feng et al. 2021), vectorised over the batch.

For every ground-truth box, the candidate points are those whose centre lies inside the
box, plus the one cell per level that holds the box's centre (so a box smaller than a cell
still gets candidates). Each candidate is scored by the alignment metric

    t = s ** alpha * IoU ** beta,

s being the predicted probability of the box's class at that point and IoU the overlap of
the point's predicted box with the true one; the top_k candidates by t become positives. A
point claimed by several boxes keeps the one it overlaps most. Classification targets are
soft: t normalised per box so that its best point's target equals that box's best IoU.

Why task-aligned rather than SimOTA: both are dynamic (they follow the model's own
predictions, which fixed centre/size rules like FCOS's do not), but SimOTA solves a
per-image cost matrix with a dynamic k per box (a Python loop over images, and a top-k of
IoUs per box), while this is a handful of batched tensor ops over [B, M, P], cheap on the
2-core CPUs this platform often trains on and exportable as is. The soft, IoU-aware
classification targets also make scores rank boxes by localisation quality, which is what
mAP rewards and what NMS needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EPS = 1e-9


@dataclass
class Assignment:
    foreground: torch.Tensor  # [B, P] bool
    labels: torch.Tensor  # [B, P] int64 class id (meaningful where foreground)
    boxes: torch.Tensor  # [B, P, 4] xyxy pixels of the assigned true box
    scores: torch.Tensor  # [B, P, C] soft classification targets in [0, 1]


def pairwise_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Broadcasting IoU of xyxy boxes [..., 4] and [..., 4] -> [...]."""
    top_left = torch.maximum(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.minimum(boxes1[..., 2:], boxes2[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0).prod(-1)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0).prod(-1)
    return inter / (area1 + area2 - inter + EPS)


@torch.no_grad()
def task_aligned_assign(
    *,
    pred_scores: torch.Tensor,  # [B, P, C] probabilities
    pred_boxes: torch.Tensor,  # [B, P, 4] xyxy pixels
    points: torch.Tensor,  # [P, 2] cell centres, pixels
    strides: torch.Tensor,  # [P]
    gt_boxes: torch.Tensor,  # [B, M, 4] xyxy pixels, padded
    gt_labels: torch.Tensor,  # [B, M] int64, padded with -1
    top_k: int = 10,
    alpha: float = 1.0,
    beta: float = 6.0,
) -> Assignment:
    batch, num_points, num_classes = pred_scores.shape
    num_gt = gt_boxes.shape[1]
    device = pred_scores.device
    if num_gt == 0:
        return Assignment(
            foreground=torch.zeros((batch, num_points), dtype=torch.bool, device=device),
            labels=torch.zeros((batch, num_points), dtype=torch.long, device=device),
            boxes=torch.zeros((batch, num_points, 4), device=device),
            scores=torch.zeros_like(pred_scores),
        )
    valid = gt_labels >= 0  # [B, M]
    x, y = points[:, 0], points[:, 1]  # [P]
    x1, y1, x2, y2 = (gt_boxes[..., i, None] for i in range(4))  # each [B, M, 1]
    inside = torch.minimum(torch.minimum(x - x1, y - y1), torch.minimum(x2 - x, y2 - y)) > EPS
    half = strides / 2  # [P]
    centre_cell = ((x - (x1 + x2) / 2).abs() <= half) & ((y - (y1 + y2) / 2).abs() <= half)
    candidates = (inside | centre_cell) & valid[..., None]  # [B, M, P]

    iou = pairwise_iou(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :])  # [B, M, P]
    class_index = gt_labels.clamp(min=0)[..., None].expand(-1, -1, num_points)  # [B, M, P]
    score = pred_scores.transpose(1, 2).gather(1, class_index)  # [B, M, P]
    align = score.pow(alpha) * iou.pow(beta) * candidates

    k = min(top_k, num_points)
    # candidates rank first even at zero alignment (no overlap yet), so every box gets some
    top = torch.where(candidates, align, -1.0).topk(k, dim=-1).indices  # [B, M, k]
    chosen = torch.zeros_like(candidates).scatter_(-1, top, True) & candidates  # [B, M, P]

    # a point chosen by several boxes keeps the one its prediction overlaps most
    foreground = chosen.any(dim=1)  # [B, P]
    gt_index = torch.where(chosen, iou, torch.full_like(iou, -1.0)).argmax(dim=1)  # [B, P]
    positive = (
        torch.nn.functional.one_hot(gt_index, num_gt).transpose(1, 2).bool()
        & foreground[:, None, :]
    )  # [B, M, P]

    labels = gt_labels.gather(1, gt_index)  # [B, P]
    boxes = gt_boxes.gather(1, gt_index[..., None].expand(-1, -1, 4))  # [B, P, 4]
    align = align * positive
    best_align = align.amax(dim=-1, keepdim=True)  # [B, M, 1]
    best_iou = (iou * positive).amax(dim=-1, keepdim=True)  # [B, M, 1]
    # no additive epsilon: alignments are often ~1e-8 (IoU^6), where one would bias them
    ratio = torch.where(best_align > 0, best_iou / best_align.clamp(min=1e-30), 0.0)
    quality = (align * ratio).amax(dim=1)  # [B, P]
    one_hot = torch.nn.functional.one_hot(labels.clamp(min=0), num_classes).to(pred_scores.dtype)
    scores = one_hot * (quality * foreground)[..., None]  # [B, P, C]
    return Assignment(foreground=foreground, labels=labels, boxes=boxes, scores=scores)
