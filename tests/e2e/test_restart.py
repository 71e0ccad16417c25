"""Kills, restarts and drains against real processes: `fovea up`, `fovea api` and
`fovea scheduler`, real local Ray, the real MLflow store, over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.support.servers import TOKEN, free_port
from tests.support.specs import digits_spec, merged
from tests.support.stack import Stack

pytestmark = pytest.mark.slow


def spec(**over):  # type: ignore[no-untyped-def]
    """Digits at 16 px in batches of 16: 90 steps an epoch, time to kill it mid-job."""
    base = {
        "name": "restart",
        "dataset": {"val_split": 0.2},
        "train": {
            "epochs": 2,
            "batch_size": 16,
            "warmup_epochs": 0,
            "early_stopping_patience": None,
        },
    }
    return digits_spec(quick=True, **merged(base, over))


def mlflow(home: Path):  # type: ignore[no-untyped-def]
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")


def wait_progress(stack: Stack, job_id: str, *, epoch: int, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stack.http.get(f"/jobs/{job_id}").json()
        progress = job.get("progress") or {}
        if job["mlflow_run_id"] and progress.get("epoch", 0) >= epoch and progress.get("step"):
            return job
        assert job["state"] in ("queued", "running"), job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not reach epoch {epoch}: {job}")


def worker_pids(job_id: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"fovea-job-{job_id}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_killed_worker_without_retries_leaves_no_run_running(stack: Stack) -> None:
    job_id = stack.http.post("/jobs", json=spec(name="no-retries", max_retries=0)).json()["id"]
    job = wait_progress(stack, job_id, epoch=1)
    pids = worker_pids(job_id)
    assert pids, "worker process not found"
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    job = stack.wait(job_id, {"succeeded", "failed", "cancelled"}, timeout=120)
    assert job["state"] == "failed", job
    assert any("no retries left" in e["message"] for e in job["events"]), job["events"]
    client = mlflow(stack.home)
    deadline = time.monotonic() + 30
    while client.get_run(job["mlflow_run_id"]).info.status == "RUNNING":
        assert time.monotonic() < deadline, "the dead attempt's MLflow run stayed RUNNING"
        time.sleep(0.5)
    assert client.get_run(job["mlflow_run_id"]).info.status == "FAILED"


def test_sigkill_of_the_scheduler_then_restart_finishes_once(tmp_path: Path) -> None:
    """`fovea up` (API, scheduler and the local Ray it started) is SIGKILLed mid-job and
    started again: the job is found at once (its scheduler's process is gone), retried from
    its checkpoint in the same MLflow run, and ends succeeded exactly once, with one point
    per step in its metric history and its run FINISHED."""
    data = tmp_path / "data"
    data.mkdir()
    stack = Stack(tmp_path / "home", data, env={"FOVEA_RETRY_BACKOFF_S": "0.5"})
    stack.start()
    try:
        # three epochs: the kill lands in the second, with one to go
        job = spec(max_retries=1, train={"epochs": 3})
        job_id = stack.http.post("/jobs", json=job).json()["id"]
        run_id = wait_progress(stack, job_id, epoch=2)["mlflow_run_id"]  # a checkpoint exists
        client = mlflow(stack.home)
        deadline = time.monotonic() + 60  # and epoch 1's points reached MLflow (2 s flushes):
        while not client.get_metric_history(run_id, "val/loss"):  # the kill loses no point
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert stack.proc is not None
        stack.proc.send_signal(signal.SIGKILL)
        stack.proc.wait(30)
        deadline = time.monotonic() + 60  # Ray's own reaper takes the worker down with it
        while worker_pids(job_id) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not worker_pids(job_id), "the job's worker outlived its Ray"
        stack.start()
        job = stack.wait(job_id, {"succeeded", "failed", "cancelled"}, timeout=300)
    finally:
        stack.stop()
    assert job["state"] == "succeeded", (job["error"], job["events"])
    states = [e["to_state"] for e in job["events"] if e["kind"] == "state"]
    assert states == ["running", "queued", "running", "succeeded"], states
    assert any("is gone" in e["message"] for e in job["events"]), job["events"]
    resumed = [e for e in job["events"] if e["kind"] == "resumed"]
    assert resumed and resumed[0]["data"]["epoch"] >= 1, "not resumed from its checkpoint"
    run = client.get_run(job["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "val/loss"):
        steps = Counter(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps and max(steps.values()) == 1, {s: n for s, n in steps.items() if n > 1}
    assert len(client.get_metric_history(run.info.run_id, "val/loss")) == 3  # every epoch


def test_api_and_scheduler_as_separate_processes_and_sigterm_drains(tmp_path: Path) -> None:
    """`fovea api` twice and `fovea scheduler` once, on one store: a job submitted through
    either API runs; SIGTERM makes the scheduler claim nothing more, let its running job
    finish, and exit 0."""
    home, data = tmp_path / "home", tmp_path / "data"
    data.mkdir()
    home.mkdir()
    env = {
        **os.environ,
        "FOVEA_HOME": str(home),
        "FOVEA_API_TOKEN": TOKEN,
        "FOVEA_DATA_ROOTS": str(data),
        "FOVEA_SCHEDULER_INTERVAL_S": "0.3",
    }
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    log = open(home / "procs.log", "wb")  # noqa: SIM115
    try:
        for port in ports:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "fovea", "api", "--port", str(port)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "fovea", "scheduler"], env=env, stdout=log, stderr=log
        )
        procs.append(scheduler)
        clients = [
            httpx.Client(
                base_url=f"http://127.0.0.1:{p}",
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=30,
            )
            for p in ports
        ]
        for client in clients:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, (home / "procs.log").read_text()[-3000:]
                time.sleep(0.5)
        one = spec(name="one", train={"epochs": 1})  # still running a second after it starts
        first = clients[0].post("/jobs", json=one).json()["id"]
        deadline = time.monotonic() + 180
        while clients[1].get(f"/jobs/{first}").json()["state"] != "running":
            assert time.monotonic() < deadline, (home / "procs.log").read_text()[-3000:]
            time.sleep(0.3)
        scheduler.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        second = clients[1].post("/jobs", json=spec(name="two")).json()["id"]
        assert scheduler.wait(240) == 0, (home / "procs.log").read_text()[-3000:]
        done = clients[0].get(f"/jobs/{first}").json()
        assert done["state"] == "succeeded", done
        assert clients[0].get(f"/jobs/{second}").json()["state"] == "queued"  # never claimed
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
        log.close()
