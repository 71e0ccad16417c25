"""The detector: a backbone, a PAN neck and a decoupled head, each its own module.

`ARCHITECTURES` (size presets yolo_n / yolo_s / yolo_m) is the explicit list; the
backbone is any encoder of the shared zoo (tasks/backbones.py: torchvision resnet18/34/50,
mobilenet_v3_large, and a tiny CNN for tests and small images on CPU), of which the
detector takes the feature maps at strides 8, 16 and 32.

- Neck (PAN, Liu et al. 2018): 1x1 laterals to the preset's width, a top-down path
  (upsample x2, concatenate, conv block) then a bottom-up path (3x3 stride-2 conv,
  concatenate, conv block), so every level sees both fine detail and coarse context.
- Head (head.py): per level, separate classification and box branches (decoupled, as in
  YOLOX), anchor-free: each feature-map cell predicts class logits and its distances to
  the four box sides.

Presets scale the neck and head by a width multiplier (channels = 256 x width: 64, 128,
192) and a depth multiplier (residual blocks per fusion = ceil(3 x depth): 1, 1, 3; head
branches get one 3x3 conv fewer, at least one), and each names its default backbone, so
that with it the preset stays within the parameter budget of its YOLOv8 namesake
(catalog.py states the budgets, tests/tasks/test_budgets.py holds the presets to them):
yolo_n on `tiny` (0.8 M, budget 3.2 M), yolo_s on `mobilenet_v3_large` (5.1 M, 11.5 M),
yolo_m on `resnet18` (20.4 M, 26 M), at 80 classes. ModelConfig.backbone overrides it.

In training mode `forward(images, targets)` returns named losses; in eval mode a list of
{"boxes" [K, 4] xyxy in pixels of the input image, "scores" [K], "labels" [K]} per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from fovea.tasks.backbones import SILU, check_encoder_model, conv_bn_act, get_encoder
from fovea.tasks.detection.head import DetectionHead
from fovea.tasks.weights import load_weights_file, split_weights

STRIDES = (8, 16, 32)
LEVELS = slice(2, 5)  # encoder levels at strides 8, 16, 32
HEAD_PREFIX = "head."


@dataclass(frozen=True)
class Preset:
    width: float  # neck/head channels = round(256 * width)
    depth: float  # blocks per neck fusion = ceil(3 * depth); 3x3 convs per head branch one less
    backbone: str  # the default model.backbone


ARCHITECTURES: dict[str, Preset] = {
    "yolo_n": Preset(width=0.25, depth=0.33, backbone="tiny"),
    "yolo_s": Preset(width=0.5, depth=0.33, backbone="mobilenet_v3_large"),
    "yolo_m": Preset(width=0.75, depth=0.67, backbone="resnet18"),
}
DEFAULT_BACKBONES = {name: preset.backbone for name, preset in ARCHITECTURES.items()}


# ---- neck: three backbone maps -> three maps of one width -----------------------------------


_conv = partial(conv_bn_act, activation=SILU)


class ConvBlock(nn.Module):
    """1x1 conv to `c_out`, then `depth` residual 3x3 convs: the neck's fusion unit."""

    def __init__(self, *, c_in: int, c_out: int, depth: int) -> None:
        super().__init__()
        self.reduce = _conv(c_in, c_out, kernel=1)
        self.blocks = nn.ModuleList(_conv(c_out, c_out) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        for block in self.blocks:
            x = x + block(x)
        return x


class PANNeck(nn.Module):
    def __init__(self, *, in_channels: Sequence[int], channels: int, depth: int) -> None:
        super().__init__()
        c = channels
        self.laterals = nn.ModuleList(_conv(ci, c, kernel=1) for ci in in_channels)
        self.top_down = nn.ModuleList(ConvBlock(c_in=2 * c, c_out=c, depth=depth) for _ in range(2))
        self.downsample = nn.ModuleList(_conv(c, c, stride=2) for _ in range(2))
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
        features = self.backbone(images)[LEVELS]  # strides 8, 16, 32
        pyramid = self.neck(features)
        outputs = self.head(pyramid)  # {"cls_logits" [N, P, C], "box_regression" [N, P, 4]}
        return self.head.compute_loss(outputs, targets, image_size=images.shape[-2:])

    def detect(
        self, images: torch.Tensor, *, score_threshold: float | None = None
    ) -> list[dict[str, torch.Tensor]]:
        """Per image {"boxes" [K, 4] xyxy pixels, "scores" [K], "labels" [K]}, after NMS;
        `score_threshold` None: the head's (low, for mAP)."""
        outputs = self.head(self.neck(self.backbone(images)[LEVELS]))
        return self.head.postprocess(
            outputs, image_size=images.shape[-2:], score_threshold=score_threshold
        )

    def decoded(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Before NMS, for export: boxes [N, P, 4] xyxy pixels and scores [N, P, C] in [0, 1]."""
        outputs = self.head(self.neck(self.backbone(images)[LEVELS]))
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
    backbone, spec = check_encoder_model(
        arch, backbone, DEFAULT_BACKBONES, num_classes=num_classes, min_classes=1, task="detection"
    )
    preset, name = ARCHITECTURES[arch], f"{arch}/{backbone}"
    channels = round(256 * preset.width)
    depth = max(1, math.ceil(3 * preset.depth))
    enum_weights, weights_file = split_weights(weights)
    body = get_encoder(backbone, weights=enum_weights, activation=SILU, model_name=name)
    neck = PANNeck(in_channels=body.out_channels[LEVELS], channels=channels, depth=depth)
    head = DetectionHead(
        in_channels=channels,
        num_classes=num_classes,
        strides=STRIDES,
        convs=max(1, depth - 1),
        loss_weights=loss_weights,
    )
    model = Detector(backbone=body, neck=neck, head=head)
    if weights_file is not None:
        prefixes = spec.classifier_prefixes
        load_weights_file(model, weights_file, "backbone", prefixes, HEAD_PREFIX, name)
    return model.train()
