"""One encoder zoo for every task (segmentation_models_pytorch's `get_encoder`).

`ENCODERS` is the explicit list: torchvision resnet18/34/50 and mobilenet_v3_large, and a
tiny CNN for tests and small images on CPU. Every encoder maps an image [N, 3, H, W] to
five feature maps at strides 2, 4, 8, 16 and 32 and says their widths in `out_channels`;
each task takes the levels it needs (U-Net and FPN all five, the detector the last three).

Module names are torchvision's (`conv1`, `layer1`..., `features`), so a torchvision
classifier's state dict minus its classifier loads as is, and models registered before
this zoo existed keep loading (tests/tasks/test_compat.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from fovea.tasks.errors import UserError
from fovea.tasks.weights import load_classifier_body, torchvision_state_dict

Activation = Callable[[], nn.Module]


def _inplace(activation: type[nn.Module]) -> Activation:
    return lambda: activation(inplace=True)


RELU = _inplace(nn.ReLU)
SILU = _inplace(nn.SiLU)


def conv_bn_act(
    c_in: int,
    c_out: int,
    *,
    kernel: int = 3,
    stride: int = 1,
    activation: Activation = RELU,
) -> nn.Sequential:
    """Conv (no bias) -> BatchNorm -> activation; children 0, 1, 2 in every model."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        activation(),
    )


class ResNetEncoder(nn.Module):
    """torchvision ResNet without avgpool and fc."""

    def __init__(self, *, resnet: torchvision.models.ResNet) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = (
            resnet.conv1,
            resnet.bn1,
            resnet.relu,
            resnet.maxpool,
        )
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4
        expansion = 4 if isinstance(resnet.layer1[0], torchvision.models.resnet.Bottleneck) else 1
        self.out_channels = (64, *(c * expansion for c in (64, 128, 256, 512)))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s2 = self.relu(self.bn1(self.conv1(x)))  # [N, 64, H/2, W/2]
        s4 = self.layer1(self.maxpool(s2))  # [N, c4, H/4, W/4]
        s8 = self.layer2(s4)
        s16 = self.layer3(s8)
        s32 = self.layer4(s16)  # [N, c32, H/32, W/32]
        return [s2, s4, s8, s16, s32]


class MobileNetV3Encoder(nn.Module):
    """torchvision mobilenet_v3_large `features`, cut where the stride doubles."""

    STAGE_ENDS = (2, 4, 7, 13, 17)  # features[:2] ends at stride 2, [2:4] at 4, ...

    def __init__(self, *, mobilenet: torchvision.models.MobileNetV3) -> None:
        super().__init__()
        self.features = mobilenet.features
        self.out_channels = (16, 24, 40, 112, 960)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs, start = [], 0
        for end in self.STAGE_ENDS:
            for layer in self.features[start:end]:
                x = layer(x)
            outputs.append(x)
            start = end
        return outputs


class TinyEncoder(nn.Module):
    """Five stages of (3x3 stride-2 conv, 3x3 conv), BN + activation; ~0.2M parameters,
    for tests and small images on CPU, trained from scratch."""

    def __init__(
        self, *, widths: Sequence[int] = (16, 32, 48, 64, 96), activation: Activation = RELU
    ) -> None:
        super().__init__()
        stages, c_in = [], 3
        for width in widths:
            stages.append(
                nn.Sequential(
                    conv_bn_act(c_in, width, stride=2, activation=activation),
                    conv_bn_act(width, width, activation=activation),
                )
            )
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs


def pooled(levels: Sequence[torch.Tensor]) -> torch.Tensor:
    """Feature maps [B, c_i, h_i, w_i] -> one vector per image [B, sum c_i] (global
    average pooling): an image's embedding from the encoder's view of it."""
    return torch.cat([level.mean(dim=(2, 3)) for level in levels], dim=1)


@dataclass(frozen=True)
class Encoder:
    build: Callable[[Activation], nn.Module]  # randomly initialised; activation: tiny only
    torchvision_name: str | None  # for weights enums
    classifier_prefixes: tuple[str, ...] = ()  # torchvision keys that are not the encoder's


def _resnet(name: str) -> Encoder:
    return Encoder(
        build=lambda _: ResNetEncoder(resnet=torchvision.models.get_model(name, weights=None)),
        torchvision_name=name,
        classifier_prefixes=("fc.",),
    )


ENCODERS: dict[str, Encoder] = {
    "tiny": Encoder(
        build=lambda activation: TinyEncoder(activation=activation), torchvision_name=None
    ),
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "mobilenet_v3_large": Encoder(
        build=lambda _: MobileNetV3Encoder(
            mobilenet=torchvision.models.mobilenet_v3_large(weights=None)
        ),
        torchvision_name="mobilenet_v3_large",
        classifier_prefixes=("classifier.",),
    ),
}


def get_encoder_spec(name: str) -> tuple[str, Encoder]:
    """(name, spec) for `model.backbone`."""
    if name not in ENCODERS:
        raise UserError(f"unknown model.backbone {name!r}; valid: {', '.join(ENCODERS)}")
    return name, ENCODERS[name]


def check_encoder_model(
    arch: str,
    backbone: str | None,
    default_backbones: Mapping[str, str],
    *,
    num_classes: int,
    min_classes: int,
    task: str,
) -> tuple[str, Encoder]:
    """(backbone, spec) of an encoder-based model, or UserError naming the field that is
    wrong: an unknown arch or backbone, or fewer classes than the task needs.
    `default_backbones` lists the architectures, each with the backbone a preset gets when
    `backbone` is None."""
    if arch not in default_backbones:
        raise UserError(f"unknown model.arch {arch!r}; valid: {', '.join(default_backbones)}")
    backbone, spec = get_encoder_spec(backbone or default_backbones[arch])
    if num_classes < min_classes:
        raise UserError(f"{task} needs >= {min_classes} class(es), got {num_classes}")
    return backbone, spec


def get_encoder(
    name: str,
    *,
    weights: str | None = None,
    activation: Activation = RELU,
    model_name: str,
) -> nn.Module:
    """The encoder `name`, with a torchvision weights enum
    (`weights`, e.g. "ResNet18_Weights.IMAGENET1K_V1", from the local cache only) loaded
    into it. Weights files are the caller's: they may hold a whole task model.
    `activation` applies to the tiny encoder (torchvision encoders keep their own);
    `model_name` ("unet/resnet18") is for messages."""
    _, spec = get_encoder_spec(name)
    encoder = spec.build(activation)
    if weights is not None:
        state, path = torchvision_state_dict(
            torchvision_name=spec.torchvision_name, weights=weights, arch=model_name
        )
        load_classifier_body(
            encoder,
            state,
            classifier_prefixes=spec.classifier_prefixes,
            source=str(path),
            part="backbone",
        )
    return encoder
