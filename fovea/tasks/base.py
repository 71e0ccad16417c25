"""The contract between a task (classification, detection, ...) and the shared engine.

Plain PyTorch: nothing here knows Ray, MLflow or the platform. Configuration arrives as
frozen dataclasses; the worker runtime builds them from the API's JobSpec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from fovea.tasks.errors import UserError

__all__ = ["UserError"]  # re-exported: tasks raise it from here


@dataclass(frozen=True)
class AugmentConfig:
    """The six standard image augmentations, each switchable."""

    random_resized_crop: bool = True
    horizontal_flip: bool = True
    rotation_degrees: float = 10.0  # 0 switches rotation off
    color_jitter: bool = True
    gaussian_noise: bool = False
    random_erasing: bool = False


@dataclass(frozen=True)
class DataConfig:
    uri: str  # absolute path already checked against the data roots, or "builtin://<name>"
    format: str  # "imagefolder" | "builtin" | "masks" | "yolo" | "coco" | "voc" (per task)
    image_size: int = 224
    val_split: float = 0.2
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    max_image_pixels: int = 89_478_485  # decompression-bomb guard (PIL's default)
    # Value masks: pixel value -> class name, e.g. {0: "background", 255: "membrane"}.
    class_map: Mapping[int, str] | None = None
    ignore_index: int = 255  # label of unlabeled pixels (segmentation)
    # A frozen validation set: relative posix paths (under `uri`; "#<index>" for builtin
    # datasets) of the images that must form the validation split; the others train.
    val_files: frozenset[str] | None = None
    # Data roots every file read must resolve under (symlinks followed); None: no check.
    roots: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.val_split < 1.0:
            raise UserError(f"dataset.val_split must be in (0, 1), got {self.val_split}")
        if self.image_size < 8:
            raise UserError(f"train.image_size must be >= 8, got {self.image_size}")
        if self.max_image_pixels < 1:
            raise UserError(f"max_image_pixels must be >= 1, got {self.max_image_pixels}")


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    # None, a torchvision weights enum name ("ResNet18_Weights.IMAGENET1K_V1" or "DEFAULT"),
    # or a local file (.pt state dict loaded with weights_only=True, or .safetensors).
    # The worker resolves "models:/<name>@<alias>" to a local file before the task sees it.
    weights: str | None = None
    backbone: str | None = None  # encoder / backbone for detection and segmentation models


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # "adamw" | "sgd"
    momentum: float = 0.9  # sgd only
    scheduler: str = "cosine"  # "cosine" | "constant", each after a linear warmup
    warmup_epochs: float = 1.0  # 0: no warmup
    amp: bool = True  # used only where the device supports it
    ema: bool = False
    ema_decay: float = 0.999
    early_stopping_patience: int | None = 5  # epochs without improvement of the main metric
    grad_clip_norm: float | None = None
    label_smoothing: float = 0.0
    # Per-task loss weights by name, e.g. {"ce": 1.0, "dice": 1.0} for segmentation.
    loss_weights: Mapping[str, float] | None = None
    seed: int = 0
    # DataLoader worker processes; None: one when torch has 2+ threads, else none (engine.py)
    num_workers: int | None = None
    # Fine-tuning (finetune.py): epochs that train the head alone, the backbone's share of
    # the learning rate; None: the default for a job with (or without) pretrained weights
    freeze_backbone_epochs: int | None = None
    backbone_lr_scale: float | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UserError(f"train.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UserError(f"train.batch_size must be >= 1, got {self.batch_size}")
        if self.optimizer not in ("adamw", "sgd"):
            raise UserError(f"train.optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.scheduler not in ("cosine", "constant"):
            raise UserError(
                f"train.scheduler must be 'cosine' or 'constant', got {self.scheduler!r}"
            )
        patience = self.early_stopping_patience
        checks = {  # field -> (valid, what is wanted)
            "lr": (self.lr > 0 and math.isfinite(self.lr), "> 0"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "warmup_epochs": (self.warmup_epochs >= 0, ">= 0"),
            "ema_decay": (0 < self.ema_decay < 1, "in (0, 1)"),
            "early_stopping_patience": (patience is None or patience >= 1, ">= 1 or null"),
            "grad_clip_norm": (self.grad_clip_norm is None or self.grad_clip_norm > 0, "> 0"),
            "label_smoothing": (0 <= self.label_smoothing < 1, "in [0, 1)"),
            "num_workers": (self.num_workers is None or self.num_workers >= 0, ">= 0 or null"),
            "freeze_backbone_epochs": (
                self.freeze_backbone_epochs is None or self.freeze_backbone_epochs >= 0,
                ">= 0 or null",
            ),
            "backbone_lr_scale": (
                self.backbone_lr_scale is None or self.backbone_lr_scale > 0,
                "> 0 or null",
            ),
        }
        for name, (valid, wanted) in checks.items():
            if not valid:
                raise UserError(f"train.{name} must be {wanted}, got {getattr(self, name)!r}")


def merge_loss_weights(
    weights: Mapping[str, float] | None, *, defaults: Mapping[str, float], task: str
) -> dict[str, float]:
    """TrainConfig.loss_weights over a task's defaults: unknown names and negative values
    are a UserError naming them; names not given keep their default."""
    merged = dict(defaults)
    for name, value in (weights or {}).items():
        if name not in defaults:
            raise UserError(
                f"train.loss_weights: unknown {task} loss {name!r}; valid: {', '.join(defaults)}"
            )
        if not value >= 0:
            raise UserError(f"train.loss_weights.{name} must be >= 0, got {value}")
        merged[name] = float(value)
    return merged


class EventSink(Protocol):
    """Where tasks and the engine report things a user should see in the job's events."""

    def __call__(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None: ...


def no_events(kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
    """An EventSink that drops everything (notebooks, tests)."""


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    class_names: list[str]
    # counters a user should see, e.g. {"corrupt_images_skipped": 2, "images": 1797}
    stats: dict[str, int] = field(default_factory=dict)
    collate_fn: Any = None  # None: torch's default collate
    # relative paths of the validation images, in order ("#<index>" for builtin datasets):
    # what a frozen evaluation set is made of (DataConfig.val_files)
    val_files: list[str] = field(default_factory=list)


@dataclass
class EvalResult:
    metrics: dict[str, float]  # flat, JSON-able; includes the task's main metric
    figures: dict[str, bytes] = field(default_factory=dict)  # file name -> PNG bytes
    tables: dict[str, Any] = field(default_factory=dict)  # file name -> JSON-able object


@runtime_checkable
class Task(Protocol):
    name: ClassVar[str]
    main_metric: ClassVar[str]  # key of EvalResult.metrics; higher is better

    @classmethod
    def from_train_config(cls, train: TrainConfig) -> Task:
        """The task with the loss-shaping options of `train` (label smoothing, weights)."""
        ...

    def build_data(self, config: DataConfig, *, events: EventSink = no_events) -> DataBundle:
        """Load and split the dataset; raise UserError naming the path when it is unusable."""
        ...

    def build_model(self, config: ModelConfig, *, num_classes: int) -> nn.Module:
        """The model in training mode; raise UserError for an unknown arch or bad weights."""
        ...

    def compute_loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Named losses for one batch (already on the device); key "loss" is the total."""
        ...

    def evaluate(
        self, model: nn.Module, loader: Any, *, device: torch.device, class_names: list[str]
    ) -> EvalResult:
        """Metrics and figures on a validation loader (model already in eval mode)."""
        ...

    def batch_size_of(self, batch: Any) -> int:
        """Number of images in a batch (for throughput)."""
        ...

    def to_device(self, batch: Any, device: torch.device) -> Any: ...

    def model_card(
        self, model_config: ModelConfig, data_config: DataConfig, *, class_names: list[str]
    ) -> dict[str, Any]:
        """JSON-able description enough to rebuild the model (see load_for_inference)."""
        ...

    def load_for_inference(
        self, card: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
    ) -> nn.Module:
        """Rebuild the eval-mode model from a card and weights (no pretrained download)."""
        ...

    def predict_arrays(
        self, model: nn.Module, card: Mapping[str, Any], images: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Inference on a uint8 batch NHWC (or NHW for grey); returns named numpy arrays."""
        ...
