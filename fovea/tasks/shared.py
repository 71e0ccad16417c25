"""What every task shares, in one base class: batches, the model card, loading a model for
inference, and the preamble of `predict_arrays` (input checks, the card's `Preprocess`, the
device, batching). A task brings its data, model, loss, evaluation and `_predict`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import numpy as np
import torch
from torch import nn

from fovea.tasks.base import (
    DataBundle,
    DataConfig,
    EventSink,
    ModelConfig,
    TrainConfig,
    no_events,
)
from fovea.tasks.errors import UserError
from fovea.tasks.preprocess import Geometry, Preprocess, as_nchw_rgb

INPUT_DESCRIPTION = "uint8 RGB NHWC or grey NHW"


def move_to(batch: Any, device: torch.device) -> Any:
    """Tensors anywhere in a batch (tuples, lists, dicts of them) onto `device`."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, list | tuple):
        return type(batch)(move_to(v, device) for v in batch)
    return batch


@dataclass(frozen=True)
class PredictRequest:
    """What `_predict` gets: the card, its preprocessing, the pixels, the model's device."""

    card: Mapping[str, Any]
    preprocess: Preprocess
    pixels: torch.Tensor  # uint8 [N, 3, H, W], one size
    device: torch.device


DataBuilder = Callable[..., DataBundle]  # (config, *, preprocess, events) -> DataBundle


class BaseTask:
    name: ClassVar[str]
    main_metric: ClassVar[str]
    geometry: ClassVar[Geometry]  # of the input preprocessing (preprocess.py)
    pad_value: ClassVar[int] = 0  # letterbox padding
    data_builder: ClassVar[DataBuilder]  # the task's data.py entry point (a staticmethod)
    card_version: ClassVar[int] = 1
    predict_batch: ClassVar[int] = 16  # images per forward pass in predict_arrays
    has_backbone: ClassVar[bool] = True  # the card names model.backbone
    # arch -> the backbone a preset gets when model.backbone is null (its own model.py's)
    default_backbones: ClassVar[Mapping[str, str]] = {}

    # -- hooks a task implements ------------------------------------------------------------

    def build_model(self, config: ModelConfig, *, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def card_extras(self) -> dict[str, Any]:
        """Task-specific card fields (an "output" description, serving thresholds)."""
        return {}

    def _predict(self, model: nn.Module, request: PredictRequest) -> dict[str, np.ndarray]:
        """The request's images -> named arrays with a leading image axis."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------

    def preprocess_for(self, image_size: int) -> Preprocess:
        """The input preprocessing of this task's models at `image_size`."""
        if self.geometry == "center_crop":
            return Preprocess.center_crop(image_size)
        return Preprocess.letterbox(image_size, pad_value=self.pad_value)

    def build_data(self, config: DataConfig, *, events: EventSink = no_events) -> DataBundle:
        """Load and split the dataset with this task's preprocessing; UserError naming the
        path when it is unusable."""
        preprocess = self.preprocess_for(config.image_size)
        return self.data_builder(config, preprocess=preprocess, events=events)

    def batch_size_of(self, batch: Any) -> int:
        return int(batch[0].shape[0])

    def to_device(self, batch: Any, device: torch.device) -> Any:
        return move_to(batch, device)

    def model_card(
        self, model_config: ModelConfig, data_config: DataConfig, *, class_names: list[str]
    ) -> dict[str, Any]:
        """JSON-able: enough to rebuild the model and preprocess its inputs."""
        card: dict[str, Any] = {
            "card_version": self.card_version,
            "task": self.name,
            "arch": model_config.arch,
        }
        if self.has_backbone:
            card["backbone"] = model_config.backbone or self.default_backbones[model_config.arch]
        return {
            **card,
            "num_classes": len(class_names),
            "class_names": list(class_names),
            **self.preprocess_for(data_config.image_size).to_card(),
            "input": INPUT_DESCRIPTION,
            **self.card_extras(),
        }

    def load_for_inference(
        self, card: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
    ) -> nn.Module:
        """Rebuild the eval-mode model from a card and weights (no pretrained download)."""
        check_card(card, self.name)
        model = self.build_model(
            ModelConfig(arch=card["arch"], backbone=card.get("backbone")),
            num_classes=int(card["num_classes"]),
        )
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            described = "/".join(str(card[k]) for k in ("arch", "backbone") if card.get(k))
            raise UserError(f"weights do not fit the model card ({described}): {exc}") from exc
        return model.eval()

    @torch.no_grad()
    def predict_arrays(
        self, model: nn.Module, card: Mapping[str, Any], images: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Inference on a uint8 batch NHWC (or NHW for grey); returns named numpy arrays."""
        check_card(card, self.name)
        pixels = as_nchw_rgb(images)  # [N, 3, H, W]
        model.eval()
        request = PredictRequest(card, Preprocess.from_card(card), pixels, device_of(model))
        return self._predict(model, request)

    def batches(self, pixels: torch.Tensor) -> Iterator[torch.Tensor]:
        for start in range(0, len(pixels), self.predict_batch):
            yield pixels[start : start + self.predict_batch]


def check_card(card: Mapping[str, Any], task: str) -> None:
    if card.get("task") != task:
        raise UserError(f"model card is for task {card.get('task')!r}, not {task!r}")


def device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class LossWeightedTask(BaseTask):
    """A task whose training option is `train.loss_weights` (detection, segmentation)."""

    @classmethod
    def from_train_config(cls, train: TrainConfig) -> Self:
        return cls(loss_weights=train.loss_weights)  # type: ignore[call-arg]
