"""SegmentationTask: the Task protocol (base.py) for semantic segmentation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fovea.tasks.base import (
    DataBundle,
    DataConfig,
    EvalResult,
    EventSink,
    ModelConfig,
    TrainConfig,
    UserError,
    no_events,
)
from fovea.tasks.data.cache import letterbox, letterbox_size
from fovea.tasks.data.images import as_nchw_rgb
from fovea.tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize
from fovea.tasks.segmentation.data import IGNORE_INDEX, build_segmentation_data
from fovea.tasks.segmentation.loss import SegmentationLoss, check_loss_weights
from fovea.tasks.segmentation.metrics import (
    SAMPLE_COUNT,
    PixelConfusion,
    per_class_iou_png,
    predictions_png,
    segmentation_metrics,
)
from fovea.tasks.segmentation.model import (
    ARCHITECTURES,
    DEFAULT_BACKBONE,
    ENCODERS,
    build_segmenter,
)

CARD_VERSION = 1
PREDICT_BATCH = 16
# Logits upsampled to the input size above this many elements (classes x pixels) would
# take too much memory: such images get their labels upsampled (nearest) instead.
MAX_UPSAMPLED_LOGITS = 2**26

Batch = tuple[torch.Tensor, torch.Tensor]  # images [N, 3, S, S] float, masks [N, S, S] int64


class SegmentationTask:
    name: ClassVar[str] = "segmentation"
    main_metric: ClassVar[str] = "miou"

    architectures: ClassVar[tuple[str, ...]] = tuple(ARCHITECTURES)
    backbones: ClassVar[tuple[str, ...]] = tuple(ENCODERS)

    def __init__(self, *, loss_weights: Mapping[str, float] | None = None) -> None:
        self.loss = SegmentationLoss(
            ignore_index=IGNORE_INDEX, weights=check_loss_weights(loss_weights)
        )

    @classmethod
    def from_train_config(cls, train: TrainConfig) -> SegmentationTask:
        return cls(loss_weights=train.loss_weights)

    def build_data(self, config: DataConfig, *, events: EventSink = no_events) -> DataBundle:
        return build_segmentation_data(config, events=events)

    def build_model(self, config: ModelConfig, *, num_classes: int) -> nn.Module:
        return build_segmenter(
            arch=config.arch,
            backbone=config.backbone,
            num_classes=num_classes,
            weights=config.weights,
        )

    def compute_loss(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        images, masks = batch
        return self.loss(model(images), masks)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Any, *, device: torch.device, class_names: list[str]
    ) -> EvalResult:
        num_classes = len(class_names)
        confusion = PixelConfusion(num_classes=num_classes, ignore_index=IGNORE_INDEX)
        wanted = _sample_positions(len(loader.dataset))
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

    def batch_size_of(self, batch: Batch) -> int:
        return int(batch[0].shape[0])

    def to_device(self, batch: Batch, device: torch.device) -> Batch:
        images, masks = batch
        return images.to(device, non_blocking=True), masks.to(device, non_blocking=True)

    def model_card(
        self, model_config: ModelConfig, data_config: DataConfig, *, class_names: list[str]
    ) -> dict[str, Any]:
        return {
            "card_version": CARD_VERSION,
            "task": self.name,
            "arch": model_config.arch,
            "backbone": model_config.backbone or DEFAULT_BACKBONE,
            "num_classes": len(class_names),
            "class_names": list(class_names),
            "image_size": data_config.image_size,
            # inputs: long side resized to image_size, padded bottom/right to a square
            "resize": "letterbox",
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "input": "uint8 RGB NHWC or grey NHW",
            "output": "mask: int64 [N, H, W] class indices at the input resolution",
        }

    def load_for_inference(
        self, card: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
    ) -> nn.Module:
        if card.get("task") != self.name:
            raise UserError(f"model card is for task {card.get('task')!r}, not {self.name!r}")
        model = build_segmenter(
            arch=card["arch"], backbone=card["backbone"], num_classes=int(card["num_classes"])
        )
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise UserError(
                f"weights do not fit the model card ({card['arch']}/{card['backbone']}): {exc}"
            ) from exc
        return model.eval()

    @torch.no_grad()
    def predict_arrays(
        self, model: nn.Module, card: Mapping[str, Any], images: np.ndarray
    ) -> dict[str, np.ndarray]:
        """uint8 [N, H, W, 3|4|1] or [N, H, W] -> {"mask": int64 [N, H, W] class indices}."""
        pixels = as_nchw_rgb(images)  # [N, 3, H, W]
        height, width = pixels.shape[-2:]
        size = int(card["image_size"])
        h, w = letterbox_size(height, width, size)  # the image's part of the square
        mean = torch.tensor(card["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(card["std"]).view(1, 3, 1, 1)
        device = next(model.parameters()).device
        model.eval()
        chunks = []
        for start in range(0, len(pixels), PREDICT_BATCH):
            square = letterbox(pixels[start : start + PREDICT_BATCH], size).float() / 255.0
            logits = model(((square - mean) / std).to(device)).float()[..., :h, :w]
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


def _sample_positions(dataset_size: int) -> set[int]:
    """Evenly spread validation positions for the figure."""
    count = min(SAMPLE_COUNT, dataset_size)
    return {int(p) for p in np.linspace(0, dataset_size - 1, count).round()}
