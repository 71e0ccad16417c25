"""Classification architectures: torchvision backbones with a new head, plus a small CNN.

`ARCHITECTURES` is the explicit list. Weights (ModelConfig.weights) are either a
torchvision enum name, loaded only from the local torch hub cache (workers are often
offline, and a silent multi-minute download is worse than a clear error), or a local
.pt/.pth/.safetensors file, loaded without unpickling code and with the classifier head
skipped when its shape differs, so fine-tuning on a new number of classes works.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from fovea.tasks.backbones import conv_bn_act
from fovea.tasks.errors import UserError
from fovea.tasks.weights import (
    is_weights_file,
    load_with_fresh_head,
    read_weights_file,
    torchvision_state_dict,
)


class SmallCNN(nn.Module):
    """Five 3x3 conv layers, two stride-2 downsamplings, global pooling: for 16-64 px inputs.

    With width 24: 0.16M parameters and ~17 MMACs at 32x32, cheap enough to train on a few
    CPU cores in tests and demos; any input size works thanks to the global pooling.
    """

    def __init__(self, *, num_classes: int, width: int = 24, dropout: float = 0.1) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn_act(3, w),  # [N, w, H, W]
            conv_bn_act(w, 2 * w, stride=2),  # [N, 2w, H/2, W/2]
            conv_bn_act(2 * w, 2 * w),
            conv_bn_act(2 * w, 4 * w, stride=2),  # [N, 4w, H/4, W/4]
            conv_bn_act(4 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)  # [N, 4w, H/4, W/4]
        return self.head(self.pool(features))  # [N, num_classes] logits


@dataclass(frozen=True)
class Arch:
    build: Callable[[], nn.Module]  # the model with its original head
    head: str  # attribute path of the final nn.Linear, e.g. "fc" or "classifier.3"
    torchvision_name: str | None = None  # for resolving weights enums


def _tv(name: str, head: str) -> Arch:
    return Arch(lambda: torchvision.models.get_model(name, weights=None), head, name)


ARCHITECTURES: dict[str, Arch] = {
    "smallcnn": Arch(lambda: SmallCNN(num_classes=10), "head.2"),
    "resnet18": _tv("resnet18", "fc"),
    "resnet34": _tv("resnet34", "fc"),
    "resnet50": _tv("resnet50", "fc"),
    "mobilenet_v3_small": _tv("mobilenet_v3_small", "classifier.3"),
    "mobilenet_v3_large": _tv("mobilenet_v3_large", "classifier.3"),
    "efficientnet_b0": _tv("efficientnet_b0", "classifier.1"),
    "convnext_tiny": _tv("convnext_tiny", "classifier.2"),
}


def build_classifier(*, arch: str, num_classes: int, weights: str | None = None) -> nn.Module:
    """The model for `arch` with a `num_classes` head, in training mode."""
    spec = get_arch(arch)
    model = spec.build()
    if weights is not None and not is_weights_file(weights):
        # torchvision weights fit the original (ImageNet) head: load before replacing it
        state, path = torchvision_state_dict(
            torchvision_name=spec.torchvision_name, weights=weights, arch=arch
        )
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"cached weights {path} do not fit {arch}: {exc}") from exc
    old_head = model.get_submodule(spec.head)
    if not isinstance(old_head, nn.Linear):
        raise TypeError(f"{arch}: {spec.head} is {type(old_head).__name__}, not nn.Linear")
    model.set_submodule(spec.head, nn.Linear(old_head.in_features, num_classes))
    if weights is not None and is_weights_file(weights):
        _load_file_weights(model, spec, path=Path(weights), arch=arch)
    return model.train()


def get_arch(arch: str) -> Arch:
    if arch not in ARCHITECTURES:
        raise UserError(f"unknown model.arch {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def _load_file_weights(model: nn.Module, spec: Arch, *, path: Path, arch: str) -> None:
    """Load a local weights file; only the head may be missing or differently shaped."""
    load_with_fresh_head(
        model,
        read_weights_file(path),
        head_prefix=spec.head + ".",
        source=path,
        name=f"model.arch {arch}",
    )
