"""Small helpers shared by the logger, the registry and the gate: clients, names,
experiments, the tags every registered Fovea version carries.

Everything takes an explicit tracking URI: the API process may talk to one store while a
test or a worker talks to another, so nothing here reads or sets mlflow's global URI.
"""

from __future__ import annotations

import re
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode

# MLflow's own limits (mlflow.utils.validation); copied so a private module is not imported.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100

# Tags of every version log_model registers (see fovea.tracking.registry)
TAG_TASK = "fovea.task"
TAG_RUN_ID = "fovea.run_id"
TAG_MAIN_METRIC = "fovea.main_metric"
TAG_MAIN_VALUE = "fovea.main_metric_value"
TAG_METRICS = "fovea.metrics"  # JSON object of every eval metric

# MLflow accepts alphanumerics, "_", "-", ".", " ", "/" and (off Windows) ":" in metric and
# param names. ":" is replaced too, so a run stays readable from a Windows client.
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /]")


def make_client(tracking_uri: str) -> MlflowClient:
    # The registry lives in the same store as the runs (sqlite file or tracking server).
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def error_code(exc: MlflowException) -> str:
    return exc.error_code if isinstance(exc.error_code, str) else ErrorCode.Name(exc.error_code)


def sanitize_key(name: str) -> str:
    """A metric or param name MLflow accepts: bad characters become "_", and the name must
    not change under posix path normalisation ("a//b", "/a", "a/", "../a" are refused)."""
    cleaned = _BAD_KEY_CHARS.sub("_", str(name))
    parts = [p if p != ".." else "__" for p in cleaned.split("/") if p not in ("", ".")]
    return "/".join(parts)[:MAX_KEY_LENGTH].rstrip("/") or "_"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "experiment"


def ensure_experiment(client: MlflowClient, *, name: str, artifact_root: str | Path | None) -> str:
    """The id of experiment `name`, created (with its artifacts under `artifact_root`) if new.

    Without an artifact root a sqlite store would put artifacts in ./mlruns of whatever the
    current directory is; a tracking server picks its own location, so pass None there.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if artifact_root is not None:
            root = str(artifact_root)
            if "://" in root:
                location = f"{root.rstrip('/')}/{_slug(name)}"
            else:
                folder = Path(root).expanduser().resolve() / _slug(name)
                folder.mkdir(parents=True, exist_ok=True)
                location = folder.as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            # Two workers starting the first run of an experiment at once: one create wins.
            if error_code(exc) != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        # The name stays taken while the experiment sits in the trash; bring it back.
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def prepare_store(*, tracking_uri: str, experiment: str, artifact_root: str | Path | None) -> str:
    """Create the store's schema (a new sqlite store takes seconds) and the experiment once,
    at platform start-up, so the first job does not pay for it. Returns the experiment id."""
    return ensure_experiment(
        make_client(tracking_uri), name=experiment, artifact_root=artifact_root
    )


def all_versions(client: MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of registered model `name` (all pages)."""
    versions: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(
            filter_string=f"name = '{name}'", max_results=10_000, page_token=token
        )
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def float_tag(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
