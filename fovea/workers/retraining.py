"""The retraining side of a job inside the Ray worker.

- What it trained on: the dataset manifest (fovea.tasks.data.manifest), logged as an MLflow
  dataset input, a `dataset_fingerprint` job event, and a tag of the registered version
  (the scheduler compares it to skip retrains on unchanged data).
- The frozen evaluation set of its registered model: a job that registers into a model
  which has one trains without those files and is validated on them (DataConfig.val_files).
- The promotion gate's decision (fovea.tracking.gate.FrozenSetGate), recorded in the run
  and the job's events.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from fovea.tasks import DataConfig, EventSink
from fovea.tasks.data.manifest import Manifest, dataset_manifest
from fovea.tracking.champion import (
    TAG_DATASET,
    EvalSet,
    load_eval_set,
)
from fovea.tracking.logger import RunLogger
from fovea.tracking.registry import ModelRecord
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
