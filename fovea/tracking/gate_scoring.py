"""How the promotion gate scores models on a frozen evaluation set; called by
fovea.tracking.gate alone (it imports torch and the tasks, which the API process does not).

Each model is scored by its task's own evaluation, main metric only, on the same images at
its own input size, with the loader settings the candidate was trained with; where the
task has per-image scores whose mean is the metric (classification: top-1 hits) they come
too, for the gate's paired bootstrap.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from fovea.tasks import DataBundle, DataConfig, EventSink, Task
from fovea.tasks.data.manifest import dataset_manifest
from fovea.tasks.engine import make_loaders
from fovea.tracking.champion import EvalSet
from fovea.tracking.gate import Candidate, EvalSetRef
from fovea.tracking.registry import download_weights


@dataclass(frozen=True)
class Score:
    value: float  # the task's main metric
    per_image: np.ndarray | None  # [N] scores whose mean is `value`, or None


@dataclass(frozen=True)
class HeldModel:
    """A registered version, loaded for scoring."""

    version: int
    card: Mapping[str, Any]
    model: nn.Module


def eval_set_digest(data_config: DataConfig, *, files: Sequence[str]) -> str:
    """The content hash of evaluation files under the dataset folder (paths + content)."""
    return dataset_manifest(data_config.uri, mode="content", files=files).digest


def eval_set_ref(eval_set: EvalSet, *, data: DataBundle, data_config: DataConfig) -> EvalSetRef:
    """The set as this job scores it: files since deleted are left out and hashed anew."""
    used = len(eval_set.files) - int(data.stats.get("val_files_missing", 0))
    digest_now = None
    if used != len(eval_set.files):
        digest_now = eval_set_digest(data_config, files=data.val_files)
    return EvalSetRef(
        name=eval_set.name,
        digest=eval_set.digest,
        size=len(eval_set.files),
        used=used,
        digest_now=digest_now,
    )


def score_candidate(candidate: Candidate) -> Score:
    model = candidate.task.load_for_inference(candidate.card, candidate.state_dict)
    return _score(candidate.task, model, candidate.data, candidate=candidate)


def load_version(task: Task, *, tracking_uri: str, name: str, version: int) -> HeldModel:
    with tempfile.TemporaryDirectory(prefix="fovea-champion-") as tmp:
        weights, card = download_weights(
            tracking_uri=tracking_uri, uri=f"models:/{name}/{version}", dst=Path(tmp)
        )
        model = task.load_for_inference(card, load_file(str(weights)))
    return HeldModel(version=version, card=card, model=model)


def score_held(held: HeldModel, *, candidate: Candidate, events: EventSink) -> Score:
    """A registered version on the candidate's frozen evaluation images."""
    data, config = candidate.data, candidate.data_config
    size = int(held.card.get("image_size", config.image_size))
    if size != config.image_size:  # each model is scored with its own input size
        data = candidate.task.build_data(
            dataclasses.replace(config, image_size=size), events=events
        )
    return _score(candidate.task, held.model, data, candidate=candidate)


@torch.no_grad()
def _score(task: Task, model: nn.Module, data: DataBundle, *, candidate: Candidate) -> Score:
    device, train = candidate.device, candidate.train
    model = model.to(device).eval()
    _, loader, _ = make_loaders(data, train, device=device)
    result = task.evaluate(model, loader, device=device, class_names=data.class_names)
    per_image = None
    if task.name == "classification":  # top-1 is the mean of per-image hits
        hits = []
        for batch in loader:
            images, labels = task.to_device(batch, device)
            hits.append((model(images).argmax(dim=1) == labels).float().cpu().numpy())
        per_image = np.concatenate(hits)
    return Score(value=float(result.metrics[task.main_metric]), per_image=per_image)
