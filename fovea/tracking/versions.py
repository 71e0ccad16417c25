"""What monitoring needs from MLflow: which version an alias names, and the version's frozen
drift reference (an artifact of the run that trained it)."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow.artifacts
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, RESOURCE_DOES_NOT_EXIST, ErrorCode

from fovea.tracking._mlflow import error_code, make_client
from fovea.tracking.registry import CHAMPION, TAG_TASK, ModelNotFoundError

REFERENCE_PATH = "monitoring/drift_reference.npz"  # under the training run's artifacts
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,199}$")


@dataclass(frozen=True)
class ResolvedVersion:
    name: str
    version: int
    run_id: str | None
    task: str | None
    aliases: tuple[str, ...]


def resolve_version(
    *, tracking_uri: str, name: str, alias: str | None = None, version: int | None = None
) -> ResolvedVersion:
    """The version `alias` (default champion) or `version` of registered model `name`;
    ModelNotFoundError naming what is missing (a bad name is missing too)."""
    if not _NAME.match(name):
        raise ModelNotFoundError(f"no registered model named {name!r}")
    client = make_client(tracking_uri)
    try:
        registered = client.get_registered_model(name)
        if version is None:
            alias = alias or CHAMPION
            if alias not in registered.aliases:
                known = ", ".join(sorted(registered.aliases)) or "none"
                raise ModelNotFoundError(
                    f"model {name!r} has no alias {alias!r} (its aliases: {known})"
                )
            version = int(registered.aliases[alias])
        found = client.get_model_version(name, str(version))
    except MlflowException as exc:
        if error_code(exc) in _MISSING:
            what = f"version {version} of model {name!r}" if version else f"model {name!r}"
            raise ModelNotFoundError(f"no registered {what}") from exc
        raise
    aliases = tuple(sorted(a for a, v in registered.aliases.items() if int(v) == int(version)))
    run_id = found.run_id or found.tags.get("fovea.run_id")
    return ResolvedVersion(name, int(version), run_id, found.tags.get(TAG_TASK), aliases)


def download_reference(*, tracking_uri: str, run_id: str | None) -> bytes | None:
    """The drift reference logged by the run that trained a version; None if it has none
    (trained before references existed, or not by Fovea)."""
    if run_id is None:
        return None
    with tempfile.TemporaryDirectory(prefix="fovea-reference-") as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=REFERENCE_PATH, dst_path=tmp, tracking_uri=tracking_uri
            )
        except (MlflowException, OSError):
            return None
        return Path(path).read_bytes()


_MISSING = {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)}
