"""DetectionTask: the Task protocol (base.py) for object detection with boxes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fovea.tasks.backbones import ENCODERS, pooled
from fovea.tasks.base import (
    EvalResult,
    ModelConfig,
)
from fovea.tasks.data.split import evenly_spaced
from fovea.tasks.detection.data import PAD_VALUE, Batch, build_detection_data
from fovea.tasks.detection.loss import check_loss_weights
from fovea.tasks.detection.metrics import (
    SAMPLE_COUNT,
    detection_metrics,
    draw_boxes,
    new_metric,
    pr_curves_png,
    predictions_png,
)
from fovea.tasks.detection.model import (
    ARCHITECTURES,
    DEFAULT_BACKBONES,
    LEVELS,
    DecodedDetector,
    Detector,
    build_detector,
)
from fovea.tasks.preprocess import Geometry, denormalize
from fovea.tasks.profile import EmbeddingSite
from fovea.tasks.shared import LossWeightedTask, PredictRequest

SERVING_SCORE_THRESHOLD = 0.25  # predict_arrays: what a user wants to see, not what mAP needs


class DetectionTask(LossWeightedTask):
    name: ClassVar[str] = "detection"
    geometry: ClassVar[Geometry] = "letterbox"
    pad_value: ClassVar[int] = PAD_VALUE
    data_builder = staticmethod(build_detection_data)
    main_metric: ClassVar[str] = "map"

    architectures: ClassVar[tuple[str, ...]] = tuple(ARCHITECTURES)
    backbones: ClassVar[tuple[str, ...]] = tuple(ENCODERS)
    default_backbones: ClassVar[Mapping[str, str]] = DEFAULT_BACKBONES

    def __init__(self, *, loss_weights: Mapping[str, float] | None = None) -> None:
        self.loss_weights = check_loss_weights(loss_weights)

    def build_model(self, config: ModelConfig, *, num_classes: int) -> nn.Module:
        return build_detector(
            arch=config.arch,
            backbone=config.backbone,
            num_classes=num_classes,
            weights=config.weights,
            loss_weights=self.loss_weights,
        )

    def compute_loss(self, model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        images, targets = batch
        return model(images, targets)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, loader: Any, *, device: torch.device, class_names: list[str]
    ) -> EvalResult:
        metric = new_metric()
        wanted = set(evenly_spaced(len(loader.dataset), SAMPLE_COUNT))
        drawn: list[np.ndarray] = []
        seen = 0
        for batch in loader:
            images, targets = self.to_device(batch, device)
            predictions = [
                {k: v.float().cpu() if k != "labels" else v.cpu() for k, v in p.items()}
                for p in model(images)
            ]
            truths = [{"boxes": t["boxes"].cpu(), "labels": t["labels"].cpu()} for t in targets]
            metric.update(predictions, truths)
            for i in range(len(images)):
                if seen + i not in wanted:
                    continue
                picture = denormalize(images[i : i + 1].float()).cpu()[0].permute(1, 2, 0)
                drawn.append(
                    draw_boxes(
                        picture.numpy(),
                        true_boxes=truths[i]["boxes"].numpy(),
                        true_labels=truths[i]["labels"].tolist(),
                        boxes=predictions[i]["boxes"].numpy(),
                        scores=predictions[i]["scores"].tolist(),
                        labels=predictions[i]["labels"].tolist(),
                        class_names=class_names,
                    )
                )
            seen += len(images)
        metrics, curves = detection_metrics(metric, class_names=class_names)
        figures = {"pr_curves.png": pr_curves_png(curves)}
        if drawn:
            figures["val_predictions.png"] = predictions_png(drawn)
        tables = {
            "per_class_ap.json": {
                "class_names": class_names,
                "ap": [metrics.get(f"ap/{n}") for n in class_names],  # None: no val boxes
            }
        }
        return EvalResult(metrics=metrics, figures=figures, tables=tables)

    def card_extras(self) -> dict[str, Any]:
        return {
            "score_threshold": SERVING_SCORE_THRESHOLD,
            "output": (
                "boxes float32 [N, K, 4] xyxy pixels of the input image, scores [N, K], "
                "labels int64 [N, K] (-1 padding), num_detections [N]"
            ),
        }

    def onnx_graph(self, model: nn.Module) -> tuple[nn.Module, tuple[str, ...]]:
        """For tasks/export.py: decoding included, NMS not. Outputs "boxes" [N, P, 4] xyxy
        pixels of the square and "scores" [N, P, C], P = every cell of strides 8, 16, 32."""
        if not isinstance(model, Detector):
            raise TypeError(f"expected a Detector, got {type(model).__name__}")
        return DecodedDetector(model), ("boxes", "scores")

    def embedding_site(self, model: nn.Module, card: Mapping[str, Any]) -> EmbeddingSite:
        """The backbone's maps at strides 8, 16, 32, pooled: [B, c8 + c16 + c32]."""
        return EmbeddingSite(model.backbone, on_input=False, pool=lambda out: pooled(out[LEVELS]))

    def _predict(self, model: nn.Module, request: PredictRequest) -> dict[str, np.ndarray]:
        """-> boxes float32 [N, K, 4] (xyxy, pixels of the input), scores float32 [N, K],
        labels int64 [N, K], num_detections int64 [N]; K is the most detections of any
        image here, the rest padded (score 0, label -1)."""
        if not isinstance(model, Detector):
            raise TypeError(f"expected a Detector, got {type(model).__name__}")
        preprocess, device = request.preprocess, request.device
        height, width = request.pixels.shape[-2:]
        threshold = float(request.card["score_threshold"])
        found: list[dict[str, torch.Tensor]] = []
        for batch in self.batches(request.pixels):
            found += model.detect(preprocess(batch).to(device), score_threshold=threshold)
        most = max((len(f["scores"]) for f in found), default=0)
        boxes = np.zeros((len(found), most, 4), dtype=np.float32)
        scores = np.zeros((len(found), most), dtype=np.float32)
        labels = np.full((len(found), most), -1, dtype=np.int64)
        counts = np.zeros(len(found), dtype=np.int64)
        scale = preprocess.scale(height, width)
        limits = torch.tensor([width, height, width, height], dtype=torch.float32)
        for i, f in enumerate(found):
            k = len(f["scores"])
            original = torch.minimum((f["boxes"].float().cpu() / scale).clamp(min=0), limits)
            boxes[i, :k] = original.numpy()
            scores[i, :k] = f["scores"].float().cpu().numpy()
            labels[i, :k] = f["labels"].cpu().numpy()
            counts[i] = k
        return {"boxes": boxes, "scores": scores, "labels": labels, "num_detections": counts}
