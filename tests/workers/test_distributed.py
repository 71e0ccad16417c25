"""Multi-worker jobs on a real local Ray: DDP under Ray Train, through the real backend.

Each job goes through `RayBackend.submit` -> the driver task -> a TorchTrainer of 2 CPU
workers (gloo) -> `engine.fit` on each rank, into a real MLflow store (sqlite) and a
real checkpoint folder, exactly as the scheduler would run it.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from fovea.tracking._mlflow import make_client
from fovea.workers.backend import RayBackend
from fovea.workers.distributed import storage_warning
from fovea.workers.types import JobResult, WorkerJob
from tests.support.specs import digits_spec, worker_job

pytestmark = pytest.mark.slow

EPOCHS = 3
# 1,437 training digits at 16 px; a global batch of 32: 44 steps an epoch
TRAIN = {"epochs": EPOCHS, "batch_size": 32, "lr": 3e-3, "warmup_epochs": 0.5, "seed": 7}
TRAIN_ONLY = {"image_size": 16, "augment": {"random_resized_crop": False, "rotation": False}}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("ddp-home")
    make_client(f"sqlite:///{home / 'mlflow.db'}").search_experiments()  # the schema, once
    return home


@pytest.fixture(scope="module")
def backend() -> Any:
    import ray

    # Ray Train's controller collects reports (the checkpoints) at this interval, 2 s by
    # default; a checkpoint counts once collected, so the kill below waits longer than it.
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.5"  # before the local Ray starts
    backend = RayBackend(num_cpus=2, num_gpus=0)
    yield backend
    ray.shutdown()


def make_job(
    home: Path, name: str, *, workers: int, register: bool = False, image_size: int = 16
) -> WorkerJob:
    spec = digits_spec(
        name=name,
        train={**TRAIN, **TRAIN_ONLY, "image_size": image_size, "early_stopping_patience": None},
        resources={"workers": workers, "cpus": 2 / workers},
        max_retries=2,
        **({} if register else {"register_as": None}),
    )
    # progress every 0.5 s: fine enough to kill a rank mid-epoch of a short job
    return worker_job(home, spec, experiment="ddp-tests", progress_s=0.5)


def run_to_end(
    backend: RayBackend, job: WorkerJob, *, on_status: Any = None, timeout_s: float = 400
) -> tuple[JobResult, list[dict[str, Any]]]:
    """Submit, then poll like the scheduler: (the result, every event the job sent)."""
    handle = backend.submit(job)
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = backend.drain_status().get(job.job_id, {})
        events += status.get("events", [])
        if on_status is not None:
            on_status(status.get("progress"), events)
        outcome = backend.poll(handle)
        if outcome is not None:
            events += backend.drain_status().get(job.job_id, {}).get("events", [])
            assert outcome.result is not None, f"the job was lost: {outcome}"
            return outcome.result, events
        time.sleep(0.2)
    raise AssertionError(f"job {job.job_id} still running after {timeout_s} s")


def metric_steps(run_id: str, home: Path, key: str) -> list[int]:
    client = make_client(f"sqlite:///{home / 'mlflow.db'}")
    return [m.step for m in client.get_metric_history(run_id, key)]


def fit_like_one_worker(job: WorkerJob) -> dict[str, float]:
    """The metrics of `job` trained as a one-worker job trains it (run_job: the task with
    its train config, the data, the seeded initial weights, engine.fit), in this process:
    the same numbers without starting a Ray worker and logging to MLflow. One thread: on
    two shared cores a second one made it 3x slower (tests/tasks/conftest.py)."""
    import torch

    from fovea.tasks import get_task
    from fovea.tasks.engine import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        task = get_task(job.task, train=job.train)
        data = task.build_data(job.data)
        torch.manual_seed(job.train.seed)
        model = task.build_model(job.model, num_classes=len(data.class_names))
        return fit(task, model, data, job.train, device=torch.device("cpu")).metrics
    finally:
        torch.set_num_threads(threads)


def test_two_workers_reach_the_metric_of_one(backend: RayBackend, home: Path) -> None:
    two, events = run_to_end(backend, make_job(home, "two-workers", workers=2, register=True))
    assert two.status == "succeeded", two.error
    top1_one = fit_like_one_worker(make_job(home, "one-worker", workers=1))["top1"]
    top1_two = two.metrics["top1"]
    # 10 classes: chance is 0.1. Same seed, same global batch: the same accuracy up to the
    # noise of a different data order per worker and per-worker BatchNorm statistics.
    assert top1_one > 0.7 and top1_two > 0.7
    assert abs(top1_one - top1_two) < 0.05, (top1_one, top1_two)
    ranks = sorted(e["data"]["rank"] for e in events if e["kind"] == "worker_started")
    assert ranks == [0, 1]
    assert two.model_name == "two-workers" and two.model_version == "1"
    # one point per step: rank 1 logged nothing, rank 0 every 10 steps and each epoch's end
    steps = metric_steps(two.mlflow_run_id, home, "train/loss")
    assert steps == sorted(set(steps)) and steps[-1] == EPOCHS * 44
    assert metric_steps(two.mlflow_run_id, home, "val/top1") == [1, 2, 3]
    client = make_client(f"sqlite:///{home / 'mlflow.db'}")
    run = client.get_run(two.mlflow_run_id)
    assert run.data.params["resources.workers"] == "2" and run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(two.mlflow_run_id, "plots")}
    assert "plots/training_curves.png" in artifacts
    # the checkpoints served their purpose: gone once the model is in MLflow
    assert not (home / "checkpoints" / "two-workers").exists()


def test_a_killed_worker_restarts_the_group_from_the_checkpoint(
    backend: RayBackend, home: Path
) -> None:
    job = make_job(home, "killed-worker", workers=2, image_size=32)  # epochs of seconds
    killed: dict[str, int] = {}

    def kill_rank_1_mid_epoch_2(progress: dict[str, Any] | None, events: list) -> None:
        if killed or progress is None or progress["epoch"] < 2:
            return
        if not progress["steps"] // 2 <= progress["step"] < progress["steps"] - 2:
            return  # mid-epoch: the last checkpoint collected, the epoch's end not near
        pid = next(
            e["data"]["pid"]
            for e in events
            if e["kind"] == "worker_started" and e["data"]["rank"] == 1
        )
        os.kill(pid, signal.SIGKILL)
        killed.update(pid=pid, epoch=progress["epoch"], step=progress["step"])

    result, events = run_to_end(backend, job, on_status=kill_rank_1_mid_epoch_2)
    assert killed, "the job ended before the kill"
    assert result.status == "succeeded", result.error
    kinds = [e["kind"] for e in events]
    assert kinds.count("worker_started") == 4  # 2 ranks, twice
    resumed = [e for e in events if e["kind"] == "resumed"]
    # from the checkpoint of the epoch before the one the kill landed in
    assert [e["data"]["epoch"] for e in resumed] == [killed["epoch"] - 1], killed
    # the same MLflow run throughout, one point per step
    for key in ("train/loss", "val/top1", "epoch/train_loss"):
        steps = metric_steps(result.mlflow_run_id, home, key)
        assert len(steps) == len(set(steps)), (key, sorted(Counter(steps).items()))
    assert metric_steps(result.mlflow_run_id, home, "val/top1") == [1, 2, 3]
    assert metric_steps(result.mlflow_run_id, home, "train/loss")[-1] == EPOCHS * 44
    assert result.metrics["top1"] > 0.7


def test_local_checkpoints_on_a_multi_node_cluster_are_warned_about() -> None:
    assert storage_warning(Path("/data/ckpt/job1"), nodes=1) is None
    warning = storage_warning(Path("/data/ckpt/job1"), nodes=3)
    assert warning is not None and "/data/ckpt" in warning and "3 nodes" in warning
