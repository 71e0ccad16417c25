"""The detector: a backbone, a PAN neck and a decoupled head, each its own module.

`ARCHITECTURES` (size presets yolo_n / yolo_s / yolo_m) and `BACKBONES` (torchvision
resnet18/34/50, mobilenet_v3_large, and a tiny CNN for tests and small images on CPU) are
the explicit lists. Every backbone returns three feature maps at strides 8, 16 and 32.

- Neck (PAN, Liu et al. 2018): 1x1 laterals to the preset's width, a top-down path
  (upsample x2, concatenate, conv block) then a bottom-up path (3x3 stride-2 conv,
  concatenate, conv block), so every level sees both fine detail and coarse context.
- Head (head.py): per level, separate classification and box branches (decoupled, as in
  YOLOX), anchor-free: each feature-map cell predicts class logits and its distances to
  the four box sides.

Presets scale the neck and head by a width multiplier (channels = 256 x width: 64, 128,
192) and a depth multiplier (residual blocks per fusion = ceil(3 x depth): 1, 1, 3; head
branches get one 3x3 conv fewer, at least one); the backbone is chosen separately
(ModelConfig.backbone, default resnet18; "tiny" for tests and small images on CPU).

In training mode `forward(images, targets)` returns named losses; in eval mode a list of
{"boxes" [K, 4] xyxy in pixels of the input image, "scores" [K], "labels" [K]} per image.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from fovea.tasks.base import UserError
from fovea.tasks.detection.head import DetectionHead
from fovea.tasks.weights import (
    is_weights_file,
    load_classifier_body,
    load_with_fresh_head,
    read_weights_file,
    torchvision_state_dict,
)

DEFAULT_BACKBONE = "resnet18"
STRIDES = (8, 16, 32)
HEAD_PREFIX = "head."


@dataclass(frozen=True)
class Preset:
    width: float  # neck/head channels = round(256 * width)
    depth: float  # blocks per neck fusion = ceil(3 * depth); 3x3 convs per head branch one less


ARCHITECTURES: dict[str, Preset] = {
    "yolo_n": Preset(width=0.25, depth=0.33),
    "yolo_s": Preset(width=0.5, depth=0.33),
    "yolo_m": Preset(width=0.75, depth=0.67),
}


def conv_bn_act(c_in: int, c_out: int, *, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.SiLU(inplace=True),
    )


# ---- backbones: image -> three feature maps at strides 8, 16, 32 -----------------------------


class ResNetBackbone(nn.Module):
    """torchvision ResNet minus avgpool/fc, with torchvision's module names (its ImageNet
    state dict minus fc.* loads as is)."""

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
        self.out_channels = (128 * expansion, 256 * expansion, 512 * expansion)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))  # [N, c, H/4, W/4]
        s8 = self.layer2(x)
        s16 = self.layer3(s8)
        s32 = self.layer4(s16)  # [N, c32, H/32, W/32]
        return [s8, s16, s32]


class MobileNetV3Backbone(nn.Module):
    """torchvision mobilenet_v3_large `features`, cut where the stride doubles."""

    STAGE_ENDS = (7, 13, 17)  # features[:7] ends at stride 8, [7:13] at 16, [13:17] at 32

    def __init__(self, *, mobilenet: torchvision.models.MobileNetV3) -> None:
        super().__init__()
        self.features = mobilenet.features
        self.out_channels = (40, 112, 960)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs, start = [], 0
        for end in self.STAGE_ENDS:
            for layer in self.features[start:end]:
                x = layer(x)
            outputs.append(x)
            start = end
        return outputs


class TinyBackbone(nn.Module):
    """Five stride-2 stages of (3x3 conv stride 2, 3x3 conv), BN + SiLU; ~0.2M parameters.
    For tests and small images on CPU, trained from scratch."""

    def __init__(self, *, widths: Sequence[int] = (16, 32, 48, 64, 96)) -> None:
        super().__init__()
        stages, c_in = [], 3
        for width in widths:
            stages.append(
                nn.Sequential(conv_bn_act(c_in, width, stride=2), conv_bn_act(width, width))
            )
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.out_channels = tuple(widths[2:])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs[2:]  # strides 8, 16, 32


@dataclass(frozen=True)
class Backbone:
    build: Callable[[], nn.Module]  # randomly initialised
    torchvision_name: str | None  # for weights enums
    classifier_prefixes: tuple[str, ...] = ()  # torchvision keys that are not the backbone's


def _resnet(name: str) -> Backbone:
    return Backbone(
        build=lambda: ResNetBackbone(resnet=torchvision.models.get_model(name, weights=None)),
        torchvision_name=name,
        classifier_prefixes=("fc.",),
    )


BACKBONES: dict[str, Backbone] = {
    "tiny": Backbone(build=TinyBackbone, torchvision_name=None),
    "resnet18": _resnet("resnet18"),
    "resnet34": _resnet("resnet34"),
    "resnet50": _resnet("resnet50"),
    "mobilenet_v3_large": Backbone(
        build=lambda: MobileNetV3Backbone(
            mobilenet=torchvision.models.mobilenet_v3_large(weights=None)
        ),
        torchvision_name="mobilenet_v3_large",
        classifier_prefixes=("classifier.",),
    ),
}


# ---- neck: three backbone maps -> three maps of one width -----------------------------------


class ConvBlock(nn.Module):
    """1x1 conv to `c_out`, then `depth` residual 3x3 convs: the neck's fusion unit."""

    def __init__(self, *, c_in: int, c_out: int, depth: int) -> None:
        super().__init__()
        self.reduce = conv_bn_act(c_in, c_out, kernel=1)
        self.blocks = nn.ModuleList(conv_bn_act(c_out, c_out) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        for block in self.blocks:
            x = x + block(x)
        return x


class PANNeck(nn.Module):
    def __init__(self, *, in_channels: Sequence[int], channels: int, depth: int) -> None:
        super().__init__()
        c = channels
        self.laterals = nn.ModuleList(conv_bn_act(ci, c, kernel=1) for ci in in_channels)
        self.top_down = nn.ModuleList(ConvBlock(c_in=2 * c, c_out=c, depth=depth) for _ in range(2))
        self.downsample = nn.ModuleList(conv_bn_act(c, c, stride=2) for _ in range(2))
        self.bottom_up = nn.ModuleList(
            ConvBlock(c_in=2 * c, c_out=c, depth=depth) for _ in range(2)
        )
        self.out_channels = c

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        p3, p4, p5 = (lateral(f) for lateral, f in zip(self.laterals, features, strict=True))
        # top-down: [N, c, H/32] -> H/16 -> H/8
        p4 = self.top_down[0](torch.cat([p4, F.interpolate(p5, size=p4.shape[-2:])], dim=1))
        p3 = self.top_down[1](torch.cat([p3, F.interpolate(p4, size=p3.shape[-2:])], dim=1))
        # bottom-up: H/8 -> H/16 -> H/32
        n4 = self.bottom_up[0](torch.cat([p4, self.downsample[0](p3)], dim=1))
        n5 = self.bottom_up[1](torch.cat([p5, self.downsample[1](n4)], dim=1))
        return [p3, n4, n5]


class Detector(nn.Module):
    """backbone -> neck -> head. Inputs: normalised float [N, 3, H, W], H and W multiples
    of 32 (the letterboxed squares of data.py; predict pads others)."""

    def __init__(self, *, backbone: nn.Module, neck: PANNeck, head: DetectionHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.head = head

    def forward(
        self, images: torch.Tensor, targets: list[dict[str, torch.Tensor]] | None = None
    ) -> dict[str, torch.Tensor] | list[dict[str, torch.Tensor]]:
        if not self.training:
            return self.detect(images)
        if targets is None:
            raise ValueError("a Detector in training mode needs targets")
        features = self.backbone(images)
        pyramid = self.neck(features)
        outputs = self.head(pyramid)  # {"cls_logits" [N, P, C], "box_regression" [N, P, 4]}
        return self.head.compute_loss(outputs, targets, image_size=images.shape[-2:])

    def detect(
        self, images: torch.Tensor, *, score_threshold: float | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Per image {"boxes" [K, 4] xyxy pixels, "scores" [K], "labels" [K]}, after NMS;
        `score_threshold` None: the head's (low, for mAP)."""
        outputs = self.head(self.neck(self.backbone(images)))
        return self.head.postprocess(
            outputs, image_size=images.shape[-2:], score_threshold=score_threshold
        )

    def decoded(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Before NMS, for export: boxes [N, P, 4] xyxy pixels and scores [N, P, C] in [0, 1]."""
        outputs = self.head(self.neck(self.backbone(images)))
        return self.head.decode(outputs, image_size=images.shape[-2:])


class DecodedDetector(nn.Module):
    """Detector -> (boxes [N, P, 4] xyxy pixels, scores [N, P, C]) before NMS: the graph
    that ONNX export writes (tasks/export.py through DetectionTask.onnx_graph). NMS stays
    out: ONNX's NonMaxSuppression is per class and awkward to batch, and runtimes usually
    bring their own; `torchvision.ops.batched_nms` on these outputs reproduces detect()."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector.decoded(images)


def build_detector(
    *,
    arch: str,
    backbone: str | None,
    num_classes: int,
    weights: str | None = None,
    loss_weights: dict[str, float] | None = None,
) -> Detector:
    """The model in training mode; UserError for an unknown arch, backbone or bad weights."""
    if arch not in ARCHITECTURES:
        raise UserError(f"unknown model.arch {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    backbone = backbone or DEFAULT_BACKBONE
    if backbone not in BACKBONES:
        raise UserError(f"unknown model.backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
    if num_classes < 1:
        raise UserError(f"detection needs >= 1 class, got {num_classes}")
    preset, spec = ARCHITECTURES[arch], BACKBONES[backbone]
    channels = round(256 * preset.width)
    depth = max(1, math.ceil(3 * preset.depth))
    body = spec.build()
    if weights is not None and not is_weights_file(weights):
        state, path = torchvision_state_dict(
            torchvision_name=spec.torchvision_name, weights=weights, arch=f"{arch}/{backbone}"
        )
        load_classifier_body(
            body,
            state,
            classifier_prefixes=spec.classifier_prefixes,
            source=str(path),
            part="backbone",
        )
    neck = PANNeck(in_channels=body.out_channels, channels=channels, depth=depth)
    head = DetectionHead(
        in_channels=channels,
        num_classes=num_classes,
        strides=STRIDES,
        convs=max(1, depth - 1),
        loss_weights=loss_weights,
    )
    model = Detector(backbone=body, neck=neck, head=head)
    if weights is not None and is_weights_file(weights):
        _load_file(model, spec, path=Path(weights), name=f"{arch}/{backbone}")
    return model.train()


def _load_file(model: Detector, spec: Backbone, *, path: Path, name: str) -> None:
    """A whole detector (keys "backbone.", "neck.", "head."; class logits may differ in
    shape, so fine-tuning on new classes works) or a torchvision classifier's backbone."""
    state = read_weights_file(path)
    if not any(k.startswith("backbone.") for k in state):
        load_classifier_body(
            model.backbone,
            state,
            classifier_prefixes=spec.classifier_prefixes,
            source=str(path),
            part="backbone",
        )
        return
    load_with_fresh_head(
        model,
        state,
        head_prefix=HEAD_PREFIX,
        source=path,
        name=name,
    )
