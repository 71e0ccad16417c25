"""End to end: a detection job through the real API, Ray worker, engine and MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.support.stack import Stack

pytestmark = pytest.mark.slow


def shapes_spec(**over):  # type: ignore[no-untyped-def]
    """64 shapes images of 64 px, one epoch: the plumbing, not the learning (how well yolo_n
    learns shapes: tests/tasks/test_detection.py, with the job this test used to train)."""
    spec = {
        "name": "shapes-det",
        "task": "detection",
        "dataset": {"uri": "builtin://shapes?n=64&size=64", "val_split": 0.25},
        "model": {"arch": "yolo_n", "backbone": "tiny"},
        "train": {
            "epochs": 1,
            "batch_size": 16,
            "lr": 0.003,
            "image_size": 64,
            "warmup_epochs": 0,
            "early_stopping_patience": None,
            "seed": 0,
        },
        "resources": {"cpus": 1},
        "register_as": "shapes-det",
    }
    spec.update(over)
    return spec


def test_detection_job_trains_registers_and_serves(stack: Stack) -> None:
    r = stack.http.post("/jobs", json=shapes_spec())
    assert r.status_code == 201, r.text
    job = stack.wait(r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=600)
    assert job["state"] == "succeeded", (job["error"], job["events"])
    metrics = job["metrics"]
    assert {"map", "map_50", "map_75", "mar_100", "ap/circle", "ap/square", "ap/triangle"} <= set(
        metrics
    )
    assert 0 <= metrics["map"] <= metrics["map_50"] <= 1, metrics
    assert job["model_name"] == "shapes-det" and job["model_version"] == "1"
    data_event = next(e for e in job["events"] if e["kind"] == "data")
    assert (data_event["data"]["train"], data_event["data"]["val"]) == (48, 16)
    assert data_event["data"]["boxes"] >= 64

    # artifacts: PR curves and drawn validation images next to the training curves
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri="sqlite:///" + str(stack.home / "mlflow.db"))
    names = {a.path.rsplit("/", 1)[-1] for a in _all_artifacts(client, job["mlflow_run_id"])}
    assert {"pr_curves.png", "val_predictions.png", "per_class_ap.json"} <= names

    # the champion as mlflow.pyfunc loads it: boxes, scores and labels per image, of known
    # classes (a fresh process and `fovea export` are tests/e2e/test_platform.py's; the
    # detector's ONNX, tests/tasks/test_detection.py's)
    from fovea.tasks.data.shapes import generate_shapes

    shapes = generate_shapes(count=6, size=64, seed=999)  # images no job has seen
    out = stack.load_model("shapes-det").predict(shapes.images.permute(0, 2, 3, 1).numpy())
    assert list(out.columns) == ["boxes", "scores", "labels", "class_names"] and len(out) == 6
    for boxes, scores, labels, names in zip(
        out["boxes"], out["scores"], out["labels"], out["class_names"], strict=True
    ):
        assert np.array(boxes).reshape(-1, 4).shape[0] == len(scores) == len(labels) == len(names)
        assert set(labels) <= {0, 1, 2} and set(names) <= {"circle", "square", "triangle"}


def test_unparseable_voc_fails_the_job_with_path_and_line(stack: Stack) -> None:
    root = Path(stack.env["FOVEA_DATA_ROOTS"]) / "broken-voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "Annotations" / "a.xml").write_text("<annotation>\n<object>\n</annotation>\n")
    spec = shapes_spec(
        name="broken",
        dataset={"uri": str(root), "format": "voc"},
        register_as=None,
        max_retries=2,
    )
    job = stack.wait(stack.http.post("/jobs", json=spec).json()["id"], {"failed", "succeeded"})
    assert job["state"] == "failed" and job["attempt"] == 1  # a user error: never retried
    assert "a.xml, line 3" in job["error"]


def test_unknown_detection_arch_is_rejected_at_submit(stack: Stack) -> None:
    r = stack.http.post("/jobs", json=shapes_spec(model={"arch": "yolo_x", "backbone": "tiny"}))
    assert r.status_code == 422 and "yolo_n" in r.text


def _all_artifacts(client, run_id: str, path: str | None = None) -> list:  # type: ignore[no-untyped-def]
    found = []
    for item in client.list_artifacts(run_id, path):
        found += _all_artifacts(client, run_id, item.path) if item.is_dir else [item]
    return found
