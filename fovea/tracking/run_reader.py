"""Reading a finished or running MLflow run back: metric history and a fixed set of artifacts.

What the API serves to the dashboard (GET /jobs/{id}/metrics, /jobs/{id}/artifacts/{name}).
Artifacts are named from ARTIFACTS only: a name maps to a path the worker wrote under the
run (plots/, tables/); no path is ever taken from a request.
"""

from __future__ import annotations

import functools
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException

from fovea.tracking._mlflow import error_code, make_client

# name -> (path under the run's artifacts, media type); what workers.runtime logs
ARTIFACTS: dict[str, tuple[str, str]] = {
    "training_curves.png": ("plots/training_curves.png", "image/png"),
    "confusion_matrix.png": ("plots/confusion_matrix.png", "image/png"),
    "sample_predictions.png": ("plots/sample_predictions.png", "image/png"),
    "pr_curves.png": ("plots/pr_curves.png", "image/png"),
    "val_predictions.png": ("plots/val_predictions.png", "image/png"),
    "per_class_iou.png": ("plots/per_class_iou.png", "image/png"),
    "confusion_matrix.json": ("tables/confusion_matrix.json", "application/json"),
    "per_class_ap.json": ("tables/per_class_ap.json", "application/json"),
    "per_class.json": ("tables/per_class.json", "application/json"),
    "history.json": ("tables/history.json", "application/json"),
    "promotion_decision.json": ("tables/promotion_decision.json", "application/json"),
}
MAX_METRIC_KEYS = 200
# One client per store: building one opens the store (seconds on a busy sqlite file).
_client = functools.lru_cache(maxsize=8)(make_client)


class RunNotFound(LookupError):
    pass


@dataclass(frozen=True)
class MetricPoint:
    step: int
    value: float
    timestamp: int  # ms since the epoch


@dataclass(frozen=True)
class ArtifactInfo:
    name: str
    media_type: str
    size: int | None


def metric_history(
    *, tracking_uri: str, run_id: str, keys: list[str] | None = None
) -> dict[str, list[MetricPoint]]:
    """Every point of each metric of the run (or only `keys`), by step."""
    client = _client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
            raise RunNotFound(f"no MLflow run {run_id}") from None
        raise
    names = sorted(run.data.metrics)
    if keys:
        names = [k for k in names if k in set(keys)]
    out: dict[str, list[MetricPoint]] = {}
    for key in names[:MAX_METRIC_KEYS]:
        points = client.get_metric_history(run_id, key)
        out[key] = sorted(
            (MetricPoint(step=p.step, value=p.value, timestamp=p.timestamp) for p in points),
            key=lambda p: (p.step, p.timestamp),
        )
    return out


def list_artifacts(*, tracking_uri: str, run_id: str) -> list[ArtifactInfo]:
    """The allow-listed artifacts the run has, in ARTIFACTS order."""
    client = _client(tracking_uri)
    present: dict[str, int | None] = {}
    for folder in sorted({path.split("/", 1)[0] for path, _ in ARTIFACTS.values()}):
        for info in client.list_artifacts(run_id, folder):
            present[info.path] = info.file_size
    return [
        ArtifactInfo(name=name, media_type=media, size=present[path])
        for name, (path, media) in ARTIFACTS.items()
        if path in present
    ]


def read_artifact(*, tracking_uri: str, run_id: str, name: str) -> tuple[bytes, str]:
    """The bytes and media type of the allow-listed artifact `name`; KeyError if the name is
    not in ARTIFACTS, FileNotFoundError if the run has none."""
    path, media = ARTIFACTS[name]
    client = _client(tracking_uri)
    with tempfile.TemporaryDirectory(prefix="fovea-artifact-") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError) as exc:
            raise FileNotFoundError(f"run {run_id} has no artifact {name}") from exc
        return Path(local).read_bytes(), media
