"""The promotion gate's decisions as the registry records them, against a real sqlite
MLflow store: in version order, without a frozen evaluation set, and by hand."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from fovea.tracking._mlflow import make_client
from fovea.tracking.champion import (
    CHALLENGER,
    CHAMPION,
    TAG_DATASET,
    PromotionError,
    champion_dataset,
    decision_of,
    freeze_eval_set,
    load_eval_set,
)
from fovea.tracking.gate import (
    EvalSetRef,
    GateDecision,
    GatePolicy,
    decide,
    promote_by_hand,
    roll_back_by_hand,
)
from tests.support.registry import register_tiny_model as register

if TYPE_CHECKING:
    from tests.support.stores import MlflowStore

EVAL = EvalSetRef(name="m/eval@v1", digest="sha256:00", size=10, used=10)


def frozen_gate(scores: dict[int | None, float], candidate: float, **policy):  # type: ignore[no-untyped-def]
    """A decider as the worker makes one: the champion's score on the frozen set is looked
    up by version (here from a dict), the policy applied."""

    def decider(client: object, *, name: str, version: int, champion: int | None) -> GateDecision:
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


def test_without_an_eval_set_the_gate_compares_recorded_validation_metrics(
    mlflow_store: MlflowStore, unique_name: str
) -> None:
    first = register(mlflow_store, unique_name, 0.5)
    assert first.decision.eval_set is None and first.decision.champion is None
    better = register(mlflow_store, unique_name, 0.6)
    assert better.is_champion and better.decision.champion == 0.5
    assert better.decision.reasons == ["candidate 0.6000 beats champion 0.5000 (+0.1000)"]
    # A champion that recorded no top1 (another main metric) cannot be compared with.
    other = register(mlflow_store, unique_name, 0.9, metrics={"top5": 0.99}, main_metric="top5")
    assert not other.is_champion and other.champion_version == 2
    assert other.decision.reasons == [
        "FAILED not comparable: champion v2 has no top5 to compare with"
    ]
    recorded = decision_of(make_client(mlflow_store.tracking_uri), name=unique_name, version=3)
    assert recorded["promote"] is False and recorded["champion_version"] == 2


def test_manual_promote_and_rollback(mlflow_store: MlflowStore, unique_name: str) -> None:
    register(mlflow_store, unique_name, 0.5)
    register(mlflow_store, unique_name, 0.4)  # kept: challenger
    register(mlflow_store, unique_name, 0.7)  # promoted over v1
    uri = mlflow_store.tracking_uri
    client = make_client(uri)

    back = roll_back_by_hand(tracking_uri=uri, name=unique_name, reason="v3 misbehaves")
    assert (back.from_version, back.to_version) == (3, 1)
    assert int(client.get_registered_model(unique_name).aliases[CHAMPION]) == 1
    assert client.get_model_version(unique_name, "3").tags["fovea.rolled_back"] == "v3 misbehaves"
    with pytest.raises(PromotionError, match="replaced no earlier champion"):
        roll_back_by_hand(tracking_uri=uri, name=unique_name, reason="again")

    moved = promote_by_hand(tracking_uri=uri, name=unique_name, version=2, reason="A/B winner")
    assert (moved.from_version, moved.to_version) == (1, 2)
    aliases = client.get_registered_model(unique_name).aliases
    assert int(aliases[CHAMPION]) == 2 and CHALLENGER not in aliases
    tags = client.get_model_version(unique_name, "2").tags
    assert tags["fovea.champion_decision"] == "manual"
    assert tags["fovea.manual_reason"] == "A/B winner"
    assert tags["fovea.previous_champion"] == "1"
    assert roll_back_by_hand(tracking_uri=uri, name=unique_name, reason="undo").to_version == 1

    with pytest.raises(PromotionError, match="champion already"):
        promote_by_hand(tracking_uri=uri, name=unique_name, version=1, reason="x")
    with pytest.raises(PromotionError, match="no version 9"):
        promote_by_hand(tracking_uri=uri, name=unique_name, version=9, reason="x")
    with pytest.raises(PromotionError, match="no registered model"):
        roll_back_by_hand(tracking_uri=uri, name=f"{unique_name}-nope", reason="x")


def test_a_manual_move_is_recorded_as_a_gate_decision(
    mlflow_store: MlflowStore, unique_name: str
) -> None:
    register(mlflow_store, unique_name, 0.5)
    register(mlflow_store, unique_name, 0.4)  # kept
    uri = mlflow_store.tracking_uri
    client = make_client(uri)

    moved = promote_by_hand(tracking_uri=uri, name=unique_name, version=2, reason="A/B winner")
    recorded = decision_of(client, name=unique_name, version=2)
    assert recorded == moved.decision.as_dict()
    assert recorded["manual"] and recorded["promote"]
    assert (recorded["metric"], recorded["candidate"], recorded["champion"]) == ("top1", 0.4, 0.5)
    assert recorded["champion_version"] == 1 and recorded["delta"] == pytest.approx(-0.1)
    assert recorded["reasons"] == [
        "promoted by hand: A/B winner",
        "recorded validation top1: v2 0.4000, champion v1 0.5000 (-0.1000; not checked)",
    ]

    back = roll_back_by_hand(tracking_uri=uri, name=unique_name, reason="the A/B test was wrong")
    recorded = decision_of(client, name=unique_name, version=1)
    assert recorded == back.decision.as_dict() and recorded["manual"]
    assert (recorded["candidate"], recorded["champion"], recorded["champion_version"]) == (
        0.5,
        0.4,
        2,
    )
    assert recorded["reasons"][0] == "rolled back by hand from v2: the A/B test was wrong"
    assert client.get_model_version(unique_name, "1").tags["fovea.champion_decision"] == "manual"


def test_a_manual_move_to_a_version_without_metrics(
    mlflow_store: MlflowStore, unique_name: str
) -> None:
    register(mlflow_store, unique_name, 0.5)
    client = make_client(mlflow_store.tracking_uri)
    foreign = client.create_model_version(unique_name, source="file:///nowhere")  # not Fovea's
    moved = promote_by_hand(
        tracking_uri=mlflow_store.tracking_uri,
        name=unique_name,
        version=int(foreign.version),
        reason="an outside model",
    )
    decision = moved.decision.as_dict()
    assert decision["candidate"] is None and decision["champion"] is None
    assert decision["reasons"] == [
        "promoted by hand: an outside model",
        "v2 recorded no main metric",
    ]


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
