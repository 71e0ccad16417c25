"""Job specs for tests: the one digits builder, and a WorkerJob as the scheduler builds it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

# The smallest valid digits job: what most control-plane tests submit (nothing trains it).
DIGITS: dict[str, Any] = {
    "name": "digits",
    "task": "classification",
    "dataset": {"uri": "builtin://digits"},
    "model": {"arch": "smallcnn"},
    "train": {"epochs": 1},
}

# What end-to-end tests train when the job has to run: a couple of seconds an epoch on one
# core (16 px), learning that beats chance by a wide margin. How well smallcnn learns digits
# is tests/tasks/test_classification.py's to prove.
QUICK_TRAIN: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 64,
    "lr": 0.003,
    "image_size": 16,
    "warmup_epochs": 0.5,
    "seed": 0,
    "augment": {"horizontal_flip": False},  # digits are not mirror-symmetric
}


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` laid on top: a dict updates the dict it replaces, key by key
    (recursively); any other value, None included, replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def digits_spec(*, quick: bool = False, **over: Any) -> dict[str, Any]:
    """A digits job spec (a plain dict, as a client sends it): DIGITS with `over` merged in.
    `quick=True` starts from a job meant to run instead: QUICK_TRAIN on one CPU, registered
    only if `over` names a register_as (registering costs seconds)."""
    quick_job = {"train": QUICK_TRAIN, "resources": {"cpus": 1}, "register_as": None}
    return merged(merged(DIGITS, quick_job) if quick else DIGITS, over)


def worker_job(
    home: Path, spec: dict[str, Any], *, experiment: str, progress_s: float = 0.5
) -> Any:
    """A WorkerJob as the scheduler would hand it to RayBackend.submit: job id = the spec's
    name, MLflow (sqlite) and checkpoints under `home`."""
    from fovea.platform.jobs.spec import JobSpec
    from fovea.workers.types import WorkerJob

    name = spec["name"]
    return WorkerJob.from_spec(
        JobSpec.model_validate(spec).model_dump(mode="json"),
        job_id=name,
        attempt=1,
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        artifact_root=str(home / "mlartifacts"),
        experiment=experiment,
        checkpoint_dir=str(home / "checkpoints" / name),
        mlflow_run_id=None,
        progress_interval_s=progress_s,
    )
