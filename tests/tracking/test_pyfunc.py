"""The registered pyfunc: a real small classifier, loaded back by plain MLflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import numpy as np
import pytest
import torch
from torch import nn

from fovea.tasks import DataConfig, ModelConfig, Task, get_task
from fovea.tracking import CHAMPION, RunLogger, log_model
from fovea.tracking._mlflow import make_client
from fovea.tracking.gate import on_validation_metrics
from fovea.tracking.pyfunc import as_image_batch

if TYPE_CHECKING:
    from tests.support.stores import MlflowStore

CLASS_NAMES = ["red", "green", "blue"]


def colour_images(n_per_class: int, *, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, size, size, 3] images that are mostly red, green or blue, and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(3), n_per_class)
    images = rng.integers(0, 70, size=(len(labels), size, size, 3))
    images[np.arange(len(labels)), :, :, labels] += 150  # [N, H, W] of the dominant channel
    return images.astype(np.uint8), labels


@dataclass
class Trained:
    task: Task
    model: nn.Module
    card: dict[str, Any]
    images: np.ndarray  # held-out uint8 NHWC
    labels: np.ndarray


@pytest.fixture(scope="module")
def trained() -> Iterator[Trained]:
    # One thread: on a busy 2-core machine torch's spinning worker threads make this tiny
    # model train ~20x slower than on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield _train()
    finally:
        torch.set_num_threads(threads)


def _train() -> Trained:
    torch.manual_seed(0)
    task = get_task("classification")
    model_config = ModelConfig(arch="smallcnn")
    card = task.model_card(
        model_config,
        DataConfig(uri="builtin://colours", format="builtin", image_size=32),
        class_names=CLASS_NAMES,
    )
    model = task.build_model(model_config, num_classes=3)
    images, labels = colour_images(8, seed=1)
    mean = torch.tensor(card["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card["std"]).view(1, 3, 1, 1)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    y = torch.from_numpy(labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(25):
        loss = task.compute_loss(model, (x, y))["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test_images, test_labels = colour_images(4, seed=2)
    predicted = task.predict_arrays(model, card, test_images)["class_id"]
    assert (predicted == test_labels).all(), "the colour classifier did not learn"
    return Trained(task, model, card, test_images, test_labels)


def _log(store: MlflowStore, name: str, trained: Trained) -> str:
    with RunLogger(
        tracking_uri=store.tracking_uri, experiment=name, artifact_root=store.artifact_root
    ) as run_logger:
        record = log_model(
            logger_or_run_id=run_logger,
            task_name="classification",
            card=trained.card,
            state_dict=trained.model.state_dict(),
            registered_name=name,
            metrics={"top1": 1.0},
            main_metric="top1",
            decider=on_validation_metrics,
        )
    assert record.is_champion
    return make_client(store.tracking_uri).get_model_version_download_uri(name, "1")


# Only mlflow and numpy: the fresh process finds fovea through the model alone.
_LOAD_AND_PREDICT = """
import json, sys
import mlflow.pyfunc, numpy as np
model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(np.load(sys.argv[2]))
print(json.dumps({c: out[c].tolist() for c in ("class_id", "label", "score", "probabilities")}))
"""


def test_registered_model_predicts_in_a_fresh_process(
    mlflow_store: MlflowStore, unique_name: str, trained: Trained, tmp_path: Path
) -> None:
    _log(mlflow_store, unique_name, trained)
    np.save(tmp_path / "images.npy", trained.images)
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_store.tracking_uri, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _LOAD_AND_PREDICT,
            f"models:/{unique_name}@{CHAMPION}",
            str(tmp_path / "images.npy"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert out["class_id"] == trained.labels.tolist()
    assert out["label"] == [CLASS_NAMES[i] for i in trained.labels]
    expected = trained.task.predict_arrays(trained.model, trained.card, trained.images)
    probabilities = np.array(out["probabilities"])
    assert probabilities.shape == (len(trained.labels), 3)
    np.testing.assert_allclose(probabilities, expected["probabilities"], atol=1e-5)
    np.testing.assert_allclose(out["score"], probabilities.max(axis=1), atol=1e-6)


def test_pyfunc_accepts_batches_single_images_and_grey(
    mlflow_store: MlflowStore, unique_name: str, trained: Trained
) -> None:
    model = mlflow.pyfunc.load_model(_log(mlflow_store, unique_name, trained))
    images, labels = trained.images, trained.labels

    frame = model.predict(images, params={"batch_size": 5})  # chunks of 5 give the same
    assert list(frame.columns) == ["class_id", "label", "score", "probabilities"]
    assert frame["class_id"].tolist() == labels.tolist()

    single = model.predict(images[7])  # HWC
    assert len(single) == 1 and single["class_id"][0] == labels[7]

    assert len(model.predict(images.astype(np.int64))) == len(labels)  # JSON-like integers
    grey = model.predict(images.mean(axis=-1).astype(np.uint8))  # NHW
    assert len(grey) == len(labels)
    assert np.allclose(np.stack(grey["probabilities"]).sum(axis=1), 1, atol=1e-5)

    with pytest.raises(Exception, match="uint8"):
        model.predict(images.astype(np.float32) / 255)


def test_pyfunc_predicts_a_list_of_images_of_different_sizes(
    mlflow_store: MlflowStore, unique_name: str, trained: Trained
) -> None:
    model = mlflow.pyfunc.load_model(_log(mlflow_store, unique_name, trained))
    images, labels = trained.images, trained.labels
    # each image at its own size (32x32, 48x40, grey 24x36), rows in the list's order
    mixed = [
        images[0],
        np.repeat(images[1], 2, axis=0)[:48, :, :].repeat(2, axis=1)[:, :40],
        images[2].mean(axis=-1).astype(np.uint8)[:24, :],
        images[3],
    ]
    frame = model.predict(mixed)
    assert frame.index.tolist() == [0, 1, 2, 3]
    assert frame["class_id"].tolist() == labels[:4].tolist()
    one_by_one = [int(model.predict(image)["class_id"][0]) for image in mixed]
    assert frame["class_id"].tolist() == one_by_one
    with pytest.raises(Exception, match=r"image 1: .*uint8"):
        model.predict([images[0], images[1].astype(np.float32)])
    with pytest.raises(Exception, match="different sizes cannot form one array"):
        as_image_batch([images[0].tolist(), images[1][:20].tolist()])


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ((5, 8, 8, 3), (5, 8, 8, 3)),
        ((8, 8, 3), (1, 8, 8, 3)),
        ((2, 8, 8), (2, 8, 8)),
        ((8, 8), (1, 8, 8)),
        ((4, 8, 8, 1), (4, 8, 8, 1)),
    ],
)
def test_as_image_batch_shapes(shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    batch = as_image_batch(np.zeros(shape, dtype=np.uint8))
    assert batch.shape == expected and batch.dtype == np.uint8


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((2, 8, 8, 3), dtype=np.float32), "uint8"),
        (np.full((2, 8, 8, 3), 300), "outside"),
        (np.zeros((2, 3, 16, 16), dtype=np.uint8), "channels-first"),
        (np.zeros((0, 8, 8, 3), dtype=np.uint8), "empty"),
        (np.zeros((1, 2, 8, 8, 3), dtype=np.uint8), "shape"),
    ],
)
def test_as_image_batch_rejects(array: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        as_image_batch(array)
