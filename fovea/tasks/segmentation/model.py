"""Segmentation architectures: an encoder, a decoder and a head, each its own module.

`ARCHITECTURES` is the explicit list: U-Net and FPN presets by size, each with a default
encoder (`unet_n` / `fpn_n` on `tiny`, `unet_s` / `fpn_s` on `mobilenet_v3_large`, `unet_m`
/ `fpn_m` on `resnet18`, the size of smp's U-Net + resnet18, 14.3 M; catalog.py states
the budgets, tests/tasks/test_budgets.py holds the presets to them), and `unet` / `fpn`,
the names from before presets, as `unet_m` / `fpn_m`. The encoder is any of the shared zoo
(tasks/backbones.py: torchvision resnet18/34/50, mobilenet_v3_large, and a tiny CNN for
tests and small images), which returns five feature maps at strides 2, 4, 8, 16 and 32.
Every model returns logits [N, num_classes, H, W] at the input resolution (inputs are
zero-padded to a multiple of 32 inside, and the logits cropped back).

- U-Net: each decoder block upsamples x2 (nearest), concatenates the encoder feature of that
  stride (the skip connection) and applies two 3x3 conv-BN-ReLU; five blocks go from
  stride 32 back to stride 1, where the head's 3x3 conv gives the class logits.
- FPN: torchvision's FeaturePyramidNetwork over strides 4..32, then the semantic branch of
  Panoptic FPN (Kirillov et al. 2019): each level goes through conv-GN-ReLU(-upsample x2)
  blocks to stride 4, the levels are summed, and the head's 1x1 conv + x4 bilinear upsampling
  gives the logits.

Weights (ModelConfig.weights): a torchvision enum name loads ImageNet weights into the
encoder (from the local torch hub cache only); a local file holds either a whole
segmentation model (its head is skipped when the number of classes differs, so fine-tuning
on new classes works) or a torchvision classifier of the same backbone (its encoder part).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import FeaturePyramidNetwork

from fovea.tasks.backbones import check_encoder_model, conv_bn_act, get_encoder
from fovea.tasks.weights import load_weights_file, split_weights

OUTPUT_STRIDE = 32
HEAD_PREFIX = "segmentation_head."


# ---- decoders: features -> one feature map --------------------------------------------------


class UnetDecoderBlock(nn.Module):
    def __init__(self, *, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = conv_bn_act(in_channels + skip_channels, out_channels)
        self.conv2 = conv_bn_act(out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        if skip is not None:
            x = torch.cat([x, skip], dim=1)  # [N, in + skip, h, w]
        return self.conv2(self.conv1(x))


class UnetDecoder(nn.Module):
    """Stride 32 -> 1 in five blocks, with skips from strides 16, 8, 4 and 2."""

    def __init__(self, *, encoder_channels: Sequence[int], decoder_channels: Sequence[int]) -> None:
        super().__init__()
        if len(encoder_channels) != 5 or len(decoder_channels) != 5:
            raise ValueError("U-Net needs 5 encoder features and 5 decoder widths")
        skips = [*encoder_channels[:-1][::-1], 0]  # strides 16, 8, 4, 2, then none
        inputs = [encoder_channels[-1], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(
            UnetDecoderBlock(in_channels=i, skip_channels=s, out_channels=o)
            for i, s, o in zip(inputs, skips, decoder_channels, strict=True)
        )
        self.out_channels = decoder_channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x, skips = features[-1], features[:-1][::-1]  # skips: strides 16, 8, 4, 2
        for i, block in enumerate(self.blocks):
            x = block(x, skips[i] if i < len(skips) else None)
        return x  # [N, decoder_channels[-1], H, W]


class SemanticLevel(nn.Module):
    """One pyramid level to stride 4: `upsamplings` x (conv-GN-ReLU, upsample x2), or a
    single conv-GN-ReLU for the stride-4 level itself."""

    def __init__(self, *, in_channels: int, out_channels: int, upsamplings: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(max(upsamplings, 1)):
            blocks.append(_conv_gn_relu(in_channels if i == 0 else out_channels, out_channels))
            if upsamplings > 0:
                blocks.append(nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class FPNDecoder(nn.Module):
    """FeaturePyramidNetwork over strides 4..32, each level brought to stride 4, summed."""

    def __init__(
        self,
        *,
        encoder_channels: Sequence[int],
        pyramid_channels: int,
        segmentation_channels: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.fpn = FeaturePyramidNetwork(
            in_channels_list=list(encoder_channels[1:]), out_channels=pyramid_channels
        )
        self.levels = nn.ModuleList(
            SemanticLevel(
                in_channels=pyramid_channels, out_channels=segmentation_channels, upsamplings=n
            )
            for n in range(4)  # strides 4, 8, 16, 32
        )
        self.dropout = nn.Dropout2d(dropout)
        self.out_channels = segmentation_channels

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        pyramid = self.fpn(OrderedDict((f"s{4 << i}", f) for i, f in enumerate(features[1:])))
        merged = sum(
            level(p) for level, p in zip(self.levels, pyramid.values(), strict=True)
        )  # [N, segmentation_channels, H/4, W/4]
        return self.dropout(merged)


# ---- head and model -------------------------------------------------------------------------


class SegmentationHead(nn.Sequential):
    """Class logits from the decoder output, upsampled to the input resolution."""

    def __init__(
        self, *, in_channels: int, num_classes: int, kernel_size: int, upsampling: int
    ) -> None:
        conv = nn.Conv2d(in_channels, num_classes, kernel_size, padding=kernel_size // 2)
        up = (
            nn.Upsample(scale_factor=float(upsampling), mode="bilinear", align_corners=False)
            if upsampling > 1
            else nn.Identity()
        )
        super().__init__(conv, up)


class SegmentationModel(nn.Module):
    def __init__(
        self, *, encoder: nn.Module, decoder: nn.Module, segmentation_head: nn.Module
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.segmentation_head = segmentation_head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        x = _pad_to_multiple(images, OUTPUT_STRIDE)  # [N, 3, H', W'], H' and W' % 32 == 0
        features = self.encoder(x)
        decoded = self.decoder(features)
        masks = self.segmentation_head(decoded)  # [N, num_classes, H', W']
        return masks[..., :height, :width]


@dataclass(frozen=True)
class DecoderWidths:
    unet: tuple[int, ...]  # U-Net decoder block widths, strides 16 -> 1
    fpn: tuple[int, int]  # FPN pyramid and semantic-branch widths


DEFAULT_WIDTHS = DecoderWidths(unet=(256, 128, 64, 32, 16), fpn=(256, 128))
# Narrower decoders for the tiny encoder; every other encoder takes the defaults.
DECODER_WIDTHS = {"tiny": DecoderWidths(unet=(64, 48, 32, 24, 16), fpn=(64, 32))}


def _unet(encoder: nn.Module, widths: DecoderWidths, num_classes: int) -> SegmentationModel:
    decoder = UnetDecoder(encoder_channels=encoder.out_channels, decoder_channels=widths.unet)
    head = SegmentationHead(
        in_channels=decoder.out_channels, num_classes=num_classes, kernel_size=3, upsampling=1
    )
    return SegmentationModel(encoder=encoder, decoder=decoder, segmentation_head=head)


def _fpn(encoder: nn.Module, widths: DecoderWidths, num_classes: int) -> SegmentationModel:
    pyramid, semantic = widths.fpn
    decoder = FPNDecoder(
        encoder_channels=encoder.out_channels,
        pyramid_channels=pyramid,
        segmentation_channels=semantic,
    )
    head = SegmentationHead(
        in_channels=decoder.out_channels, num_classes=num_classes, kernel_size=1, upsampling=4
    )
    return SegmentationModel(encoder=encoder, decoder=decoder, segmentation_head=head)


@dataclass(frozen=True)
class Preset:
    build: Callable[[nn.Module, DecoderWidths, int], SegmentationModel]
    backbone: str  # the default model.backbone


ARCHITECTURES: dict[str, Preset] = {
    "unet": Preset(_unet, backbone="resnet18"),  # = unet_m, the name before presets
    "fpn": Preset(_fpn, backbone="resnet18"),  # = fpn_m
    "unet_n": Preset(_unet, backbone="tiny"),
    "unet_s": Preset(_unet, backbone="mobilenet_v3_large"),
    "unet_m": Preset(_unet, backbone="resnet18"),
    "fpn_n": Preset(_fpn, backbone="tiny"),
    "fpn_s": Preset(_fpn, backbone="mobilenet_v3_large"),
    "fpn_m": Preset(_fpn, backbone="resnet18"),
}
DEFAULT_BACKBONES = {name: preset.backbone for name, preset in ARCHITECTURES.items()}


def build_segmenter(
    *, arch: str, backbone: str | None, num_classes: int, weights: str | None = None
) -> SegmentationModel:
    """The model in training mode; UserError for an unknown arch, backbone or bad weights."""
    backbone, spec = check_encoder_model(
        arch,
        backbone,
        DEFAULT_BACKBONES,
        num_classes=num_classes,
        min_classes=2,
        task="segmentation",
    )
    name = f"{arch}/{backbone}"
    enum_weights, weights_file = split_weights(weights)
    encoder = get_encoder(backbone, weights=enum_weights, model_name=name)
    widths = DECODER_WIDTHS.get(backbone, DEFAULT_WIDTHS)
    model = ARCHITECTURES[arch].build(encoder, widths, num_classes)
    if weights_file is not None:
        hint = "(same model.arch and model.backbone as the model that saved them?)"
        prefixes = spec.classifier_prefixes
        load_weights_file(model, weights_file, "encoder", prefixes, HEAD_PREFIX, name, hint=hint)
    return model.train()


def _pad_to_multiple(images: torch.Tensor, multiple: int) -> torch.Tensor:
    height, width = images.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))
    return images


def _conv_gn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.GroupNorm(min(32, c_out // 4), c_out),
        nn.ReLU(inplace=True),
    )
