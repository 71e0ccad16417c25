"""FrozenSetGate, the gate a training job runs: candidate and champion scored on the model's
frozen evaluation set, with tiny real models on builtin digits and a real sqlite MLflow
store. Its 'not comparable' cases keep the champion and say why."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pytest
import torch

from fovea.tasks import DataBundle, DataConfig, ModelConfig, TrainConfig, get_task
from fovea.tracking import ModelRecord, RunLogger, log_model
from fovea.tracking._mlflow import make_client
from fovea.tracking.champion import load_eval_set
from fovea.tracking.gate import Candidate, FrozenSetGate, GatePolicy

if TYPE_CHECKING:
    from tests.support.stores import MlflowStore

TASK = get_task("classification")
CONFIG = DataConfig(uri="builtin://digits", format="builtin", image_size=16, val_split=0.1)
TRAIN = TrainConfig(batch_size=64, num_workers=0)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # as in tests/tasks: tiny models on 2 shared cores


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return TASK.build_data(CONFIG)


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        self.seen.append((kind, message, dict(data or {})))

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.seen]


def register(
    store: MlflowStore,
    name: str,
    data: DataBundle,
    *,
    seed: int = 0,
    config: DataConfig = CONFIG,
    events: Events | None = None,
    **policy: Any,
) -> ModelRecord:
    """An untrained smallcnn (its weights from `seed`) registered through the gate."""
    torch.manual_seed(seed)
    model = TASK.build_model(ModelConfig(arch="smallcnn"), num_classes=len(data.class_names))
    card = TASK.model_card(ModelConfig(arch="smallcnn"), config, class_names=data.class_names)
    with RunLogger(
        tracking_uri=store.tracking_uri, experiment=name, artifact_root=store.artifact_root
    ) as run:
        gate = FrozenSetGate(
            candidate=Candidate(
                task=TASK,
                card=card,
                state_dict=model.state_dict(),
                data=data,
                data_config=config,
                train=TRAIN,
                device=torch.device("cpu"),
                run_id=run.run_id,
            ),
            policy=GatePolicy(**policy),
            tracking_uri=store.tracking_uri,
            events=events or Events(),
        )
        return log_model(
            logger_or_run_id=run,
            task_name="classification",
            card=card,
            state_dict=model.state_dict(),
            registered_name=name,
            metrics={"top1": 0.5},
            main_metric="top1",
            decider=gate,
        )


def test_the_first_version_freezes_the_set_and_later_ones_are_scored_on_it(
    mlflow_store: MlflowStore, unique_name: str, digits: DataBundle
) -> None:
    events = Events()
    first = register(mlflow_store, unique_name, digits, events=events)
    assert first.is_champion and first.decision is not None
    assert first.decision.reasons == ["no champion yet: the first candidate becomes champion"]
    frozen = load_eval_set(make_client(mlflow_store.tracking_uri), name=unique_name)
    assert frozen is not None and frozen.files == digits.val_files
    assert events.kinds() == ["eval_set_frozen"]
    ref = first.decision.eval_set
    assert ref is not None and (ref.name, ref.size, ref.used) == (
        f"{unique_name}/eval@v1",
        len(digits.val_files),
        len(digits.val_files),
    )
    assert ref.digest == frozen.digest and ref.digest_now is None

    # The same weights again: a tie keeps the champion, with the paired interval around 0.
    events = Events()
    same = register(mlflow_store, unique_name, digits, events=events)
    decision = same.decision
    assert decision is not None and not same.is_champion and decision.champion_version == 1
    assert decision.champion == decision.candidate == first.decision.candidate
    assert (decision.ci_low, decision.ci_high) == (0.0, 0.0)
    assert any("does not beat champion" in r for r in decision.reasons), decision.reasons
    assert events.kinds() == ["gate"]

    # A candidate at another input size: the champion is scored at its own size (16 px) on
    # the same images, so its score is the one it had.
    bigger = TASK.build_data(dataclasses.replace(CONFIG, image_size=24))
    other = register(
        mlflow_store,
        unique_name,
        bigger,
        seed=1,
        config=dataclasses.replace(CONFIG, image_size=24),
    )
    assert other.decision is not None and other.decision.champion == first.decision.candidate
    assert other.decision.eval_set is not None and other.decision.eval_set.used == len(
        digits.val_files
    )


@pytest.mark.parametrize(
    "change,words",
    [
        (lambda d: {"class_names": [f"c{i}" for i in range(10)]}, "classes changed"),
        (lambda d: {"val_files": d.val_files[1:]}, "did not hold out"),
        (lambda d: {"val_files": [*d.val_files[1:], "#99999"]}, "did not hold out"),
    ],
    ids=["classes", "fewer-files", "other-files"],
)
def test_not_comparable_keeps_the_champion(
    mlflow_store: MlflowStore, unique_name: str, digits: DataBundle, change: Any, words: str
) -> None:
    register(mlflow_store, unique_name, digits)
    candidate = register(
        mlflow_store, unique_name, dataclasses.replace(digits, **change(digits)), seed=1
    )
    decision = candidate.decision
    assert decision is not None and not candidate.is_champion
    assert decision.champion is None and decision.champion_version == 1
    assert len(decision.reasons) == 1 and decision.reasons[0].startswith("FAILED not comparable")
    assert words in decision.reasons[0]
