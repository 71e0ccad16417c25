"""SegmentationTask: the Task protocol (base.py) for semantic segmentation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fovea.tasks.backbones import ENCODERS, pooled
from fovea.tasks.base import (
    EvalResult,
    ModelConfig,
)
from fovea.tasks.data.split import evenly_spaced
from fovea.tasks.preprocess import Geometry, denormalize
from fovea.tasks.profile import EmbeddingSite
from fovea.tasks.segmentation.data import IGNORE_INDEX, build_segmentation_data
from fovea.tasks.segmentation.loss import SegmentationLoss, check_loss_weights
from fovea.tasks.segmentation.metrics import (
    SAMPLE_COUNT,
    PixelConfusion,
    per_class_iou_png,
    predictions_png,
    segmentation_metrics,
)
from fovea.tasks.segmentation.model import ARCHITECTURES, DEFAULT_BACKBONES, build_segmenter
from fovea.tasks.shared import LossWeightedTask, PredictRequest

# Logits upsampled to the input size above this many elements (classes x pixels) would
# take too much memory: such images get their labels upsampled (nearest) instead.
MAX_UPSAMPLED_LOGITS = 2**26

Batch = tuple[torch.Tensor, torch.Tensor]  # images [N, 3, S, S] float, masks [N, S, S] int64


class SegmentationTask(LossWeightedTask):
    name: ClassVar[str] = "segmentation"
    geometry: ClassVar[Geometry] = "letterbox"
    data_builder = staticmethod(build_segmentation_data)
    main_metric: ClassVar[str] = "miou"

    architectures: ClassVar[tuple[str, ...]] = tuple(ARCHITECTURES)
    backbones: ClassVar[tuple[str, ...]] = tuple(ENCODERS)
    default_backbones: ClassVar[Mapping[str, str]] = DEFAULT_BACKBONES

    def __init__(self, *, loss_weights: Mapping[str, float] | None = None) -> None:
        self.loss = SegmentationLoss(
            ignore_index=IGNORE_INDEX, weights=check_loss_weights(loss_weights)
        )

    def build_model(self, config: ModelConfig, *, num_classes: int) -> nn.Module:
        arch, backbone, weights = config.arch, config.backbone, config.weights
        n = num_classes
        return build_segmenter(arch=arch, backbone=backbone, num_classes=n, weights=weights)

    def compute_loss(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        images, masks = batch
        return self.loss(model(images), masks)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Any, *, device: torch.device, class_names: list[str]
    ) -> EvalResult:
        num_classes = len(class_names)
        confusion = PixelConfusion(num_classes=num_classes, ignore_index=IGNORE_INDEX)
        wanted = set(evenly_spaced(len(loader.dataset), SAMPLE_COUNT))
        loss_sum, pixel_count = 0.0, 0
        samples: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        seen = 0
        for batch in loader:
            images, masks = self.to_device(batch, device)
            logits = model(images)  # [B, C, S, S]
            labelled = int((masks != IGNORE_INDEX).sum())
            loss_sum += float(self.loss(logits, masks)["loss"]) * labelled
            pixel_count += labelled
            predicted = logits.argmax(dim=1)  # [B, S, S]
            confusion.update(predicted, masks)
            for i in range(len(images)):
                if seen + i in wanted:
                    samples.append((images[i].cpu(), predicted[i].cpu(), masks[i].cpu()))
            seen += len(images)
        matrix = confusion.compute()
        metrics = segmentation_metrics(matrix, class_names=class_names)
        metrics["loss"] = loss_sum / max(pixel_count, 1)

        pictures = denormalize(torch.stack([s[0] for s in samples])).permute(0, 2, 3, 1)
        figures = {
            "val_predictions.png": predictions_png(
                pictures.numpy(),
                torch.stack([s[1] for s in samples]).numpy(),
                torch.stack([s[2] for s in samples]).numpy(),
                num_classes=num_classes,
                ignore_index=IGNORE_INDEX,
            ),
            "per_class_iou.png": per_class_iou_png(metrics, class_names=class_names),
        }
        tables = {
            "per_class.json": {
                "class_names": class_names,
                "iou": [metrics.get(f"iou/{n}") for n in class_names],  # None: undefined
                "true_pixels": matrix.sum(axis=1).tolist(),
                "predicted_pixels": matrix.sum(axis=0).tolist(),
                "confusion_matrix": matrix.tolist(),  # rows true, columns predicted
            }
        }
        return EvalResult(metrics=metrics, figures=figures, tables=tables)

    def card_extras(self) -> dict[str, Any]:
        return {"output": "mask: int64 [N, H, W] class indices at the input resolution"}

    def embedding_site(self, model: nn.Module, card: Mapping[str, Any]) -> EmbeddingSite:
        """The encoder's five maps, pooled: [B, sum of their widths]."""
        return EmbeddingSite(model.encoder, on_input=False, pool=pooled)

    def _predict(self, model: nn.Module, request: PredictRequest) -> dict[str, np.ndarray]:
        """-> {"mask": int64 [N, H, W] class indices at the input resolution}."""
        preprocess = request.preprocess
        height, width = request.pixels.shape[-2:]
        h, w = preprocess.content_size(height, width)  # the image's part of the square
        chunks = []
        for batch in self.batches(request.pixels):
            logits = model(preprocess(batch).to(request.device)).float()[..., :h, :w]
            chunks.append(_labels_at(logits, height=height, width=width).cpu())
        masks = torch.cat(chunks) if chunks else torch.empty((0, height, width))
        return {"mask": masks.numpy().astype(np.int64)}


def _labels_at(logits: torch.Tensor, *, height: int, width: int) -> torch.Tensor:
    """logits [B, C, h, w] -> int64 labels [B, H, W]: bilinear logits, then argmax (or
    argmax, then nearest labels, where the upsampled logits would not fit in memory)."""
    if logits.shape[-2:] == (height, width):
        return logits.argmax(dim=1)
    if logits.shape[1] * height * width <= MAX_UPSAMPLED_LOGITS:
        return torch.cat(
            [
                F.interpolate(
                    one[None], size=(height, width), mode="bilinear", align_corners=False
                ).argmax(dim=1)
                for one in logits
            ]
        )
    labels = logits.argmax(dim=1, keepdim=True).float()
    return F.interpolate(labels, size=(height, width), mode="nearest-exact")[:, 0].long()
