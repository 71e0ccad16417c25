"""End to end: a real `fovea up` process, real local Ray, real MLflow store, over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.support import free_port

pytestmark = pytest.mark.slow
TOKEN = "e2e-token"


class Stack:
    def __init__(self, home: Path, data_root: Path) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FOVEA_HOME": str(home),
            "FOVEA_PORT": str(self.port),
            "FOVEA_API_TOKEN": TOKEN,
            "FOVEA_DATA_ROOTS": str(data_root),
            "FOVEA_SCHEDULER_INTERVAL_S": "0.3",
        }
        self.log = home / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fovea", "up"],
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"fovea up did not answer in 120 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def wait(self, job_id: str, states: set[str], timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            time.sleep(0.5)
        raise AssertionError(
            f"job {job_id} not in {states} after {timeout}s: {job}\n{self.log.read_text()[-4000:]}"
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    (data / "empty" / "someclass").mkdir(parents=True)
    s = Stack(root / "home", data)
    s.start()
    yield s
    s.stop()


def digits_spec(**over):  # type: ignore[no-untyped-def]
    spec = {
        "name": "digits-e2e",
        "task": "classification",
        "dataset": {"uri": "builtin://digits", "format": "imagefolder", "val_split": 0.2},
        "model": {"arch": "smallcnn"},
        "train": {
            "epochs": 4,
            "batch_size": 64,
            "lr": 0.003,
            "image_size": 32,
            "warmup_epochs": 0.5,
            "seed": 0,
        },
        "resources": {"cpus": 1},
        "register_as": "digits-e2e",
    }
    spec.update(over)
    return spec


def test_train_register_and_serve(stack: Stack) -> None:
    r = stack.http.post("/jobs", json=digits_spec())
    assert r.status_code == 201, r.text
    job = stack.wait(r.json()["id"], {"succeeded", "failed", "cancelled"})
    assert job["state"] == "succeeded", (job["error"], job["events"])
    assert job["metrics"]["top1"] > 0.9
    assert job["attempt"] == 1 and job["mlflow_run_id"]
    assert job["model_name"] == "digits-e2e" and job["model_version"] == "1"
    kinds = [e["kind"] for e in job["events"]]
    assert kinds[0] == "submitted" and "model_registered" in kinds
    assert [e["to_state"] for e in job["events"] if e["kind"] == "state"] == [
        "running",
        "succeeded",
    ]

    model = stack.http.get("/models/digits-e2e").json()
    assert model["champion_version"] == "1"

    # A plain MLflow client in a fresh process, no fovea import of its own.
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images[-40:] * (255 / 16)).astype(np.uint8)  # NHW grey
    np.save(stack.home / "batch.npy", images)
    code = textwrap.dedent(f"""
        import json, numpy as np, mlflow
        mlflow.set_tracking_uri({("sqlite:///" + str(stack.home / "mlflow.db"))!r})
        m = mlflow.pyfunc.load_model("models:/digits-e2e@champion")
        out = m.predict(np.load({str(stack.home / "batch.npy")!r}))
        print(json.dumps({{"ids": [int(x) for x in out["class_id"]],
                          "probs": [list(map(float, p)) for p in out["probabilities"]]}}))
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=stack.home
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    accuracy = np.mean(np.array(out["ids"]) == digits.target[-40:])
    assert accuracy >= 0.85, (accuracy, out["ids"])
    probs = np.array(out["probs"])
    assert probs.shape == (40, 10) and np.allclose(probs.sum(1), 1, atol=1e-4)

    # A worse model (1 epoch, tiny lr) registers as v2 but does not take the champion alias.
    worse = digits_spec(train={"epochs": 1, "lr": 1e-5, "image_size": 32, "warmup_epochs": 0})
    job2 = stack.wait(stack.http.post("/jobs", json=worse).json()["id"], {"succeeded", "failed"})
    assert job2["state"] == "succeeded", job2["error"]
    assert job2["model_version"] == "2" and job2["metrics"]["top1"] < job["metrics"]["top1"]
    assert stack.http.get("/models/digits-e2e").json()["champion_version"] == "1"


def test_bad_data_fails_at_once_with_reason(stack: Stack) -> None:
    spec = digits_spec(
        name="empty",
        dataset={"uri": str(stack.env["FOVEA_DATA_ROOTS"]) + "/empty"},
        register_as=None,
        max_retries=3,
    )
    r = stack.http.post("/jobs", json=spec)
    assert r.status_code == 201, r.text
    job = stack.wait(r.json()["id"], {"succeeded", "failed", "cancelled"}, timeout=180)
    assert job["state"] == "failed" and job["attempt"] == 1  # user error: never retried
    assert "empty" in job["error"]


def test_cancel_running_job_stops_ray_work(stack: Stack) -> None:
    spec = digits_spec(
        name="long",
        train={"epochs": 200, "image_size": 32, "batch_size": 16, "early_stopping_patience": None},
        register_as=None,
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
    # Ray really stopped it: progress no longer advances.
    p1 = stack.http.get(f"/jobs/{job_id}").json()["progress"]
    time.sleep(3)
    assert stack.http.get(f"/jobs/{job_id}").json()["progress"] == p1
