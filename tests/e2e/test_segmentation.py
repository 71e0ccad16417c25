"""End to end: a segmentation job through the real API, Ray worker and MLflow registry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fovea.tasks.data.shapes import generate_shapes
from tests.support.stack import Stack

pytestmark = pytest.mark.slow


def shapes_spec(**over):  # type: ignore[no-untyped-def]
    """40 shapes images at 32 px, one epoch: the plumbing, not the learning (how well the
    FPN learns shapes: tests/tasks/test_segmentation.py, with the job this test used to
    train)."""
    spec = {
        "name": "shapes-seg",
        "task": "segmentation",
        "dataset": {"uri": "builtin://shapes?n=40&seed=0", "val_split": 0.2},
        "model": {"arch": "fpn", "backbone": "tiny"},
        "train": {
            "epochs": 1,
            "batch_size": 8,
            "lr": 0.003,
            "warmup_epochs": 0,
            "image_size": 32,
            "early_stopping_patience": None,
            "seed": 0,
        },
        "resources": {"cpus": 1},
        "register_as": "shapes-seg",
    }
    spec.update(over)
    return spec


def test_train_register_and_predict_masks(stack: Stack) -> None:
    r = stack.http.post("/jobs", json=shapes_spec())
    assert r.status_code == 201, r.text
    job = stack.wait(r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=420)
    assert job["state"] == "succeeded", (job["error"], job["events"])
    metrics = job["metrics"]
    classes = ("background", "circle", "square", "triangle")
    assert {"miou", "pixel_acc", "dice"} | {f"iou/{c}" for c in classes} <= set(metrics)
    assert 0 <= metrics["miou"] <= 1 and 0 <= metrics["pixel_acc"] <= 1, metrics
    data_event = next(e for e in job["events"] if e["kind"] == "data")
    assert data_event["data"]["train"] == 32 and data_event["data"]["val"] == 8
    assert job["model_name"] == "shapes-seg" and job["model_version"] == "1"
    assert stack.http.get("/models/shapes-seg").json()["champion_version"] == 1

    # The champion as mlflow.pyfunc loads it (a fresh process: tests/e2e/test_platform.py)
    # predicts held-out images (another generator seed): one batch at twice the training
    # size, one at a size and shape the model never saw; masks come back at each input's
    # resolution.
    held_out = generate_shapes(count=12, size=64, seed=99)
    images = held_out.images.permute(0, 2, 3, 1).numpy()  # uint8 [12, 64, 64, 3]
    wide = np.stack(
        [np.asarray(Image.fromarray(i).resize((96, 72), Image.Resampling.BILINEAR)) for i in images]
    )  # [12, 72, 96, 3]
    model = stack.load_model("shapes-seg")
    predicted = {"square": model.predict(images), "wide": model.predict(wide)}
    square = np.array(list(predicted["square"]["mask"]))
    assert square.shape == (12, 64, 64) and set(np.unique(square)) <= {0, 1, 2, 3}
    assert predicted["square"]["classes"][0][0] == "background"
    wide_masks = np.array(list(predicted["wide"]["mask"]))
    assert wide_masks.shape == (12, 72, 96) and set(np.unique(wide_masks)) <= {0, 1, 2, 3}

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri="sqlite:///" + str(stack.home / "mlflow.db"))
    plots = {a.path for a in client.list_artifacts(job["mlflow_run_id"], "plots")}
    assert {"plots/val_predictions.png", "plots/per_class_iou.png"} <= plots


def test_bad_mask_fails_at_once_naming_the_file(stack: Stack) -> None:
    root = Path(stack.env["FOVEA_DATA_ROOTS"]) / "bad-masks"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(root / "images" / f"{i}.png")
        Image.new("L", (32, 32 if i != 2 else 30)).save(root / "masks" / f"{i}.png")
    spec = shapes_spec(
        name="bad-masks",
        dataset={"uri": str(root), "format": "masks", "class_map": {"0": "bg", "255": "fg"}},
        register_as=None,
        max_retries=3,
    )
    r = stack.http.post("/jobs", json=spec)
    assert r.status_code == 201, r.text
    job = stack.wait(r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=180)
    assert job["state"] == "failed" and job["attempt"] == 1  # a user error: never retried
    assert f"mask {root / 'masks' / '2.png'} is 32x30 but its image" in job["error"]


def test_bad_builtin_parameters_and_backbones_are_refused_at_submit(stack: Stack) -> None:
    cases = [
        (shapes_spec(dataset={"uri": "builtin://shapes?n=lots"}), "n must be an integer"),
        (shapes_spec(dataset={"uri": "builtin://digits"}), "is for classification"),
        (shapes_spec(model={"arch": "fpn", "backbone": "vgg16"}), "valid: tiny, resnet18"),
        (shapes_spec(model={"arch": "deeplab"}), "valid: unet, fpn"),
    ]
    for spec, words in cases:
        r = stack.http.post("/jobs", json=spec)
        assert r.status_code == 422, r.text
        assert words in r.json()["message"], r.json()
