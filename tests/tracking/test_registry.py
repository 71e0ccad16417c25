"""Model registry against a real sqlite MLflow store: champion rule, listing, weights."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from safetensors.torch import load_file

from fovea.tracking import (
    CHAMPION,
    ModelNotFoundError,
    ModelRecord,
    RunLogger,
    download_weights,
    get_model,
    list_models,
    log_model,
)
from fovea.tracking._mlflow import make_client
from fovea.tracking.gate import on_validation_metrics
from tests.support.registry import CARD, register_tiny_model

if TYPE_CHECKING:
    from tests.support.stores import MlflowStore


def test_champion_moves_only_on_improvement(mlflow_store: MlflowStore, unique_name: str) -> None:
    first = register_tiny_model(mlflow_store, unique_name, 0.5)
    assert (first.version, first.is_champion, first.champion_version) == (1, True, 1)
    assert first.previous_champion_metric is None

    worse = register_tiny_model(mlflow_store, unique_name, 0.4)
    assert (worse.version, worse.is_champion, worse.champion_version) == (2, False, 1)
    assert worse.previous_champion_metric == 0.5

    better = register_tiny_model(mlflow_store, unique_name, 0.7)
    assert (better.version, better.is_champion, better.champion_version) == (3, True, 3)
    assert (better.previous_champion_version, better.previous_champion_metric) == (1, 0.5)

    tie = register_tiny_model(mlflow_store, unique_name, 0.7)  # must beat strictly
    assert (tie.version, tie.is_champion, tie.champion_version) == (4, False, 3)

    client = make_client(mlflow_store.tracking_uri)
    assert client.get_model_version_by_alias(unique_name, CHAMPION).version == 3
    tags = client.get_model_version(unique_name, "3").tags
    assert tags["fovea.run_id"] == better.run_id
    assert (tags["fovea.main_metric"], float(tags["fovea.main_metric_value"])) == ("top1", 0.7)


def test_concurrent_registrations_keep_the_best(
    mlflow_store: MlflowStore, unique_name: str
) -> None:
    register_tiny_model(mlflow_store, unique_name, 0.5)
    records: list[ModelRecord] = []
    errors: list[BaseException] = []

    def job(top1: float) -> None:
        try:
            records.append(register_tiny_model(mlflow_store, unique_name, top1))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=job, args=(v,)) for v in (0.6, 0.9, 0.7)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    detail = get_model(tracking_uri=mlflow_store.tracking_uri, name=unique_name)
    assert detail is not None
    best = next(v for v in detail.versions if v.main_metric_value == 0.9)
    assert detail.champion_version == best.version
    assert all(v.champion_decision in ("promoted", "kept") for v in detail.versions)
    assert next(r for r in records if r.main_metric_value == 0.9).is_champion


def test_list_and_get_models(mlflow_store: MlflowStore, unique_name: str) -> None:
    register_tiny_model(mlflow_store, unique_name, 0.6)
    second = register_tiny_model(mlflow_store, unique_name, 0.8)

    summaries = {s.name: s for s in list_models(tracking_uri=mlflow_store.tracking_uri)}
    summary = summaries[unique_name]
    assert summary.task == "classification"
    assert (summary.latest_version, summary.champion_version) == (2, 2)
    assert (summary.main_metric, summary.champion_metric) == ("top1", 0.8)
    assert summary.aliases == {CHAMPION: 2}

    detail = get_model(tracking_uri=mlflow_store.tracking_uri, name=unique_name)
    assert detail is not None
    assert [v.version for v in detail.versions] == [2, 1]
    newest = detail.versions[0]
    assert newest.run_id == second.run_id
    assert newest.is_champion and newest.aliases == [CHAMPION]
    assert newest.metrics == {"top1": 0.8, "loss": 0.3, "f1/red": None}
    assert not detail.versions[1].is_champion
    assert newest.created_at.endswith("+00:00")

    assert get_model(tracking_uri=mlflow_store.tracking_uri, name=f"{unique_name}-nope") is None


def test_download_weights_roundtrip(
    mlflow_store: MlflowStore, unique_name: str, tmp_path: Path
) -> None:
    register_tiny_model(mlflow_store, unique_name, 0.5, seed=1)
    register_tiny_model(mlflow_store, unique_name, 0.9, seed=2)
    torch.manual_seed(2)
    expected = torch.randn(3, 4)

    path, card = download_weights(
        tracking_uri=mlflow_store.tracking_uri,
        uri=f"models:/{unique_name}@{CHAMPION}",
        dst=tmp_path / "champion",
    )
    assert card == CARD
    assert torch.equal(load_file(path)["head.weight"], expected)

    path, _ = download_weights(
        tracking_uri=mlflow_store.tracking_uri, uri=f"models:/{unique_name}/1", dst=tmp_path / "v1"
    )
    torch.manual_seed(1)
    assert torch.equal(load_file(path)["head.weight"], torch.randn(3, 4))
    path, _ = download_weights(
        tracking_uri=mlflow_store.tracking_uri,
        uri=f"models:/{unique_name}/latest",
        dst=tmp_path / "latest",
    )
    assert torch.equal(load_file(path)["head.weight"], expected)


def test_unknown_models_raise_a_named_error(
    mlflow_store: MlflowStore, unique_name: str, tmp_path: Path
) -> None:
    uri = mlflow_store.tracking_uri
    with pytest.raises(ModelNotFoundError, match=f"'{unique_name}-missing' not found"):
        download_weights(
            tracking_uri=uri, uri=f"models:/{unique_name}-missing@champion", dst=tmp_path
        )
    register_tiny_model(mlflow_store, unique_name, 0.5)
    with pytest.raises(ModelNotFoundError, match=r"no alias 'staging'.*champion"):
        download_weights(tracking_uri=uri, uri=f"models:/{unique_name}@staging", dst=tmp_path)
    with pytest.raises(ModelNotFoundError, match="no version 7"):
        download_weights(tracking_uri=uri, uri=f"models:/{unique_name}/7", dst=tmp_path)
    with pytest.raises(ValueError, match="not a model URI"):
        download_weights(tracking_uri=uri, uri="runs:/abc/model", dst=tmp_path)


def test_log_without_registering_and_bad_arguments(
    mlflow_store: MlflowStore, unique_name: str
) -> None:
    with RunLogger(
        tracking_uri=mlflow_store.tracking_uri,
        experiment=unique_name,
        artifact_root=mlflow_store.artifact_root,
    ) as run_logger:
        common = {
            "task_name": "classification",
            "card": CARD,
            "state_dict": {"w": torch.ones(2)},
            "metrics": {"top1": 0.5},
            "main_metric": "top1",
            "decider": on_validation_metrics,
        }
        record = log_model(
            logger_or_run_id=run_logger.run_id,
            registered_name=None,
            tracking_uri=mlflow_store.tracking_uri,
            **common,
        )
        assert record.version is None and record.model_uri.startswith("models:/m-")
        with pytest.raises(ValueError, match="main metric 'map'"):
            log_model(
                logger_or_run_id=run_logger,
                registered_name=unique_name,
                **{**common, "main_metric": "map"},
            )
        with pytest.raises(ValueError, match="not 'detection'"):
            log_model(
                logger_or_run_id=run_logger,
                registered_name=unique_name,
                **{**common, "task_name": "detection"},
            )
        with pytest.raises(ValueError, match="needs a decider"):
            log_model(
                logger_or_run_id=run_logger,
                registered_name=unique_name,
                **{**common, "decider": None},
            )
        with pytest.raises(ValueError, match="tracking_uri is required"):
            log_model(logger_or_run_id=run_logger.run_id, registered_name=None, **common)
        log_model(logger_or_run_id=run_logger, registered_name=unique_name, **common)
        with pytest.raises(ValueError, match="holds classification models"):
            log_model(
                logger_or_run_id=run_logger,
                registered_name=unique_name,
                **{**common, "task_name": "detection", "card": {**CARD, "task": "detection"}},
            )
    assert run_logger.mlflow_seconds > 0 and run_logger.blocking_seconds > 0
