"""What crosses the worker boundary: a frozen job description in, a result out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from fovea.tasks import AugmentConfig, DataConfig, ModelConfig, TrainConfig
from fovea.tracking.gate import GatePolicy


@dataclass(frozen=True)
class WorkerJob:
    job_id: str
    name: str
    attempt: int
    task: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    cpus: float
    gpus: float
    register_as: str | None
    tracking_uri: str
    artifact_root: str
    experiment: str
    checkpoint_dir: str
    mlflow_run_id: str | None = None  # set on a retry: the attempt continues the same run
    project: str = "default"
    promotion: GatePolicy = field(default_factory=GatePolicy)  # the gate for register_as
    workers: int = 1  # > 1: data-parallel under Ray Train (cpus and gpus are per worker)
    max_retries: int = 0  # a worker group restarts from its checkpoint up to this often
    progress_interval_s: float = 2.0  # progress pushes: as often as the scheduler drains them
    # model.weights named a weights-store entry: its name, and the SHA-256 the worker checks
    # the file (model.weights, resolved by the scheduler) against before loading it
    weights_source: str | None = None
    weights_sha256: str | None = None

    @classmethod
    def from_spec(
        cls,
        spec: dict[str, Any],
        *,
        job_id: str,
        attempt: int,
        tracking_uri: str,
        artifact_root: str,
        experiment: str,
        checkpoint_dir: str,
        mlflow_run_id: str | None,
        data_roots: tuple[str, ...] | None = None,
        progress_interval_s: float = 2.0,
        stored_weights: tuple[str, str] | None = None,
    ) -> WorkerJob:
        """Build from a stored (validated, normalised) JobSpec dict; every file the job
        reads must resolve under `data_roots` (None: no check). `stored_weights`: the
        (file, SHA-256) that the spec's weights-store name resolved to."""
        train = dict(spec["train"])
        aug = train.pop("augment")
        image_size = train.pop("image_size")
        augment = AugmentConfig(
            random_resized_crop=aug["random_resized_crop"],
            horizontal_flip=aug["horizontal_flip"],
            rotation_degrees=aug["rotation_degrees"] if aug["rotation"] else 0.0,
            color_jitter=aug["color_jitter"],
            gaussian_noise=aug["gaussian_noise"],
            random_erasing=aug["random_erasing"],
        )
        uri = spec["dataset"]["uri"]
        data = DataConfig(
            uri=uri,
            format="builtin" if uri.startswith("builtin://") else spec["dataset"]["format"],
            image_size=image_size,
            val_split=spec["dataset"]["val_split"],
            seed=train["seed"],
            augment=augment,
            class_map=_int_keys(spec["dataset"].get("class_map")),
            ignore_index=spec["dataset"].get("ignore_index", 255),
            roots=data_roots,
        )
        return cls(
            job_id=job_id,
            name=spec["name"],
            attempt=attempt,
            task=spec["task"],
            data=data,
            model=ModelConfig(
                arch=spec["model"]["arch"],
                weights=stored_weights[0] if stored_weights else spec["model"].get("weights"),
                backbone=spec["model"].get("backbone"),
            ),
            train=TrainConfig(**train),
            cpus=spec["resources"]["cpus"],
            gpus=spec["resources"]["gpus"],
            register_as=spec.get("register_as"),
            tracking_uri=tracking_uri,
            artifact_root=artifact_root,
            experiment=experiment,
            checkpoint_dir=checkpoint_dir,
            mlflow_run_id=mlflow_run_id,
            project=spec.get("project", "default"),
            promotion=GatePolicy.from_dict(spec.get("promotion")),
            workers=spec["resources"].get("workers", 1),
            max_retries=spec.get("max_retries", 0),
            progress_interval_s=progress_interval_s,
            weights_source=spec["model"].get("weights") if stored_weights else None,
            weights_sha256=stored_weights[1] if stored_weights else None,
        )


def _int_keys(mapping: dict[str, str] | None) -> dict[int, str] | None:
    # JSON object keys are strings: {"255": "membrane"} -> {255: "membrane"}
    return None if mapping is None else {int(k): v for k, v in mapping.items()}


@dataclass
class JobResult:
    status: Literal["succeeded", "failed", "cancelled"]
    error: str | None = None
    # for status "failed": an OutcomeKind value (user_error, internal or infra), see
    # fovea.workers.failures: infra failures (MLflow or storage down) are retried
    failure: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    is_champion: bool = False
    train_images_per_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # wall, fit, mlflow seconds
