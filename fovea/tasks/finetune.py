"""Fine-tuning recipes: which part of a model is its backbone, freezing it for the first
epochs, and its discriminative learning rate.

- `train.freeze_backbone_epochs` = k: epochs 1..k train the head alone (the backbone's
  parameters take no gradient, and its BatchNorm layers run in eval mode, so their running
  statistics, learnt on the pretraining data, are kept rather than re-estimated from a few
  small batches of a new head's noise); from epoch k + 1 everything trains.
- `train.backbone_lr_scale` = s: the backbone's parameters train at lr * s (their own
  optimizer groups; the schedule scales every group alike), the rest at lr.
- Left out (None), both take FINE_TUNE_DEFAULTS when the job starts from weights and
  SCRATCH_DEFAULTS otherwise (fovea/tasks/catalog.py); `with_defaults` says which it filled.

The backbone is the detector's `backbone`, the segmenter's `encoder`, and of a classifier
every top-level child but its head (`fc`, `classifier` or `head`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from fovea.tasks.base import TrainConfig, UserError
from fovea.tasks.catalog import FINE_TUNE_DEFAULTS, SCRATCH_DEFAULTS

BACKBONE_ATTRS = ("backbone", "encoder")  # the detector's, the segmenter's
HEAD_CHILDREN = ("fc", "classifier", "head")  # torchvision classifiers' heads, SmallCNN's


def with_defaults(
    config: TrainConfig, *, pretrained: bool, workers: int = 1
) -> tuple[TrainConfig, dict[str, float]]:
    """`config` with its unset fine-tuning fields filled, and what was filled. Freezing
    leaves at least one epoch to train everything, and is off under DDP (a parameter's
    requires_grad may not change inside a DistributedDataParallel model)."""
    defaults = dict(FINE_TUNE_DEFAULTS if pretrained else SCRATCH_DEFAULTS)
    defaults["freeze_backbone_epochs"] = (
        0 if workers > 1 else min(int(defaults["freeze_backbone_epochs"]), config.epochs - 1)
    )
    filled = {name: value for name, value in defaults.items() if getattr(config, name) is None}
    return dataclasses.replace(config, **filled), filled


def backbone_modules(model: nn.Module) -> list[nn.Module]:
    """The modules that make up `model`'s backbone (empty: a model without one)."""
    for attr in BACKBONE_ATTRS:
        module = getattr(model, attr, None)
        if isinstance(module, nn.Module):
            return [module]
    children = dict(model.named_children())
    if not any(name in children for name in HEAD_CHILDREN):
        return []
    return [child for name, child in children.items() if name not in HEAD_CHILDREN]


def backbone_parameter_ids(model: nn.Module) -> set[int]:
    return {id(p) for module in backbone_modules(model) for p in module.parameters()}


def is_frozen(config: TrainConfig, epoch: int) -> bool:
    return epoch <= (config.freeze_backbone_epochs or 0)


def set_backbone_frozen(model: nn.Module, *, frozen: bool) -> None:
    """Freeze (or thaw) the backbone of a model already in train mode: no gradients, and
    BatchNorm (and dropout) in eval mode, so the running statistics stay as loaded."""
    if frozen and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        raise UserError("train.freeze_backbone_epochs needs a single worker (resources.workers 1)")
    for module in backbone_modules(model):
        module.requires_grad_(not frozen)
        if frozen:
            module.eval()
