"""ClassificationTask: the Task protocol (base.py) for single-label image classification."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fovea.tasks.base import (
    EvalResult,
    ModelConfig,
    TrainConfig,
)
from fovea.tasks.classification.data import build_classification_data
from fovea.tasks.classification.loss import classification_loss
from fovea.tasks.classification.metrics import (
    SAMPLE_GRID_SIZE,
    classification_metrics,
    sample_predictions_png,
)
from fovea.tasks.classification.model import ARCHITECTURES, build_classifier, get_arch
from fovea.tasks.data.split import evenly_spaced
from fovea.tasks.plots import confusion_matrix_png
from fovea.tasks.preprocess import Geometry, denormalize
from fovea.tasks.profile import EmbeddingSite
from fovea.tasks.shared import BaseTask, PredictRequest

Batch = tuple[torch.Tensor, torch.Tensor]  # images [N, 3, H, W] float, labels [N] int64


class ClassificationTask(BaseTask):
    name: ClassVar[str] = "classification"
    geometry: ClassVar[Geometry] = "center_crop"
    data_builder = staticmethod(build_classification_data)
    main_metric: ClassVar[str] = "top1"
    has_backbone: ClassVar[bool] = False
    predict_batch: ClassVar[int] = 64

    architectures: ClassVar[tuple[str, ...]] = tuple(ARCHITECTURES)

    def __init__(self, *, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = label_smoothing

    @classmethod
    def from_train_config(cls, train: TrainConfig) -> ClassificationTask:
        return cls(label_smoothing=train.label_smoothing)

    def build_model(self, config: ModelConfig, *, num_classes: int) -> nn.Module:
        return build_classifier(arch=config.arch, num_classes=num_classes, weights=config.weights)

    def compute_loss(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        images, labels = batch
        return classification_loss(model(images), labels, label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Any, *, device: torch.device, class_names: list[str]
    ) -> EvalResult:
        positions = evenly_spaced(len(loader.dataset), SAMPLE_GRID_SIZE)
        wanted = set(positions)
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

    def embedding_site(self, model: nn.Module, card: Mapping[str, Any]) -> EmbeddingSite:
        """The features the classifier head sees [B, D] (the penultimate layer)."""
        head = model.get_submodule(get_arch(card["arch"]).head)
        return EmbeddingSite(head, on_input=True, pool=lambda inputs: inputs[0].flatten(1))

    def _predict(self, model: nn.Module, request: PredictRequest) -> dict[str, np.ndarray]:
        """-> class_id int64 [N], probabilities float32 [N, C]."""
        preprocess, device = request.preprocess, request.device
        chunks = [
            model(preprocess(batch).to(device)).float().softmax(dim=1).cpu()
            for batch in self.batches(request.pixels)
        ]
        classes = int(request.card["num_classes"])
        probabilities = torch.cat(chunks) if chunks else torch.empty((0, classes))
        return {
            "class_id": probabilities.argmax(dim=1).numpy().astype(np.int64),
            "probabilities": probabilities.numpy().astype(np.float32),
        }
