"""The promotion gate's records in the MLflow registry: aliases, recorded decisions, the
frozen evaluation set of each model, what each version was trained on.

Nothing here compares models: fovea.tracking.gate decides, this module moves the aliases
and records what it decided.

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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

from fovea.tracking._mlflow import MAX_TAG_VALUE_LENGTH, all_versions, error_code, make_client

if TYPE_CHECKING:
    from fovea.tracking.gate import Decider, GateDecision

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_DECISION = "fovea.champion_decision"  # pending -> promoted | kept (| manual)
TAG_GATE = "fovea.gate"  # JSON GateDecision
TAG_PREVIOUS_CHAMPION = "fovea.previous_champion"  # set when a version becomes champion
TAG_MANUAL_REASON = "fovea.manual_reason"  # why a person made this version champion
TAG_ROLLED_BACK = "fovea.rolled_back"  # on a champion a person rolled back: why
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
    decider: Decider,
) -> tuple[int | None, GateDecision]:
    """Run the gate, `decider(client, name=, version=, champion=version or None)`, for a new
    version once every lower version is decided; apply and record it. Returns (champion
    before, decision).

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
    decision = decider(client, name=name, version=version, champion=previous_version)
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
    client: MlflowClient, *, name: str, version: int, decision: GateDecision, reason: str = ""
) -> None:
    """Move `champion` (promoted) or `challenger` (kept) to `version` and record the
    decision on it; `reason`: why a person decided (decision.manual). An automatic decision
    is applied in its version-order turn (decide_in_turn)."""
    aliases = client.get_registered_model(name).aliases
    previous, challenger = aliases.get(CHAMPION), aliases.get(CHALLENGER)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, str(version))
        if previous is not None and int(previous) != version:
            client.set_model_version_tag(name, str(version), TAG_PREVIOUS_CHAMPION, str(previous))
        if challenger is not None and int(challenger) == version:
            client.delete_registered_model_alias(name, CHALLENGER)
    else:
        client.set_registered_model_alias(name, CHALLENGER, str(version))
    _record(client, name=name, version=version, decision=decision)
    if decision.manual:
        client.set_model_version_tag(name, str(version), TAG_MANUAL_REASON, reason[:5000])


def roll_back_to(
    client: MlflowClient,
    *,
    name: str,
    version: int,
    current: int,
    decision: GateDecision,
    reason: str,
) -> None:
    """Give `champion` back to `version`, the one champion `current` replaced; `current`
    keeps why it was rolled back, `version` the (manual) decision."""
    client.set_registered_model_alias(name, CHAMPION, str(version))
    client.set_model_version_tag(name, str(current), TAG_ROLLED_BACK, reason[:5000] or "yes")
    _record(client, name=name, version=version, decision=decision)


def _record(client: MlflowClient, *, name: str, version: int, decision: GateDecision) -> None:
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


# -- reading what a manual move needs -------------------------------------------------------


def current_champion(client: MlflowClient, *, name: str) -> int | None:
    """The champion version of `name` (None: it has none). Raises UnknownModelError."""
    champion = _aliases(client, name).get(CHAMPION)
    return int(champion) if champion is not None else None


def replaced_champion(client: MlflowClient, *, name: str, version: int) -> int | None:
    """The champion `version` replaced when it became champion, or None."""
    previous = version_tags(client, name=name, version=version).get(TAG_PREVIOUS_CHAMPION)
    return int(previous) if previous else None


def version_tags(client: MlflowClient, *, name: str, version: int) -> dict[str, str]:
    """The tags of a version. Raises UnknownModelError when it does not exist."""
    try:
        return dict(client.get_model_version(name, str(version)).tags)
    except MlflowException as exc:
        if error_code(exc) == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise UnknownModelError(f"model {name!r} has no version {version}") from None
        raise


def _aliases(client: MlflowClient, name: str) -> dict[str, str]:
    try:
        return dict(client.get_registered_model(name).aliases)
    except MlflowException as exc:
        if error_code(exc) == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise UnknownModelError(f"no registered model named {name!r}") from None
        raise
