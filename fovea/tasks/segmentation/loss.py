"""Segmentation loss: cross-entropy + soft Dice, weighted, both ignoring unlabeled pixels."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.nn import functional as F

from fovea.tasks.base import UserError, merge_loss_weights

DEFAULT_WEIGHTS = {"ce": 1.0, "dice": 1.0}
DICE_SMOOTH = 1.0  # keeps the ratio defined and smooth for classes with few pixels


class SegmentationLoss(nn.Module):
    """logits [N, C, H, W], targets [N, H, W] class indices (ignore_index: unlabeled) ->
    {"loss": weighted total, "loss_ce": cross-entropy, "loss_dice": 1 - mean Dice}.

    The parts come unweighted, so runs with different weights stay comparable. Dice is
    computed over the whole batch per class and averaged over the classes present in the
    targets (a class absent from the batch would otherwise score a meaningless 0 or 1).
    """

    def __init__(self, *, ignore_index: int = 255, weights: Mapping[str, float] | None = None):
        super().__init__()
        self.ignore_index = ignore_index
        self.weights = check_loss_weights(weights)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = logits.float()  # fp16 autocast logits would overflow the log-sum-exp
        valid = targets != self.ignore_index  # [N, H, W]
        labelled = valid.sum()
        # summed then divided: a batch without labelled pixels gives 0, not NaN
        ce = F.cross_entropy(logits, targets, ignore_index=self.ignore_index, reduction="sum")
        ce = ce / labelled.clamp(min=1)
        dice = soft_dice_loss(logits, targets, valid=valid)
        total = self.weights["ce"] * ce + self.weights["dice"] * dice
        return {"loss": total, "loss_ce": ce, "loss_dice": dice}


def soft_dice_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, valid: torch.Tensor
) -> torch.Tensor:
    """1 - mean over present classes of (2 |P∩T| + s) / (|P| + |T| + s), P = softmax."""
    num_classes = logits.shape[1]
    probabilities = logits.softmax(dim=1) * valid.unsqueeze(1)  # [N, C, H, W], 0 where ignored
    safe = torch.where(valid, targets, torch.zeros_like(targets))
    one_hot = F.one_hot(safe, num_classes).permute(0, 3, 1, 2) * valid.unsqueeze(1)
    one_hot = one_hot.to(probabilities.dtype)
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)  # [C]
    cardinality = probabilities.sum(dims) + one_hot.sum(dims)
    dice = (2 * intersection + DICE_SMOOTH) / (cardinality + DICE_SMOOTH)
    present = one_hot.sum(dims) > 0
    if not present.any():
        return logits.sum() * 0.0  # keeps the graph; nothing labelled in this batch
    return 1.0 - dice[present].mean()


def check_loss_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """train.loss_weights -> {"ce": w, "dice": w}; missing names keep their default 1."""
    merged = merge_loss_weights(weights, defaults=DEFAULT_WEIGHTS, task="segmentation")
    if not any(merged.values()):
        raise UserError("train.loss_weights: at least one of ce and dice must be > 0")
    return merged
