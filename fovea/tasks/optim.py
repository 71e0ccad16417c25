"""The engine's numerical parts: optimizer groups, the LR schedule, weight EMA."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from fovea.tasks.base import TrainConfig
from fovea.tasks.finetune import backbone_parameter_ids

FINAL_LR_FRACTION = 0.01  # cosine ends at 1% of the peak LR, not 0: the last epochs still learn


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # no weight decay on norm weights and biases (1-d): decaying them only hurts
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": config.weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]
    scale = config.backbone_lr_scale
    if scale is not None and scale != 1.0:  # the backbone's own groups at lr * scale
        backbone = backbone_parameter_ids(model)
        groups = [
            {**group, "params": [p for p in group["params"] if (id(p) in backbone) == is_bb]}
            | ({"lr": config.lr * scale, "name": "backbone"} if is_bb else {"name": "head"})
            for is_bb in (False, True)  # the head first: param_groups[0] logs "lr"
            for group in groups
        ]
        groups = [group for group in groups if group["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """step -> multiplier of config.lr: linear warm-up, then cosine (or flat)."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    total = config.epochs * steps_per_epoch

    def factor(step: int) -> float:  # step = optimizer steps taken so far
        if step < warmup:
            return (step + 1) / warmup
        if config.scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return FINAL_LR_FRACTION + (1.0 - FINAL_LR_FRACTION) * cosine

    return factor


class WeightEma:
    """Exponential moving average of weights and buffers (BatchNorm statistics included).

    The decay ramps up as min(decay, (1 + n) / (10 + n)) after n updates, so short runs
    are not evaluated on weights that are still mostly the random initialisation.
    """

    def __init__(self, model: nn.Module, *, decay: float) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = model.state_dict()
        for name, value in self.module.state_dict().items():
            if value.dtype.is_floating_point:
                value.lerp_(live[name], 1.0 - decay)
            else:  # e.g. BatchNorm's num_batches_tracked
                value.copy_(live[name])

    def state_dict(self) -> dict[str, Any]:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
