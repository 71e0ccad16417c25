"""Logging, registering and finding Fovea models in the MLflow model registry.

A model is logged as a pyfunc (fovea.tracking.pyfunc.FoveaModel) holding `card.json` and
`weights.safetensors`; each registered version carries its run id and metrics as tags.
Whether `champion` moves to a new version is the promotion gate's decision
(fovea.tracking.gate), which the caller passes in; this module only runs it in turn.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import re
import tempfile
import warnings
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.artifacts
import mlflow.pyfunc
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

from fovea.tracking._mlflow import (
    TAG_MAIN_METRIC,
    TAG_MAIN_VALUE,
    TAG_METRICS,
    TAG_RUN_ID,
    TAG_TASK,
    all_versions,
    error_code,
    float_tag,
    make_client,
)
from fovea.tracking.champion import CHAMPION, TAG_DECISION, decide_in_turn
from fovea.tracking.gate import Decider, GateDecision
from fovea.tracking.logger import RunLogger
from fovea.tracking.model_views import ModelDetail, ModelSummary, ModelVersionInfo
from fovea.tracking.pyfunc import ARTIFACT_CARD, ARTIFACT_WEIGHTS, signature_for

if TYPE_CHECKING:
    # torch only where weights are written: the API process lists models without it.
    import torch

_log = logging.getLogger(__name__)

CARD_FILE = "card.json"
WEIGHTS_FILE = "weights.safetensors"

_MAX_MODEL_TAG_LENGTH = 100_000  # MLflow's limit for model version tag values
# Distributions the pyfunc needs, pinned to what is installed: loading happens in the
# environment that logged the model, and a pinned list means MLflow neither infers
# requirements (it would load the model in a subprocess) nor warns about mismatches.
_PYFUNC_ENTRY = Path(__file__).with_name("_pyfunc_entry.py")
_REQUIREMENTS = ("fovea", "mlflow", "torch", "torchvision", "safetensors", "numpy", "pandas")


class ModelNotFoundError(ValueError):
    """A registered model, version or alias that does not exist (or is not a Fovea model)."""


@dataclass(frozen=True)
class ModelRecord:
    """What log_model did."""

    name: str | None  # registered name; None when only logged under the run
    version: int | None
    model_uri: str  # "models:/<name>/<version>", or "models:/<model id>" when not registered
    model_id: str  # MLflow 3 logged-model id
    run_id: str
    main_metric: str
    main_metric_value: float
    is_champion: bool
    champion_version: int | None  # after this registration
    previous_champion_version: int | None
    previous_champion_metric: float | None  # its score in the decision
    decision: GateDecision | None = None  # None when not registered


# -- logging and registering ------------------------------------------------------------


def log_model(
    *,
    logger_or_run_id: RunLogger | str,
    task_name: str,
    card: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    registered_name: str | None,
    metrics: Mapping[str, float],
    main_metric: str,
    tracking_uri: str | None = None,
    decider: Decider | None = None,
    version_tags: Mapping[str, str] | None = None,
) -> ModelRecord:
    """Log the model under the run, register it as a new version of `registered_name` (if
    given) and let the promotion gate decide whether `champion` moves to it.

    `decider` is the gate, required with `registered_name`: a training job's
    gate.FrozenSetGate, or gate.on_validation_metrics where there is nothing to score on.
    It runs once every lower version is decided (champion.decide_in_turn). `version_tags`
    are added to the new version (e.g. the dataset manifest). `tracking_uri` is needed only
    when a bare run id is passed.
    """
    if isinstance(logger_or_run_id, RunLogger):
        client, run_id = logger_or_run_id.client, logger_or_run_id.run_id
        timing: AbstractContextManager[None] = logger_or_run_id.timed()
    else:
        if tracking_uri is None:
            raise ValueError("tracking_uri is required when logger_or_run_id is a run id")
        client, run_id, timing = make_client(tracking_uri), logger_or_run_id, nullcontext()
    if card.get("task", task_name) != task_name:
        raise ValueError(f"card is for task {card['task']!r}, not {task_name!r}")
    if main_metric not in metrics:
        raise ValueError(f"main metric {main_metric!r} not in metrics {sorted(metrics)}")
    if registered_name is not None and (
        not registered_name.strip() or any(c in registered_name for c in "/:'\"")
    ):
        raise ValueError(f"registered model name {registered_name!r} is empty or has / : ' \"")
    if registered_name is not None and decider is None:
        raise ValueError("registering a model needs a decider (see fovea.tracking.gate)")
    card = {**card, "task": task_name}
    main_value = float(metrics[main_metric])

    with timing:
        if registered_name is not None:
            _check_same_task(client, name=registered_name, task_name=task_name)
        run = client.get_run(run_id)
        logged = client.create_logged_model(
            run.info.experiment_id,
            name="model",
            source_run_id=run_id,
            tags={TAG_TASK: task_name, TAG_MAIN_METRIC: main_metric},
            model_type=task_name,
        )
        try:
            client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
            with tempfile.TemporaryDirectory(prefix="fovea-model-") as tmp:
                local = Path(tmp) / "model"
                _save_pyfunc(
                    path=local,
                    card=card,
                    state_dict=state_dict,
                    mlflow_model=Model(
                        artifact_path=logged.artifact_location,
                        model_uuid=logged.model_id,
                        run_id=run_id,
                        model_id=logged.model_id,
                    ),
                    work_dir=Path(tmp),
                )
                client.log_model_artifacts(logged.model_id, str(local))
        except BaseException:
            client.finalize_logged_model(logged.model_id, "FAILED")
            raise
        client.finalize_logged_model(logged.model_id, "READY")

        version = previous = decision = None
        if registered_name is not None:
            assert decider is not None
            version = _register(
                client,
                name=registered_name,
                task_name=task_name,
                source=logged.artifact_location,
                model_id=logged.model_id,
                run_id=run_id,
                tags={
                    TAG_TASK: task_name,
                    TAG_RUN_ID: run_id,
                    TAG_MAIN_METRIC: main_metric,
                    TAG_MAIN_VALUE: repr(main_value),
                    TAG_METRICS: _metrics_tag(metrics, main_metric=main_metric),
                    TAG_DECISION: "pending",
                    **(version_tags or {}),
                },
            )
            previous, decision = decide_in_turn(
                client, name=registered_name, version=version, decider=decider
            )
    promoted = decision is not None and decision.promote
    return ModelRecord(
        name=registered_name,
        version=version,
        model_uri=(
            f"models:/{logged.model_id}"
            if version is None
            else f"models:/{registered_name}/{version}"
        ),
        model_id=logged.model_id,
        run_id=run_id,
        main_metric=main_metric,
        main_metric_value=main_value,
        is_champion=promoted,
        champion_version=version if promoted else previous,
        previous_champion_version=previous,
        previous_champion_metric=decision.champion if decision is not None else None,
        decision=decision,
    )


def _save_pyfunc(
    *,
    path: Path,
    card: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    mlflow_model: Model,
    work_dir: Path,
) -> None:
    from safetensors.torch import save_file

    weights = work_dir / WEIGHTS_FILE
    save_file(_plain_tensors(state_dict), str(weights), metadata={"task": str(card["task"])})
    card_path = work_dir / CARD_FILE
    card_path.write_text(json.dumps(card, indent=2, sort_keys=True), encoding="utf-8")
    with warnings.catch_warnings():
        # An input example would make MLflow load the model and predict at logging time (slow,
        # and the reason it nags); the signature documents outputs and params instead.
        warnings.filterwarnings("ignore", message=".*input example was not provided")
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(_PYFUNC_ENTRY),
            artifacts={ARTIFACT_CARD: str(card_path), ARTIFACT_WEIGHTS: str(weights)},
            signature=signature_for(str(card["task"])),
            # fovea is an installed dependency, not copied code: a copy under the model would
            # shadow the installed package and drift from it.
            code_paths=None,
            pip_requirements=_pip_requirements(),
            metadata={"fovea_task": str(card["task"]), "input": "uint8 images NHWC, NHW or HWC"},
            mlflow_model=mlflow_model,
        )


def _plain_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share storage (tied weights, views of one buffer):
    # every tensor after the first on a storage gets its own copy.
    seen: set[int] = set()
    tensors = {}
    for key, value in state_dict.items():
        tensor = value.detach().to("cpu").contiguous()
        storage = tensor.untyped_storage().data_ptr()
        if storage in seen:
            tensor = tensor.clone()
        seen.add(tensor.untyped_storage().data_ptr())
        tensors[key] = tensor
    return tensors


def _pip_requirements() -> list[str]:
    requirements = []
    for dist in _REQUIREMENTS:
        try:
            version = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        requirements.append(f"{dist}=={version.split('+')[0]}")  # no local tag like +cu128
    return requirements


def _metrics_tag(metrics: Mapping[str, float], *, main_metric: str) -> str:
    values = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
    text = json.dumps(values, sort_keys=True)
    if len(text) > _MAX_MODEL_TAG_LENGTH:  # e.g. per-class metrics of thousands of classes
        text = json.dumps({main_metric: values[main_metric]})
    return text


def _check_same_task(client: MlflowClient, *, name: str, task_name: str) -> None:
    try:
        existing = client.get_registered_model(name)
    except MlflowException as exc:
        if error_code(exc) == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return
        raise
    other = existing.tags.get(TAG_TASK)
    if other is not None and other != task_name:
        raise ValueError(f"registered model {name!r} holds {other} models, not {task_name}")


def _register(
    client: MlflowClient,
    *,
    name: str,
    task_name: str,
    source: str,
    model_id: str,
    run_id: str,
    tags: dict[str, str],
) -> int:
    try:
        client.create_registered_model(name, tags={TAG_TASK: task_name})
    except MlflowException as exc:
        if error_code(exc) != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    # The source is the logged model's storage location, not "models:/<model id>": the
    # sqlite registry resolves the latter through a client on mlflow's *global* tracking
    # URI, which is not the store this function was given.
    version = client.create_model_version(
        name, source=source, run_id=run_id, tags=tags, model_id=model_id
    )
    return int(version.version)


# -- reading ----------------------------------------------------------------------------


def list_models(*, tracking_uri: str) -> list[ModelSummary]:
    """Every registered model, by name, with its champion's main metric."""
    client = make_client(tracking_uri)
    summaries = []
    token = None
    while True:
        page = client.search_registered_models(max_results=1000, page_token=token)
        for rm in page:
            champion = rm.aliases.get(CHAMPION)
            main_metric = champion_metric = None
            if champion is not None:
                tags = client.get_model_version(rm.name, str(champion)).tags
                main_metric = tags.get(TAG_MAIN_METRIC)
                champion_metric = float_tag(tags.get(TAG_MAIN_VALUE))
            versions = [int(v.version) for v in rm.latest_versions or []]
            summaries.append(
                ModelSummary(
                    name=rm.name,
                    task=rm.tags.get(TAG_TASK),
                    description=rm.description or None,
                    created_at=_iso(rm.creation_timestamp),
                    updated_at=_iso(rm.last_updated_timestamp),
                    latest_version=max(versions) if versions else None,
                    champion_version=int(champion) if champion is not None else None,
                    main_metric=main_metric,
                    champion_metric=champion_metric,
                    aliases={a: int(v) for a, v in rm.aliases.items()},
                )
            )
        token = page.token
        if not token:
            return sorted(summaries, key=lambda s: s.name)


def get_model(*, tracking_uri: str, name: str) -> ModelDetail | None:
    """A registered model with all its versions (newest first), or None if unknown."""
    client = make_client(tracking_uri)
    try:
        rm = client.get_registered_model(name)
    except MlflowException as exc:
        if error_code(exc) in _NO_SUCH_NAME:  # "a:b" cannot name a model: none is there
            return None
        raise
    champion = rm.aliases.get(CHAMPION)
    versions = sorted(all_versions(client, name), key=lambda v: int(v.version), reverse=True)
    return ModelDetail(
        name=rm.name,
        task=rm.tags.get(TAG_TASK),
        description=rm.description or None,
        created_at=_iso(rm.creation_timestamp),
        updated_at=_iso(rm.last_updated_timestamp),
        champion_version=int(champion) if champion is not None else None,
        aliases={a: int(v) for a, v in rm.aliases.items()},
        versions=[_version_info(v, aliases=rm.aliases) for v in versions],
    )


def _version_info(mv: ModelVersion, *, aliases: Mapping[str, Any]) -> ModelVersionInfo:
    # Searched versions come without their aliases (sqlite store); the model's map has them.
    own = sorted(a for a, v in aliases.items() if int(v) == int(mv.version))
    try:
        metrics = json.loads(mv.tags.get(TAG_METRICS, "{}"))
    except json.JSONDecodeError:
        metrics = {}
    return ModelVersionInfo(
        version=int(mv.version),
        run_id=mv.run_id or mv.tags.get(TAG_RUN_ID),
        created_at=_iso(mv.creation_timestamp),
        status=str(mv.status),
        aliases=own,
        is_champion=CHAMPION in own,
        task=mv.tags.get(TAG_TASK),
        main_metric=mv.tags.get(TAG_MAIN_METRIC),
        main_metric_value=float_tag(mv.tags.get(TAG_MAIN_VALUE)),
        metrics=metrics if isinstance(metrics, dict) else {},
        champion_decision=mv.tags.get(TAG_DECISION),
        source=mv.source,
    )


# -- fetching weights -------------------------------------------------------------------

# MLflow's answers for a name no model has, or none could have ("a:b", "..")
_NO_SUCH_NAME = frozenset(
    {ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), ErrorCode.Name(INVALID_PARAMETER_VALUE)}
)
_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+|latest))$")


def resolve_model_uri(*, tracking_uri: str, uri: str) -> tuple[str, str]:
    """(name, version) that "models:/<name>@<alias>", "models:/<name>/<version>" or
    ".../latest" names. Raises ModelNotFoundError naming the model, alias or version that
    is missing (or the URI or name that cannot be one)."""
    match = _URI.match(uri)
    if match is None:
        raise ModelNotFoundError(
            f"not a model URI {uri!r}; expected models:/<name>@<alias> or models:/<name>/<version>"
        )
    name, alias, ref = match["name"], match["alias"], match["version"]
    client = make_client(tracking_uri)
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        if error_code(exc) in _NO_SUCH_NAME:
            raise ModelNotFoundError(f"registered model {name!r} not found ({uri})") from exc
        raise
    if alias is not None:
        if alias not in registered.aliases:
            known = ", ".join(sorted(registered.aliases)) or "none"
            raise ModelNotFoundError(
                f"model {name!r} has no alias {alias!r} (its aliases: {known})"
            )
        version = str(registered.aliases[alias])
    elif ref == "latest":
        versions = [int(v.version) for v in all_versions(client, name)]
        if not versions:
            raise ModelNotFoundError(f"model {name!r} has no versions")
        version = str(max(versions))
    else:
        version = str(int(ref))
        try:
            client.get_model_version(name, version)
        except MlflowException as exc:
            if error_code(exc) == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise ModelNotFoundError(f"model {name!r} has no version {version}") from exc
            raise
    return name, version


def download_weights(*, tracking_uri: str, uri: str, dst: Path) -> tuple[Path, dict[str, Any]]:
    """The weights file and card of the model version `uri` names (see resolve_model_uri),
    downloaded into folder `dst`; for fine-tuning from a registered model. Raises
    ModelNotFoundError naming the model, alias or version that is missing."""
    name, version = resolve_model_uri(tracking_uri=tracking_uri, uri=uri)
    client = make_client(tracking_uri)
    base = client.get_model_version_download_uri(name, version).rstrip("/")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    local: dict[str, Path] = {}
    for file in (CARD_FILE, WEIGHTS_FILE):
        try:
            local[file] = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{base}/artifacts/{file}",
                    dst_path=str(dst),
                    tracking_uri=tracking_uri,
                )
            )
        except (MlflowException, OSError) as exc:
            raise ModelNotFoundError(
                f"model {name!r} version {version} is not a Fovea model (no artifacts/{file})"
            ) from exc
    card = json.loads(local[CARD_FILE].read_text(encoding="utf-8"))
    return local[WEIGHTS_FILE], card


def _iso(ms: int | None) -> str:
    return datetime.fromtimestamp((ms or 0) / 1000, tz=UTC).isoformat()
