"""Classification loss: cross-entropy, optionally label-smoothed, as a named dict."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def classification_loss(
    logits: torch.Tensor, targets: torch.Tensor, *, label_smoothing: float = 0.0
) -> dict[str, torch.Tensor]:
    """logits [N, C], targets [N] class indices -> {"loss": scalar}."""
    # in float32 so fp16 autocast logits do not overflow the log-sum-exp
    loss = F.cross_entropy(logits.float(), targets, label_smoothing=label_smoothing)
    return {"loss": loss}
