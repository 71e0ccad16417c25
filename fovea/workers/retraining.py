"""The retraining side of a job inside the Ray worker.

- What it trained on: the dataset manifest (fovea.tasks.data.manifest), logged as an MLflow
  dataset input, a `dataset_fingerprint` job event, and a tag of the registered version
  (the scheduler compares it to skip retrains on unchanged data).
- The frozen evaluation set of its registered model: a job that registers into a model
  which has one trains without those files and is validated on them (DataConfig.val_files).
- The promotion gate's scoring: candidate and champion evaluated on the same frozen split
  with the task's main metric (and per-image scores for the bootstrap CI where the task
  has them), then `fovea.tracking.gate.decide`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from fovea.tasks import DataBundle, DataConfig, EventSink, Task, TrainConfig
from fovea.tasks.data.manifest import Manifest, dataset_manifest
from fovea.tasks.engine import make_loaders
from fovea.tracking.champion import (
    TAG_DATASET,
    EvalSet,
    freeze_eval_set,
    load_eval_set,
)
from fovea.tracking.gate import EvalSetRef, GateDecision, decide, not_comparable
from fovea.tracking.logger import RunLogger
from fovea.tracking.registry import ModelRecord, download_weights
from fovea.workers.types import WorkerJob

log = logging.getLogger(__name__)


def record_dataset(*, job: WorkerJob, logger: RunLogger, events: EventSink) -> Manifest:
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


def dataset_tags(manifest: Manifest) -> dict[str, str]:
    """The registered version's record of what it was trained on."""
    summary = {k: getattr(manifest, k) for k in ("digest", "mode", "files", "bytes", "uri")}
    return {TAG_DATASET: json.dumps(summary, sort_keys=True)}


def frozen_split(*, job: WorkerJob, logger: RunLogger) -> tuple[DataConfig, EvalSet | None]:
    """The job's data config, with the registered model's frozen evaluation set (if it has
    one) as its validation split."""
    if not job.register_as:
        return job.data, None
    eval_set = load_eval_set(logger.client, name=job.register_as)
    if eval_set is None:
        return job.data, None
    return dataclasses.replace(job.data, val_files=frozenset(eval_set.files)), eval_set


def make_decider(
    *,
    job: WorkerJob,
    task: Task,
    data: DataBundle,
    data_config: DataConfig,
    card: dict[str, Any],
    state_dict: dict[str, torch.Tensor],
    device: torch.device,
    logger: RunLogger,
    events: EventSink,
) -> Callable[[int, int | None], GateDecision]:
    """The promotion gate for this job's candidate, run by the registry in version order."""
    assert job.register_as is not None
    name = job.register_as
    policy = job.promotion
    scorer = _Scorer(task=task, device=device, train=job.train)

    def decider(version: int, champion: int | None) -> GateDecision:
        eval_set = load_eval_set(logger.client, name=name)  # in turn: another may have frozen it
        if eval_set is None:
            eval_set = freeze_eval_set(
                logger.client,
                name=name,
                version=version,
                run_id=logger.run_id,
                files=data.val_files,
                digest=dataset_manifest(
                    data_config.uri, mode="content", files=data.val_files
                ).digest,
            )
            events(
                "eval_set_frozen",
                f"froze {eval_set.name}: {len(eval_set.files)} validation images",
                {"name": eval_set.name, "digest": eval_set.digest, "size": len(eval_set.files)},
            )
        ref = _reference(eval_set, data=data, data_config=data_config)
        candidate_model = task.load_for_inference(card, state_dict)
        score, per_image = scorer(candidate_model, data)
        held_out = set(eval_set.files)
        if not set(data.val_files) <= held_out or len(data.val_files) != ref.used:
            return not_comparable(
                metric=task.main_metric,
                candidate=score,
                champion_version=champion,
                reason=f"this job did not hold out {eval_set.name} (it started before the set "
                "was frozen, or trained on some of its files)",
                policy=policy,
                eval_set=ref,
            )
        if champion is None:
            return decide(
                metric=task.main_metric, candidate=score, champion=None, policy=policy, eval_set=ref
            )
        with tempfile.TemporaryDirectory(prefix="fovea-champion-") as tmp:
            weights, champion_card = download_weights(
                tracking_uri=logger.tracking_uri, uri=f"models:/{name}/{champion}", dst=Path(tmp)
            )
            champion_model = task.load_for_inference(champion_card, load_file(str(weights)))
        if list(champion_card.get("class_names", [])) != list(data.class_names):
            return not_comparable(
                metric=task.main_metric,
                candidate=score,
                champion_version=champion,
                reason=f"the classes changed (champion v{champion}: "
                f"{champion_card.get('class_names')}, candidate: {data.class_names})",
                policy=policy,
                eval_set=ref,
            )
        champion_data = data
        if int(champion_card.get("image_size", data_config.image_size)) != data_config.image_size:
            # Each model is scored with its own input size on the same images.
            sized = dataclasses.replace(data_config, image_size=int(champion_card["image_size"]))
            champion_data = task.build_data(sized, events=events)
        events("gate", f"scoring champion v{champion} on {ref.name} ({ref.used} images)")
        champion_score, champion_per_image = scorer(champion_model, champion_data)
        return decide(
            metric=task.main_metric,
            candidate=score,
            champion=champion_score,
            champion_version=champion,
            policy=policy,
            eval_set=ref,
            candidate_per_image=per_image,
            champion_per_image=champion_per_image,
        )

    return decider


def record_decision(*, record: ModelRecord, logger: RunLogger, events: EventSink) -> None:
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


def _reference(eval_set: EvalSet, *, data: DataBundle, data_config: DataConfig) -> EvalSetRef:
    used = len(eval_set.files) - int(data.stats.get("val_files_missing", 0))
    digest_now = None
    if used != len(eval_set.files):
        digest_now = dataset_manifest(data_config.uri, mode="content", files=data.val_files).digest
    return EvalSetRef(
        name=eval_set.name,
        digest=eval_set.digest,
        size=len(eval_set.files),
        used=used,
        digest_now=digest_now,
    )


@dataclasses.dataclass
class _Scorer:
    task: Task
    device: torch.device
    train: TrainConfig  # the loader settings training used

    @torch.no_grad()
    def __call__(self, model: nn.Module, data: DataBundle) -> tuple[float, np.ndarray | None]:
        """(main metric on data.val, per-image scores whose mean it is, or None)."""
        model = model.to(self.device).eval()
        _, loader, _ = make_loaders(data, self.train, device=self.device)
        result = self.task.evaluate(model, loader, device=self.device, class_names=data.class_names)
        per_image = None
        if self.task.name == "classification":  # top-1 is the mean of per-image hits
            hits = []
            for batch in loader:
                images, labels = self.task.to_device(batch, self.device)
                hits.append((model(images).argmax(dim=1) == labels).float().cpu().numpy())
            per_image = np.concatenate(hits)
        return float(result.metrics[self.task.main_metric]), per_image
