"""A job's life inside the Ray worker, in three phases (runtime._run_job strings them).

prepare  the weights to start from (a registered model's: downloaded), the dataset manifest
         (what the job trains on: an MLflow dataset input, a `dataset_fingerprint` event,
         and later a tag of the registered version, which the scheduler compares to skip
         retrains on unchanged data), the evaluation set (a job that registers into a model
         which has a frozen one trains without those files and is validated on them:
         DataConfig.val_files), the data, the device.
train    the initial model (seeded by train.seed) and the fit, with its MLflow timings.
publish  the run's outputs (final metrics, curves, figures, tables), the version's drift
         reference, the registered model and the promotion gate's decision on it
         (fovea.tracking.gate), in the run and the job's events.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fovea.tasks import DataBundle, DataConfig, EventSink, ModelConfig, Task, UserError
from fovea.tasks.data.manifest import Manifest, dataset_manifest
from fovea.tasks.engine import FitResult, Reporter, select_device
from fovea.tasks.finetune import with_defaults
from fovea.tasks.plots import training_curves_png
from fovea.tasks.weights import load_report
from fovea.tracking.champion import TAG_DATASET, load_eval_set
from fovea.tracking.gate import Candidate, FrozenSetGate
from fovea.tracking.logger import RunLogger
from fovea.tracking.registry import ModelNotFoundError, ModelRecord, download_weights, log_model
from fovea.workers.types import WorkerJob


@dataclass(frozen=True)
class Prepared:
    task: Task
    model_config: ModelConfig  # weights, if any, a local file
    manifest: Manifest  # of the dataset as the job found it
    data_config: DataConfig  # the job's, validated on the frozen evaluation set if any
    data: DataBundle
    device: torch.device


@dataclass(frozen=True)
class Trained:
    result: FitResult
    fit_s: float
    mlflow_fit_s: float  # MLflow's seconds during the fit (on its own thread)
    mlflow_blocking_fit_s: float  # of which training waited for
    mlflow_cpu_fit_s: float


@dataclass(frozen=True)
class Published:
    record: ModelRecord | None  # None: the job registers no model


def prepare(job: WorkerJob, *, task: Task, logger: RunLogger, events: EventSink) -> Prepared:
    model_config = _resolve_weights(job)
    manifest = _record_dataset(job, logger=logger, events=events)
    data_config = _with_frozen_eval_set(job, logger=logger)
    data = task.build_data(data_config, events=events)
    events(
        "data",
        f"{len(data.train)} training and {len(data.val)} validation images, "
        f"{len(data.class_names)} classes",
        {**data.stats, "train": len(data.train), "val": len(data.val)},
    )
    return Prepared(
        task=task,
        model_config=model_config,
        manifest=manifest,
        data_config=data_config,
        data=data,
        device=select_device("cuda" if job.gpus > 0 and job.workers == 1 else "cpu"),
    )


def train(
    job: WorkerJob,
    prepared: Prepared,
    *,
    logger: RunLogger,
    reporter: Reporter,
    fit_fn: Callable[..., FitResult],
) -> Trained:
    task, data = prepared.task, prepared.data
    config, filled = with_defaults(
        job.train, pretrained=job.model.weights is not None, workers=job.workers
    )
    if filled and job.model.weights is not None:
        shown = ", ".join(f"{k}={v:g}" for k, v in filled.items())
        reporter.event("fine_tune_defaults", f"fine-tuning defaults applied: {shown}", filled)
    torch.manual_seed(job.train.seed)  # the initial weights too follow train.seed
    model = task.build_model(prepared.model_config, num_classes=len(data.class_names))
    _record_start(job, model, class_names=data.class_names, logger=logger, reporter=reporter)
    started = time.monotonic()
    blocking, mlflow, mlflow_cpu = _mlflow_seconds(logger)
    result = fit_fn(
        task,
        model,
        data,
        config,
        device=prepared.device,
        checkpoint_dir=Path(job.checkpoint_dir),
        reporter=reporter,
    )
    blocking_after, mlflow_after, mlflow_cpu_after = _mlflow_seconds(logger)
    return Trained(
        result=result,
        fit_s=time.monotonic() - started,
        mlflow_fit_s=mlflow_after - mlflow,
        mlflow_blocking_fit_s=blocking_after - blocking,
        mlflow_cpu_fit_s=mlflow_cpu_after - mlflow_cpu,
    )


def publish(
    job: WorkerJob, prepared: Prepared, trained: Trained, *, logger: RunLogger, events: EventSink
) -> Published:
    result = trained.result
    _log_outputs(result, logger=logger)
    if not job.register_as:
        return Published(record=None)
    task, data = prepared.task, prepared.data
    card = task.model_card(prepared.model_config, job.data, class_names=data.class_names)
    _log_reference(
        job, prepared, card=card, state_dict=result.state_dict, logger=logger, events=events
    )
    gate = FrozenSetGate(
        candidate=Candidate(
            task=task,
            card=card,
            state_dict=result.state_dict,
            data=data,
            data_config=prepared.data_config,
            train=job.train,
            device=prepared.device,
            run_id=logger.run_id,
        ),
        policy=job.promotion,
        tracking_uri=job.tracking_uri,
        events=events,
    )
    record = log_model(
        logger_or_run_id=logger,
        task_name=job.task,
        card=card,
        state_dict=result.state_dict,
        registered_name=job.register_as,
        metrics=result.metrics,
        main_metric=task.main_metric,
        decider=gate,
        version_tags=_dataset_tags(prepared.manifest),
    )
    _record_decision(record, logger=logger, events=events)
    events(
        "model_registered",
        f"registered {record.name} v{record.version}"
        + (" as champion" if record.is_champion else " (champion unchanged)"),
        {"name": record.name, "version": str(record.version), "champion": record.is_champion},
    )
    return Published(record=record)


# -- prepare ---------------------------------------------------------------------------------


def _resolve_weights(job: WorkerJob) -> ModelConfig:
    """models:/<name>@<alias> -> a local weights file the task can load; a weights-store
    file (resolved by the scheduler) is first checked against its SHA-256."""
    weights = job.model.weights
    if job.weights_sha256 is not None and weights is not None:
        _check_stored_file(Path(weights), name=job.weights_source, sha256=job.weights_sha256)
    if not weights or not weights.startswith("models:/"):
        return job.model
    dst = Path(job.checkpoint_dir) / "init"
    try:
        path, _card = download_weights(tracking_uri=job.tracking_uri, uri=weights, dst=dst)
    except ModelNotFoundError as exc:
        raise UserError(f"model.weights: {exc}") from None
    return dataclasses.replace(job.model, weights=str(path))  # keeps arch and backbone


def _check_stored_file(path: Path, *, name: str | None, sha256: str) -> None:
    if not path.is_file():
        raise UserError(f"model.weights {name}: removed from the weights store since submit")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    if digest.hexdigest() != sha256:
        raise UserError(
            f"model.weights {name}: the stored file {path} changed since submit "
            f"(SHA-256 {digest.hexdigest()[:12]}..., expected {sha256[:12]}...)"
        )


def _record_dataset(job: WorkerJob, *, logger: RunLogger, events: EventSink) -> Manifest:
    """Fingerprint the dataset the job is about to read, in MLflow and the job's events."""
    manifest = dataset_manifest(job.data.uri)
    logger.log_dataset(
        name=Path(job.data.uri).name or job.data.uri,
        digest=manifest.digest,
        source=job.data.uri,
        profile=manifest.as_dict(),
    )
    events(
        "dataset_fingerprint",
        f"dataset {manifest.digest[:19]}...: {manifest.files} files, {manifest.bytes} bytes "
        f"({manifest.mode} manifest)",
        manifest.as_dict(),
    )
    return manifest


def _with_frozen_eval_set(job: WorkerJob, *, logger: RunLogger) -> DataConfig:
    """The job's data config, with the registered model's frozen evaluation set (if it has
    one) as its validation split."""
    if not job.register_as:
        return job.data
    eval_set = load_eval_set(logger.client, name=job.register_as)
    if eval_set is None:
        return job.data
    return dataclasses.replace(job.data, val_files=frozenset(eval_set.files))


# -- train -----------------------------------------------------------------------------------


def _record_start(
    job: WorkerJob,
    model: torch.nn.Module,
    *,
    class_names: list[str],
    logger: RunLogger,
    reporter: Reporter,
) -> None:
    """What the weights file gave the model, and the class mapping of its new head, in the
    run (class_mapping.json, tags) and the job's events."""
    report = load_report(model)
    if report is None:
        return
    head = "re-initialised" if report.fresh else ("kept" if report.part == "model" else "new")
    body = {
        "weights": job.weights_source or job.model.weights,
        **report.as_dict(),
        "head": head,
        "classes": dict(enumerate(class_names)),
    }
    logger.log_json("class_mapping.json", body)
    logger.set_tags({"fovea.weights": str(body["weights"]), "fovea.head": head})
    reporter.event(
        "weights_loaded",
        f"{report.loaded} tensors of {body['weights']} loaded into the {report.part}"
        + (f", {len(report.dropped)} of its classifier left out" if report.dropped else "")
        + f"; head {head} for {len(class_names)} classes",
        body,
    )


def _mlflow_seconds(logger: RunLogger) -> tuple[float, float, float]:
    return logger.blocking_seconds, logger.mlflow_seconds, logger.mlflow_cpu_seconds


# -- publish ---------------------------------------------------------------------------------


def _log_outputs(result: FitResult, *, logger: RunLogger) -> None:
    logger.log_metrics({f"final/{k}": v for k, v in result.metrics.items()}, step=result.best_epoch)
    logger.log_figure_bytes("training_curves.png", training_curves_png(result.history))
    for name, png in result.eval.figures.items():
        logger.log_figure_bytes(name, png)
    for name, table in result.eval.tables.items():
        logger.log_json(name, table)
    logger.log_json("history.json", result.history)


def _log_reference(
    job: WorkerJob,
    prepared: Prepared,
    *,
    card: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    logger: RunLogger,
    events: EventSink,
) -> None:
    """The version's frozen drift reference: the trained model's profile of validation
    images, by the same code that profiles live images (fovea/tasks/profile.py)."""
    from fovea.tasks.profile import reference_images, reference_profile
    from fovea.tracking.versions import REFERENCE_PATH

    started = time.monotonic()
    images = reference_images(job.data, prepared.data)
    reference = reference_profile(prepared.task, card, state_dict, images)
    folder, _, name = REFERENCE_PATH.rpartition("/")
    logger.log_bytes(name, reference.to_npz(), artifact_path=folder)
    events(
        "drift_reference",
        f"drift reference: {len(images)} validation images, {reference.embeddings.shape[1]} "
        f"embedding components keep {reference.explained_variance:.0%} of the variance",
        {"images": len(images), "seconds": round(time.monotonic() - started, 2)},
    )


def _dataset_tags(manifest: Manifest) -> dict[str, str]:
    """The registered version's record of what it was trained on."""
    summary = {k: getattr(manifest, k) for k in ("digest", "mode", "files", "bytes", "uri")}
    return {TAG_DATASET: json.dumps(summary, sort_keys=True)}


def _record_decision(record: ModelRecord, *, logger: RunLogger, events: EventSink) -> None:
    """The gate's decision on the candidate's run and in the job's events."""
    decision = record.decision
    if decision is None:
        return
    body = decision.as_dict()
    logger.log_json("promotion_decision.json", body)
    numbers = {"candidate": decision.candidate, "champion": decision.champion}
    numbers["delta"] = decision.delta
    logger.log_metrics({f"gate/{k}": v for k, v in numbers.items() if v is not None}, step=0)
    logger.set_tags({"fovea.gate.promoted": str(decision.promote).lower()})
    events(
        "promotion_decision",
        f"{record.name} v{record.version} {decision.summary}",
        {**body, "version": record.version},
    )
