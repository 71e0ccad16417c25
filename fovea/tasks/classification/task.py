"""ClassificationTask: the Task protocol (base.py) for single-label image classification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

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
from fovea.tasks.classification.data import build_classification_data
from fovea.tasks.classification.loss import classification_loss
from fovea.tasks.classification.metrics import (
    classification_metrics,
    sample_positions,
    sample_predictions_png,
)
from fovea.tasks.classification.model import ARCHITECTURES, build_classifier
from fovea.tasks.data.cache import resize_and_center_crop, resize_size_for
from fovea.tasks.data.images import as_nchw_rgb
from fovea.tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize, eval_transform
from fovea.tasks.plots import confusion_matrix_png

CARD_VERSION = 1
PREDICT_BATCH = 64

Batch = tuple[torch.Tensor, torch.Tensor]  # images [N, 3, H, W] float, labels [N] int64


class ClassificationTask:
    name: ClassVar[str] = "classification"
    main_metric: ClassVar[str] = "top1"

    architectures: ClassVar[tuple[str, ...]] = tuple(ARCHITECTURES)

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    @classmethod
    def from_train_config(cls, train: TrainConfig) -> ClassificationTask:
        return cls(label_smoothing=train.label_smoothing)

    def build_data(self, config: DataConfig, *, events: EventSink = no_events) -> DataBundle:
        return build_classification_data(config, events=events)

    def build_model(self, config: ModelConfig, *, num_classes: int) -> nn.Module:
        return build_classifier(arch=config.arch, num_classes=num_classes, weights=config.weights)

    def compute_loss(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        return classification_loss(model(images), labels, label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Any, *, device: torch.device, class_names: list[str]
    ) -> EvalResult:
        wanted = sample_positions(len(loader.dataset))
        all_logits, all_labels, samples = [], [], []
        seen = 0
        for batch in loader:
            images, labels = self.to_device(batch, device)
            all_logits.append(model(images).float().cpu())  # [B, C]
            all_labels.append(labels.cpu())
            samples += [images[i].cpu() for i in range(len(labels)) if seen + i in wanted]
            seen += len(labels)
        logits = torch.cat(all_logits)
        labels = torch.cat(all_labels)
        metrics, confusion = classification_metrics(logits, labels, class_names=class_names)

        positions = sorted(wanted)
        grid = denormalize(torch.stack(samples)).permute(0, 2, 3, 1).numpy()  # [K, H, W, 3]
        figures = {
            "confusion_matrix.png": confusion_matrix_png(confusion, class_names),
            "sample_predictions.png": sample_predictions_png(
                grid,
                logits[positions].argmax(dim=1).tolist(),
                labels[positions].tolist(),
                class_names=class_names,
            ),
        }
        tables = {
            "confusion_matrix.json": {
                "class_names": class_names,
                "rows": "true class",
                "columns": "predicted class",
                "matrix": confusion.tolist(),
            }
        }
        return EvalResult(metrics=metrics, figures=figures, tables=tables)

    def batch_size_of(self, batch: Batch) -> int:
        return int(batch[0].shape[0])

    def to_device(self, batch: Batch, device: torch.device) -> Batch:
        images, labels = batch
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def model_card(
        self, model_config: ModelConfig, data_config: DataConfig, *, class_names: list[str]
    ) -> dict[str, Any]:
        return {
            "card_version": CARD_VERSION,
            "task": self.name,
            "arch": model_config.arch,
            "num_classes": len(class_names),
            "class_names": list(class_names),
            "image_size": data_config.image_size,
            # inputs: short side resized to resize_size, centre square, centre crop image_size
            "resize_size": resize_size_for(data_config.image_size),
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "input": "uint8 RGB NHWC or grey NHW",
        }

    def load_for_inference(
        self, card: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
    ) -> nn.Module:
        if card.get("task") != self.name:
            raise UserError(f"model card is for task {card.get('task')!r}, not {self.name!r}")
        model = build_classifier(arch=card["arch"], num_classes=int(card["num_classes"]))
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise UserError(f"weights do not fit the model card ({card['arch']}): {exc}") from exc
        return model.eval()

    @torch.no_grad()
    def predict_arrays(
        self, model: nn.Module, card: Mapping[str, Any], images: np.ndarray
    ) -> dict[str, np.ndarray]:
        """uint8 [N, H, W, 3|4|1] or [N, H, W] -> class_id int64 [N], probabilities [N, C]."""
        pixels = as_nchw_rgb(images)
        preprocess = eval_transform(
            image_size=card["image_size"], mean=card["mean"], std=card["std"]
        )
        device = next(model.parameters()).device
        model.eval()
        chunks = []
        for start in range(0, len(pixels), PREDICT_BATCH):
            batch = resize_and_center_crop(
                pixels[start : start + PREDICT_BATCH], card["resize_size"]
            )
            chunks.append(model(preprocess(batch).to(device)).float().softmax(dim=1).cpu())
        probabilities = torch.cat(chunks) if chunks else torch.empty((0, int(card["num_classes"])))
        return {
            "class_id": probabilities.argmax(dim=1).numpy().astype(np.int64),
            "probabilities": probabilities.numpy().astype(np.float32),
        }
