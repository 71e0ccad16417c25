"""The promotion gate's side of the MLflow registry: aliases, recorded decisions, the frozen
evaluation set of each model, what each version was trained on, manual promote, rollback.

Aliases: `champion` (what serves), `challenger` (the newest candidate the gate rejected).
Every version the gate decided carries `fovea.gate` (the decision as JSON: both scores,
delta, CI, eval-set hash, reasons) and `fovea.champion_decision` (promoted | kept | manual);
a version that became champion carries `fovea.previous_champion`, so rollback walks back.

The frozen evaluation set of a registered model is fixed from its first decided version's
validation files: tags `fovea.eval_set.*` on the registered model (name, digest, size,
version) and the file list as `fovea/eval_set.json` in that version's run.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from fovea.tracking._mlflow import MAX_TAG_VALUE_LENGTH, all_versions, error_code, make_client
from fovea.tracking.gate import GateDecision

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_DECISION = "fovea.champion_decision"  # pending -> promoted | kept (| manual)
TAG_GATE = "fovea.gate"  # JSON GateDecision
TAG_PREVIOUS_CHAMPION = "fovea.previous_champion"  # set when a version becomes champion
TAG_DATASET = "fovea.dataset"  # JSON manifest summary: digest, mode, files, bytes
TAG_EVAL_NAME = "fovea.eval_set.name"
TAG_EVAL_DIGEST = "fovea.eval_set.digest"
TAG_EVAL_SIZE = "fovea.eval_set.size"
TAG_EVAL_VERSION = "fovea.eval_set.version"
TAG_EVAL_RUN = "fovea.eval_set.run_id"
EVAL_SET_ARTIFACT = "fovea/eval_set.json"

_log = logging.getLogger(__name__)
_POLL_S = 0.2
_MAX_WAIT_S = 60.0
_STALE_PENDING_S = 120.0


class PromotionError(ValueError):
    """A promote or rollback that cannot be done (says why)."""


class UnknownModelError(PromotionError):
    """The registered model or version does not exist."""


# -- deciding in version order and recording the decision ---------------------------------


def decide_in_turn(
    client: MlflowClient,
    *,
    name: str,
    version: int,
    decider: Callable[[int, int | None], GateDecision],
) -> tuple[int | None, GateDecision]:
    """Run the gate, `decider(version, champion version or None)`, for a new version once
    every lower version is decided; apply and record it. Returns (champion before, decision).

    Two jobs finishing at once: MLflow has no compare-and-set on aliases, so decisions are
    serialised by version number, which the registry hands out atomically. Each version is
    created tagged `fovea.champion_decision=pending`; before deciding, a job waits until
    every lower pending version is decided, then runs the gate against the champion it
    reads. The outcome is the one a sequential registration in version order would give. A
    pending version left by a job that died is ignored once it is `_STALE_PENDING_S` old,
    and nobody waits longer than `_MAX_WAIT_S`.
    """
    _wait_for_turn(client, name=name, version=version)
    previous = client.get_registered_model(name).aliases.get(CHAMPION)
    previous_version = int(previous) if previous is not None else None
    decision = decider(version, previous_version)
    apply_decision(client, name=name, version=version, decision=decision)
    return previous_version, decision


def _wait_for_turn(client: MlflowClient, *, name: str, version: int) -> None:
    deadline = time.monotonic() + _MAX_WAIT_S
    while True:
        now_ms = time.time() * 1000
        waiting_on = [
            v.version
            for v in all_versions(client, name)
            if int(v.version) < version
            and v.tags.get(TAG_DECISION) == "pending"
            and now_ms - v.creation_timestamp < _STALE_PENDING_S * 1000
        ]
        if not waiting_on:
            return
        if time.monotonic() > deadline:
            _log.warning(
                "deciding champion of %s v%d without waiting for %s", name, version, waiting_on
            )
            return
        time.sleep(_POLL_S)


def apply_decision(
    client: MlflowClient, *, name: str, version: int, decision: GateDecision
) -> None:
    """Move `champion` (promoted) or `challenger` (kept) and record the decision on the
    version. The caller holds the version-order turn (see registry._decide_champion)."""
    previous = client.get_registered_model(name).aliases.get(CHAMPION)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, str(version))
        if previous is not None and int(previous) != version:
            client.set_model_version_tag(name, str(version), TAG_PREVIOUS_CHAMPION, str(previous))
    else:
        client.set_registered_model_alias(name, CHALLENGER, str(version))
    text = json.dumps(decision.as_dict(), sort_keys=True, allow_nan=False)
    client.set_model_version_tag(name, str(version), TAG_GATE, text[:MAX_TAG_VALUE_LENGTH])
    outcome = "manual" if decision.manual else ("promoted" if decision.promote else "kept")
    client.set_model_version_tag(name, str(version), TAG_DECISION, outcome)


def decision_of(client: MlflowClient, *, name: str, version: int) -> dict[str, Any] | None:
    """The recorded gate decision of a version, or None."""
    text = client.get_model_version(name, str(version)).tags.get(TAG_GATE)
    return json.loads(text) if text else None


# -- what a version was trained on ---------------------------------------------------------


@dataclass(frozen=True)
class ChampionDataset:
    version: int
    digest: str
    mode: str  # "stat" | "content" | "uri"


def champion_dataset(*, tracking_uri: str, name: str) -> ChampionDataset | None:
    """The dataset manifest the champion of `name` was trained on (None: no champion, or
    one registered before manifests were recorded)."""
    client = make_client(tracking_uri)
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if error_code(exc) in (ErrorCode.Name(RESOURCE_DOES_NOT_EXIST), "INVALID_PARAMETER_VALUE"):
            return None
        raise
    text = champion.tags.get(TAG_DATASET)
    if not text:
        return None
    data = json.loads(text)
    return ChampionDataset(version=int(champion.version), digest=data["digest"], mode=data["mode"])


# -- the frozen evaluation set -------------------------------------------------------------


@dataclass(frozen=True)
class EvalSet:
    name: str  # "<model>/eval@v<version>"
    digest: str  # manifest digest of the files when frozen (paths + content hashes)
    files: list[str]  # relative posix paths under the dataset folder ("#<i>" for builtin)
    version: int  # the version whose validation split it was


def load_eval_set(client: MlflowClient, *, name: str) -> EvalSet | None:
    """The frozen evaluation set of registered model `name`, or None if it has none yet."""
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException as exc:
        if error_code(exc) == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            return None
        raise
    if TAG_EVAL_DIGEST not in tags:
        return None
    with tempfile.TemporaryDirectory(prefix="fovea-evalset-") as tmp:
        local = client.download_artifacts(tags[TAG_EVAL_RUN], EVAL_SET_ARTIFACT, tmp)
        files = json.loads(Path(local).read_text(encoding="utf-8"))["files"]
    return EvalSet(
        name=tags[TAG_EVAL_NAME],
        digest=tags[TAG_EVAL_DIGEST],
        files=files,
        version=int(tags[TAG_EVAL_VERSION]),
    )


def freeze_eval_set(
    client: MlflowClient,
    *,
    name: str,
    version: int,
    run_id: str,
    files: Sequence[str],
    digest: str,
) -> EvalSet:
    """Fix `files` (version's validation split) as the evaluation set of model `name`."""
    eval_set = EvalSet(
        name=f"{name}/eval@v{version}", digest=digest, files=list(files), version=version
    )
    client.log_dict(
        run_id,
        {"name": eval_set.name, "digest": digest, "files": eval_set.files},
        EVAL_SET_ARTIFACT,
    )
    for key, value in (
        (TAG_EVAL_RUN, run_id),
        (TAG_EVAL_VERSION, str(version)),
        (TAG_EVAL_NAME, eval_set.name),
        (TAG_EVAL_SIZE, str(len(files))),
        (TAG_EVAL_DIGEST, digest),  # last: its presence means the set is complete
    ):
        client.set_registered_model_tag(name, key, value)
    return eval_set


# -- by hand -------------------------------------------------------------------------------


def promote_version(*, tracking_uri: str, name: str, version: int, reason: str) -> dict[str, Any]:
    """Make `version` the champion by hand. Returns {"from": old or None, "to": version}."""
    client = make_client(tracking_uri)
    aliases = _aliases(client, name)
    _version_exists(client, name, version)
    previous = aliases.get(CHAMPION)
    if previous is not None and int(previous) == version:
        raise PromotionError(f"version {version} of {name!r} is the champion already")
    client.set_registered_model_alias(name, CHAMPION, str(version))
    if previous is not None:
        client.set_model_version_tag(name, str(version), TAG_PREVIOUS_CHAMPION, str(previous))
    if aliases.get(CHALLENGER) is not None and int(aliases[CHALLENGER]) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, str(version), TAG_DECISION, "manual")
    client.set_model_version_tag(name, str(version), "fovea.manual_reason", reason[:5000])
    return {"from": int(previous) if previous is not None else None, "to": version}


def rollback(*, tracking_uri: str, name: str, reason: str) -> dict[str, Any]:
    """Give `champion` back to the version it replaced. Returns {"from", "to"}."""
    client = make_client(tracking_uri)
    current = _aliases(client, name).get(CHAMPION)
    if current is None:
        raise PromotionError(f"model {name!r} has no champion to roll back")
    previous = client.get_model_version(name, str(current)).tags.get(TAG_PREVIOUS_CHAMPION)
    if not previous:
        raise PromotionError(
            f"champion v{current} of {name!r} replaced no earlier champion; nothing to roll back to"
        )
    _version_exists(client, name, int(previous))
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_model_version_tag(name, str(current), "fovea.rolled_back", reason[:5000] or "yes")
    return {"from": int(current), "to": int(previous)}


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    try:
        return dict(client.get_registered_model(name).aliases)
    except MlflowException as exc:
        if error_code(exc) == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise UnknownModelError(f"no registered model named {name!r}") from None
        raise


def _version_exists(client: MlflowClient, name: str, version: int) -> None:
    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        if error_code(exc) == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise UnknownModelError(f"model {name!r} has no version {version}") from None
        raise
