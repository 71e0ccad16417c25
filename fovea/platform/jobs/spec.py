"""JobSpec: the typed, validated description of a training job (the API's input).

Everything a JSON schema can say is said here (types, ranges, sizes), so the OpenAPI
document tells clients the truth; what needs the catalog, the data roots, the model
registry or the configured limits is checked in `fovea.platform.jobs.validation`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fovea.tasks.catalog import TASK_NAMES

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$"
PROJECT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$"  # the jobs.project column holds 100
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
ProjectName = Annotated[str, Field(pattern=PROJECT_PATTERN)]
TaskName = Literal["classification", "detection", "segmentation"]  # == catalog.TASK_NAMES
DatasetFormat = Literal["imagefolder", "masks", "yolo", "coco", "voc", "builtin"]

MAX_CLASS_MAP_ENTRIES = 1024
PixelValue = Annotated[int, Field(ge=0, le=65535)]
ClassName = Annotated[str, Field(min_length=1, max_length=128)]
LossName = Annotated[str, Field(min_length=1, max_length=32)]
LossWeight = Annotated[float, Field(ge=0.0, le=1e6)]


class _Strict(BaseModel):
    # inf and nan (JSON's 1e999, NaN) are never a sensible setting
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DatasetSpec(_Strict):
    uri: str = Field(
        min_length=1, max_length=4096, description="a path under a data root, or builtin://<name>"
    )
    format: DatasetFormat = Field(
        "imagefolder", description="per task: see docs/training.md; builtin:// URIs ignore it"
    )
    val_split: float = Field(0.2, gt=0.0, lt=1.0)
    class_map: dict[PixelValue, ClassName] | None = Field(
        None,
        max_length=MAX_CLASS_MAP_ENTRIES,
        description="segmentation masks format: pixel value -> class name, e.g. "
        "{0: bg, 255: membrane}",
    )
    ignore_index: int = Field(255, ge=0, le=65535, description="label of unlabeled pixels")

    @property
    def is_builtin(self) -> bool:
        return self.uri.startswith("builtin://")


class ModelSpec(_Strict):
    arch: str = Field(min_length=1, max_length=64)
    backbone: str | None = Field(None, max_length=64, description="detection/segmentation")
    weights: str | None = Field(
        None,
        max_length=4096,
        description=(
            "a weights-store name (<arch>/<tag>, see GET /weights), a torchvision weights "
            "enum, a local file under a data root, or models:/<name>@<alias>"
        ),
    )


class AugmentSpec(_Strict):
    random_resized_crop: bool = True
    horizontal_flip: bool = True
    rotation: bool = True
    rotation_degrees: float = Field(10.0, ge=0.0, le=180.0)
    color_jitter: bool = True
    gaussian_noise: bool = False
    random_erasing: bool = False


class TrainSpec(_Strict):
    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Field(
        32, ge=1, le=8192, description="global: split evenly over resources.workers"
    )
    lr: float = Field(1e-3, gt=0.0, le=10.0)
    weight_decay: float = Field(0.05, ge=0.0, le=10.0)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    scheduler: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: float = Field(1.0, ge=0.0, le=1000.0)
    image_size: int = Field(224, ge=8, le=4096)
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    amp: bool = True
    ema: bool = False
    early_stopping_patience: int | None = Field(5, ge=1, le=10_000)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    grad_clip_norm: float | None = Field(None, gt=0.0, le=1e6)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    num_workers: int | None = Field(
        None,
        ge=0,
        le=64,
        description="DataLoader worker processes; null: 1 when the job has 2+ CPUs, else 0",
    )
    loss_weights: dict[LossName, LossWeight] | None = Field(
        None,
        max_length=8,
        description='per-task loss weights: detection "cls", "box"; segmentation "ce", '
        '"dice"; classification has one loss and takes none',
    )
    freeze_backbone_epochs: int | None = Field(
        None,
        ge=0,
        le=10_000,
        description="epochs that train the head alone, the backbone frozen (its BatchNorm "
        "statistics kept); null: 1 with model.weights (0 for one-epoch or multi-worker "
        "jobs), else 0",
    )
    backbone_lr_scale: float | None = Field(
        None,
        gt=0.0,
        le=10.0,
        description="the backbone trains at train.lr times this; null: 0.1 with "
        "model.weights, else 1",
    )


class ResourcesSpec(_Strict):
    """What one job asks of the Ray cluster: `workers` processes, each with `cpus` and
    `gpus`. More than one worker trains data-parallel (DDP) under Ray Train; the scheduler
    counts workers x per-worker resources against the cluster."""

    workers: int = Field(1, ge=1, le=256, description="data-parallel training processes")
    cpus: float = Field(1.0, gt=0.0, le=1024.0, description="per worker")
    gpus: float = Field(0.0, ge=0.0, le=64.0, description="per worker")

    @property
    def total_cpus(self) -> float:
        return self.cpus * self.workers

    @property
    def total_gpus(self) -> float:
        return self.gpus * self.workers


class PromotionSpec(_Strict):
    """The promotion gate: when a registered candidate replaces the champion (both scored
    on the model's frozen evaluation set with the task's main metric)."""

    min_delta: float = Field(0.0, ge=0.0, le=1e6, description="absolute margin to win by")
    min_relative_delta: float = Field(
        0.0, ge=0.0, le=1e6, description="margin as a fraction of the champion's score"
    )
    min_value: float | None = Field(None, description="the candidate must reach this score")
    require_ci: bool = Field(
        False, description="paired bootstrap CI of the difference must be above zero"
    )
    ci_level: float = Field(0.95, ge=0.5, lt=1.0)
    bootstrap_samples: int = Field(2000, ge=100, le=100_000)


class JobSpec(_Strict):
    name: Name
    task: TaskName
    dataset: DatasetSpec
    model: ModelSpec
    train: TrainSpec
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first")
    project: ProjectName = "default"
    max_retries: int = Field(2, ge=0, le=20, description="retries after a worker dies")
    register_as: Name | None = Field(
        None,
        description="MLflow registered model name; absent: the job name; null: do not "
        "register the model",
    )
    promotion: PromotionSpec = Field(default_factory=PromotionSpec)

    @field_validator("task", mode="before")
    @classmethod
    def _known_task(cls, value: object) -> object:
        if isinstance(value, str) and value not in TASK_NAMES:
            raise ValueError(f"unknown task {value!r}; valid tasks: {', '.join(TASK_NAMES)}")
        return value

    @model_validator(mode="after")
    def _global_batch_splits(self) -> JobSpec:
        if self.train.batch_size % self.resources.workers:
            raise ValueError(
                f"train.batch_size ({self.train.batch_size}) is the global batch and must be a "
                f"multiple of resources.workers ({self.resources.workers})"
            )
        return self

    @model_validator(mode="after")
    def _default_registered_name(self) -> JobSpec:
        # absent means "the job name"; an explicit null means "do not register"
        if "register_as" not in self.model_fields_set:
            self.register_as = self.name
        return self

    def canonical_hash(self) -> str:
        """Stable hash of the normalised spec (defaults filled), for idempotent submits."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()
