"""DetectionTask: the Task protocol (base.py) for object detection with boxes."""

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
from fovea.tasks.data.cache import letterbox
from fovea.tasks.data.images import as_nchw_rgb
from fovea.tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD, denormalize
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
    BACKBONES,
    DEFAULT_BACKBONE,
    DecodedDetector,
    Detector,
    build_detector,
)

CARD_VERSION = 1
PREDICT_BATCH = 16
SERVING_SCORE_THRESHOLD = 0.25  # predict_arrays: what a user wants to see, not what mAP needs


class DetectionTask:
    name: ClassVar[str] = "detection"
    main_metric: ClassVar[str] = "map"

    architectures: ClassVar[tuple[str, ...]] = tuple(ARCHITECTURES)
    backbones: ClassVar[tuple[str, ...]] = tuple(BACKBONES)

    def __init__(self, *, loss_weights: Mapping[str, float] | None = None) -> None:
        self.loss_weights = check_loss_weights(loss_weights)

    @classmethod
    def from_train_config(cls, train: TrainConfig) -> DetectionTask:
        return cls(loss_weights=train.loss_weights)

    def build_data(self, config: DataConfig, *, events: EventSink = no_events) -> DataBundle:
        return build_detection_data(config, events=events)

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
        count = min(SAMPLE_COUNT, len(loader.dataset))
        wanted = {int(p) for p in np.linspace(0, len(loader.dataset) - 1, count).round()}
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

    def batch_size_of(self, batch: Batch) -> int:
        return int(batch[0].shape[0])

    def to_device(self, batch: Batch, device: torch.device) -> Batch:
        images, targets = batch
        moved = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
        return images.to(device, non_blocking=True), moved

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
            # inputs: long side resized to image_size, padded bottom/right with pad_value
            "resize": "letterbox",
            "pad_value": PAD_VALUE,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "score_threshold": SERVING_SCORE_THRESHOLD,
            "input": "uint8 RGB NHWC or grey NHW",
            "output": (
                "boxes float32 [N, K, 4] xyxy pixels of the input image, scores [N, K], "
                "labels int64 [N, K] (-1 padding), num_detections [N]"
            ),
        }

    def load_for_inference(
        self, card: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
    ) -> nn.Module:
        if card.get("task") != self.name:
            raise UserError(f"model card is for task {card.get('task')!r}, not {self.name!r}")
        model = build_detector(
            arch=card["arch"], backbone=card["backbone"], num_classes=int(card["num_classes"])
        )
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise UserError(
                f"weights do not fit the model card ({card['arch']}/{card['backbone']}): {exc}"
            ) from exc
        return model.eval()

    def onnx_graph(self, model: nn.Module) -> tuple[nn.Module, tuple[str, ...]]:
        """For tasks/export.py: decoding included, NMS not. Outputs "boxes" [N, P, 4] xyxy
        pixels of the square and "scores" [N, P, C], P = every cell of strides 8, 16, 32."""
        if not isinstance(model, Detector):
            raise TypeError(f"expected a Detector, got {type(model).__name__}")
        return DecodedDetector(model), ("boxes", "scores")

    @torch.no_grad()
    def predict_arrays(
        self, model: nn.Module, card: Mapping[str, Any], images: np.ndarray
    ) -> dict[str, np.ndarray]:
        """uint8 [N, H, W, 3|4|1] or [N, H, W] -> boxes float32 [N, K, 4] (xyxy, pixels of
        the input), scores float32 [N, K], labels int64 [N, K], num_detections int64 [N];
        K is the most detections of any image here, the rest padded (score 0, label -1)."""
        if not isinstance(model, Detector):
            raise TypeError(f"expected a Detector, got {type(model).__name__}")
        pixels = as_nchw_rgb(images)  # [N, 3, H, W]
        height, width = pixels.shape[-2:]
        size = int(card["image_size"])
        scale = size / max(height, width)
        mean = torch.tensor(card["mean"]).view(1, 3, 1, 1)
        std = torch.tensor(card["std"]).view(1, 3, 1, 1)
        device = next(model.parameters()).device
        model.eval()
        found: list[dict[str, torch.Tensor]] = []
        for start in range(0, len(pixels), PREDICT_BATCH):
            square = letterbox(pixels[start : start + PREDICT_BATCH], size, fill=card["pad_value"])
            normalised = ((square.float() / 255.0 - mean) / std).to(device)
            found += model.detect(normalised, score_threshold=float(card["score_threshold"]))
        most = max((len(f["scores"]) for f in found), default=0)
        boxes = np.zeros((len(found), most, 4), dtype=np.float32)
        scores = np.zeros((len(found), most), dtype=np.float32)
        labels = np.full((len(found), most), -1, dtype=np.int64)
        counts = np.zeros(len(found), dtype=np.int64)
        limits = torch.tensor([width, height, width, height], dtype=torch.float32)
        for i, f in enumerate(found):
            k = len(f["scores"])
            original = torch.minimum((f["boxes"].float().cpu() / scale).clamp(min=0), limits)
            boxes[i, :k] = original.numpy()
            scores[i, :k] = f["scores"].float().cpu().numpy()
            labels[i, :k] = f["labels"].cpu().numpy()
            counts[i] = k
        return {"boxes": boxes, "scores": scores, "labels": labels, "num_detections": counts}
