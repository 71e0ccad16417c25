"""End to end: a real `fovea up` process, real local Ray, real MLflow store, over HTTP."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from tests.support.specs import digits_spec, merged
from tests.support.stack import Stack

pytestmark = pytest.mark.slow


def test_train_register_and_serve(stack: Stack) -> None:
    """Two epochs at 16 px: the plumbing (how well smallcnn learns digits, and that serving
    answers as validation does: tests/tasks/test_classification.py)."""
    spec = digits_spec(
        quick=True, name="digits-e2e", dataset={"val_split": 0.2}, register_as="digits-e2e"
    )
    r = stack.http.post("/jobs", json=spec)
    assert r.status_code == 201, r.text
    job = stack.wait(r.json()["id"], {"succeeded", "failed", "cancelled"})
    assert job["state"] == "succeeded", (job["error"], job["events"])
    assert job["metrics"]["top1"] > 0.5  # 10 classes: chance is 0.1
    assert job["attempt"] == 1 and job["mlflow_run_id"]
    assert job["model_name"] == "digits-e2e" and job["model_version"] == "1"
    kinds = [e["kind"] for e in job["events"]]
    assert kinds[0] == "submitted" and "model_registered" in kinds
    assert not (stack.home / "checkpoints" / job["id"]).exists()  # weights live in MLflow now
    assert [e["to_state"] for e in job["events"] if e["kind"] == "state"] == [
        "running",
        "succeeded",
    ]

    model = stack.http.get("/models/digits-e2e").json()
    assert model["champion_version"] == 1

    # A worse model (1 epoch, tiny lr) and a fine-tune of the champion with the same tiny-lr
    # epoch train side by side (one CPU each) while this process checks the champion.
    worse = merged(spec, {"train": {"epochs": 1, "lr": 1e-5, "warmup_epochs": 0}})
    tuned = merged(
        worse,
        {
            "name": "digits-ft",
            "register_as": None,
            "model": {"weights": "models:/digits-e2e@champion"},
        },
    )
    worse_id = stack.http.post("/jobs", json=worse).json()["id"]
    tuned_id = stack.http.post("/jobs", json=tuned).json()["id"]

    # A plain MLflow client in a fresh process, no fovea import of its own.
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[-40:] * (255 / 16)).astype(np.uint8)  # NHW grey
    out = stack.predict_plain("models:/digits-e2e@champion", {"digits": images})["digits"]
    accuracy = np.mean(np.array(out["class_id"]) == digits.target[-40:])
    assert accuracy > 0.5, (accuracy, out["class_id"])  # the trained model, not a fresh one
    probs = np.array(out["probabilities"])
    assert probs.shape == (40, 10) and np.allclose(probs.sum(1), 1, atol=1e-4)

    # `fovea export` writes the champion as ONNX that onnxruntime runs.
    import onnxruntime as ort

    onnx_path = stack.home / "digits.onnx"
    stack.export_onnx("models:/digits-e2e@champion", onnx_path)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(
        None, {session.get_inputs()[0].name: np.zeros((3, 3, 16, 16), np.float32)}
    )
    assert logits.shape == (3, 10)

    # The worse model registers as v2 but does not take the champion alias.
    job2 = stack.wait(worse_id, {"succeeded", "failed"})
    assert job2["state"] == "succeeded", job2["error"]
    assert job2["model_version"] == "2" and job2["metrics"]["top1"] < job["metrics"]["top1"]
    assert stack.http.get("/models/digits-e2e").json()["champion_version"] == 1

    # Fine-tuning from the registered champion starts from its weights: the same tiny-lr
    # single epoch scores like the champion instead of like an untrained model.
    job3 = stack.wait(tuned_id, {"succeeded", "failed"})
    assert job3["state"] == "succeeded", job3["error"]
    assert job3["metrics"]["top1"] > 0.5 > job2["metrics"]["top1"]


def test_bad_data_fails_at_once_with_reason(stack: Stack) -> None:
    root = str(stack.env["FOVEA_DATA_ROOTS"])
    # a layout the scan at submit can see is wrong: refused before anything is queued
    empty = digits_spec(quick=True, name="empty", dataset={"uri": root + "/empty"})
    r = stack.http.post("/jobs", json=empty)
    assert r.status_code == 422 and "contains no image files" in r.json()["message"], r.text
    # files that look right but none decodes: the worker fails the job once, no retries
    spec = digits_spec(
        quick=True, name="unreadable", dataset={"uri": root + "/unreadable"}, max_retries=3
    )
    r = stack.http.post("/jobs", json=spec)
    assert r.status_code == 201, r.text
    job = stack.wait(r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=180)
    assert job["state"] == "failed" and job["attempt"] == 1  # user error: never retried
    assert "no readable images" in job["error"]


def test_cancel_running_job_stops_ray_work(stack: Stack) -> None:
    spec = digits_spec(
        quick=True,
        name="long",
        train={"epochs": 200, "image_size": 32, "batch_size": 16, "early_stopping_patience": None},
    )
    job_id = stack.http.post("/jobs", json=spec).json()["id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = stack.http.get(f"/jobs/{job_id}").json()
        if job["state"] == "running" and (job.get("progress") or {}).get("step"):
            break
        time.sleep(0.5)
    assert job["state"] == "running", job
    r = stack.http.post(f"/jobs/{job_id}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested"]
    job = stack.wait(job_id, {"cancelled", "succeeded", "failed"}, timeout=90)
    assert job["state"] == "cancelled"
    # Ray really stopped it: no process runs the job any more, and the worker itself logs
    # nothing more (its MLflow run, which the scheduler does not filter, stops growing and
    # was ended KILLED; the logger flushes every 2 s while a job trains).
    out = subprocess.run(["pgrep", "-f", f"fovea-job-{job_id}"], capture_output=True, text=True)
    assert out.stdout.strip() == "", out.stdout
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{stack.home / 'mlflow.db'}")
    logged = len(client.get_metric_history(job["mlflow_run_id"], "train/loss"))
    assert logged > 0
    time.sleep(5)
    assert len(client.get_metric_history(job["mlflow_run_id"], "train/loss")) == logged
    assert client.get_run(job["mlflow_run_id"]).info.status == "KILLED"


def _colour_folder(root: Path, *, per_class: int = 24, size: int = 24) -> Path:
    """Three classes a small CNN separates easily (mostly red / green / blue) + 1 corrupt."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
            img[..., c] = rng.integers(160, 255, size=(size, size), dtype=np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    (root / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_killed_worker_is_retried_from_checkpoint(stack: Stack) -> None:
    import signal

    data = _colour_folder(Path(stack.env["FOVEA_DATA_ROOTS"]) / "colours")
    spec = digits_spec(
        quick=True,
        name="colours",
        dataset={"uri": str(data), "format": "imagefolder", "val_split": 0.25},
        train={
            "epochs": 6,
            "batch_size": 8,
            "lr": 0.003,
            "image_size": 24,
            "early_stopping_patience": None,
            "warmup_epochs": 0,
        },
        max_retries=1,
    )
    job_id = stack.http.post("/jobs", json=spec).json()["id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        job = stack.http.get(f"/jobs/{job_id}").json()
        if (job.get("progress") or {}).get("epoch", 0) >= 3:
            break
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.2)
    assert (job.get("progress") or {}).get("epoch", 0) >= 3, job
    # Inject the fault: kill the Ray worker process running this job.
    out = subprocess.run(["pgrep", "-f", f"fovea-job-{job_id}"], capture_output=True, text=True)
    pids = [int(p) for p in out.stdout.split()]
    assert pids, "worker process not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    job = stack.wait(job_id, {"succeeded", "failed", "cancelled"}, timeout=240)
    assert job["state"] == "succeeded", (job["error"], job["events"])
    assert job["attempt"] == 2
    kinds = [e["kind"] for e in job["events"]]
    states = [e["to_state"] for e in job["events"] if e["kind"] == "state"]
    assert states == ["running", "queued", "running", "succeeded"], states
    resumed = [e for e in job["events"] if e["kind"] == "resumed"]
    assert resumed and resumed[0]["data"]["epoch"] >= 2  # not from scratch
    # The corrupt file was skipped and counted, in the events, on each attempt.
    skipped = [e for e in job["events"] if (e["data"] or {}).get("corrupt_images_skipped")]
    assert skipped and skipped[0]["data"]["corrupt_images_skipped"] == 1, kinds
    assert job["metrics"]["top1"] > 0.8  # chance is 1/3


def test_job_larger_than_cluster_waits_and_says_why(stack: Stack) -> None:
    spec = digits_spec(quick=True, name="huge", resources={"cpus": 48})
    job_id = stack.http.post("/jobs", json=spec).json()["id"]
    deadline = time.monotonic() + 30
    kinds: list[str] = []
    while time.monotonic() < deadline and "waiting_for_resources" not in kinds:
        job = stack.http.get(f"/jobs/{job_id}").json()
        kinds = [e["kind"] for e in job["events"]]
        time.sleep(0.3)
    assert job["state"] == "queued" and "waiting_for_resources" in kinds
    assert "48 CPUs" in job["events"][-1]["message"]
    assert stack.http.post(f"/jobs/{job_id}/cancel").json()["state"] == "cancelled"
