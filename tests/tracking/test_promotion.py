"""The registry side of the promotion gate against a real sqlite MLflow store."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from fovea.tracking._mlflow import make_client
from fovea.tracking.gate import EvalSetRef, GateDecision, GatePolicy, decide
from fovea.tracking.promotion import (
    CHALLENGER,
    CHAMPION,
    TAG_DATASET,
    PromotionError,
    champion_dataset,
    decision_of,
    freeze_eval_set,
    load_eval_set,
    promote_version,
    rollback,
)
from tests.support.registry import register_tiny_model as register

if TYPE_CHECKING:
    from tests.support.stores import MlflowStore

EVAL = EvalSetRef(name="m/eval@v1", digest="sha256:00", size=10, used=10)


def frozen_gate(scores: dict[int | None, float], candidate: float, **policy):  # type: ignore[no-untyped-def]
    """A decider as the worker makes one: the champion's score on the frozen set is looked
    up by version (here from a dict), the policy applied."""

    def decider(version: int, champion: int | None) -> GateDecision:
        assert champion is None or champion < version
        return decide(
            metric="top1",
            candidate=candidate,
            champion=None if champion is None else scores[champion],
            champion_version=champion,
            policy=GatePolicy(**policy),
            eval_set=EVAL,
        )

    return decider


def test_a_rejected_candidate_is_the_challenger_with_its_reasons(
    mlflow_store: MlflowStore, unique_name: str
) -> None:
    first = register(mlflow_store, unique_name, 0.5, decider=frozen_gate({}, 0.70))
    assert first.is_champion and first.decision.reasons[0].startswith("no champion yet")
    # The candidate's validation top1 is higher, but on the frozen set it wins by only
    # 0.01 where 0.02 is asked: the champion stays.
    second = register(
        mlflow_store,
        unique_name,
        0.9,
        decider=frozen_gate({1: 0.70}, 0.71, min_delta=0.02),
    )
    assert not second.is_champion and second.champion_version == 1
    assert second.previous_champion_metric == 0.70
    client = make_client(mlflow_store.tracking_uri)
    aliases = client.get_registered_model(unique_name).aliases
    assert (int(aliases[CHAMPION]), int(aliases[CHALLENGER])) == (1, 2)
    recorded = decision_of(client, name=unique_name, version=2)
    assert recorded["promote"] is False and recorded["champion"] == 0.70
    assert recorded["eval_set"]["digest"] == "sha256:00"
    assert any("FAILED delta +0.0100 >= min_delta 0.02" in r for r in recorded["reasons"])
    tags = client.get_model_version(unique_name, "2").tags
    assert tags["fovea.champion_decision"] == "kept"

    third = register(mlflow_store, unique_name, 0.6, decider=frozen_gate({1: 0.70}, 0.80))
    assert third.is_champion
    tags = client.get_model_version(unique_name, "3").tags
    assert tags["fovea.previous_champion"] == "1"
    assert int(client.get_registered_model(unique_name).aliases[CHALLENGER]) == 2


def test_manual_promote_and_rollback(mlflow_store: MlflowStore, unique_name: str) -> None:
    register(mlflow_store, unique_name, 0.5)
    register(mlflow_store, unique_name, 0.4)  # kept: challenger
    register(mlflow_store, unique_name, 0.7)  # promoted over v1
    uri = mlflow_store.tracking_uri
    client = make_client(uri)

    assert rollback(tracking_uri=uri, name=unique_name, reason="v3 misbehaves") == {
        "from": 3,
        "to": 1,
    }
    assert int(client.get_registered_model(unique_name).aliases[CHAMPION]) == 1
    with pytest.raises(PromotionError, match="replaced no earlier champion"):
        rollback(tracking_uri=uri, name=unique_name, reason="again")

    moved = promote_version(tracking_uri=uri, name=unique_name, version=2, reason="A/B winner")
    assert moved == {"from": 1, "to": 2}
    aliases = client.get_registered_model(unique_name).aliases
    assert int(aliases[CHAMPION]) == 2 and CHALLENGER not in aliases
    tags = client.get_model_version(unique_name, "2").tags
    assert tags["fovea.champion_decision"] == "manual"
    assert tags["fovea.manual_reason"] == "A/B winner"
    assert rollback(tracking_uri=uri, name=unique_name, reason="undo")["to"] == 1

    with pytest.raises(PromotionError, match="champion already"):
        promote_version(tracking_uri=uri, name=unique_name, version=1, reason="x")
    with pytest.raises(PromotionError, match="no version 9"):
        promote_version(tracking_uri=uri, name=unique_name, version=9, reason="x")
    with pytest.raises(PromotionError, match="no registered model"):
        rollback(tracking_uri=uri, name=f"{unique_name}-nope", reason="x")


def test_eval_set_and_dataset_fingerprint(mlflow_store: MlflowStore, unique_name: str) -> None:
    uri = mlflow_store.tracking_uri
    client = make_client(uri)
    assert champion_dataset(tracking_uri=uri, name=unique_name) is None  # no model at all
    manifest = {"digest": "sha256:feed", "mode": "stat", "files": 12, "bytes": 3400}
    record = register(
        mlflow_store, unique_name, 0.5, version_tags={TAG_DATASET: json.dumps(manifest)}
    )
    found = champion_dataset(tracking_uri=uri, name=unique_name)
    assert found is not None and (found.version, found.digest, found.mode) == (
        1,
        "sha256:feed",
        "stat",
    )

    assert load_eval_set(client, name=unique_name) is None
    files = ["daisy/1.jpg", "rose/2.jpg"]
    freeze_eval_set(
        client, name=unique_name, version=1, run_id=record.run_id, files=files, digest="sha256:e"
    )
    loaded = load_eval_set(client, name=unique_name)
    assert loaded is not None
    assert (loaded.name, loaded.digest, loaded.files, loaded.version) == (
        f"{unique_name}/eval@v1",
        "sha256:e",
        files,
        1,
    )
