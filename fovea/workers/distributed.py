"""Multi-worker jobs: one job trained by `workers` data-parallel processes under Ray Train.

A job with `resources.workers > 1` runs as a driver Ray task that holds no resources (its
workers hold them) and runs `runtime.run_job` exactly as a one-worker job does, with one
difference: the `fit_fn` it passes (`GroupFit`) starts a `TorchTrainer` (Ray Train v2:
`ScalingConfig`, `RunConfig(storage_path, failure_config, checkpoint_config)`) whose
workers each run the same `engine.fit` (DDP over gloo on CPU, nccl on GPU; see
fovea/tasks/ddp.py), and rebuilds fit's result from the group's last checkpoint. The MLflow
run, params, the dataset record, the final metrics, figures, the model and its
registration stay with the driver, in the one run.

Inside the group:
- rank 0 logs its training curves into the driver's MLflow run (by run id) and sends
  progress and events to the status board; other ranks open no MLflow run and log nothing;
- after every epoch rank 0's checkpoint (engine's last.pt) goes to `ray.train.report`, and
  Ray Train keeps the latest two under FOVEA_CHECKPOINT_ROOT/<job id>/, which must be
  storage every node reaches (a local path on a multi-node cluster is warned about);
- when a worker dies (process killed, node lost) Ray Train restarts the whole group, up to
  the job's `max_retries` times; every rank resumes via `ray.train.get_checkpoint()` and
  rank 0 continues the same MLflow run, whose logger skips steps it already holds, so the
  metric history has one point per step;
- a checkpoint counts once Ray Train's controller has collected every rank's report (it
  polls every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, 2 s by default): a worker dying within
  that window resumes the group from the checkpoint before;
- a scheduler retry of the job (a new attempt) finds the same run folder and resumes too;
- the last report carries the outcome (finished, cancelled or a user error).
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
import torch
from torch import nn

from fovea import priority
from fovea.tasks import DataBundle, Task, TrainConfig, UserError
from fovea.tasks.engine import CHECKPOINT_NAME, FitResult, NullReporter, fit, result_from_checkpoint
from fovea.workers.types import JobResult, WorkerJob

log = logging.getLogger(__name__)

OUTCOME_NAME = "outcome.json"
CHECKPOINTS_KEPT = 2


def start(job: WorkerJob, board: Any) -> ray.ObjectRef:
    """Start a multi-worker job; the ref resolves to its JobResult like a one-worker job's."""
    return _run_group_job.options(name=f"fovea-job-{job.job_id}").remote(job, board)


@ray.remote(num_cpus=0, max_retries=0)
def _run_group_job(job: WorkerJob, board: Any) -> JobResult:
    from fovea.workers.runtime import run_job

    return run_job(job, board=board, fit_fn=GroupFit(job=job, board=board))


@dataclass(frozen=True)
class GroupFit:
    """engine.fit's signature, trained by a Ray Train worker group."""

    job: WorkerJob
    board: Any

    def __call__(
        self,
        task: Task,
        model: nn.Module,
        data: DataBundle,
        config: TrainConfig,
        *,
        device: torch.device,  # the driver's; each worker picks its own
        checkpoint_dir: Path,
        reporter: Any,
    ) -> FitResult:
        from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        job = self.job
        warning = storage_warning(checkpoint_dir, nodes=_alive_nodes())
        if warning:
            log.warning("job %s: %s", job.job_id, warning)
            reporter.event("storage_warning", warning)
        backend = "nccl" if job.gpus > 0 else "gloo"
        reporter.event(
            "workers",
            f"{job.workers} workers ({backend}), {job.cpus:g} CPUs and {job.gpus:g} GPUs each; "
            f"global batch {config.batch_size} = {config.batch_size // job.workers} per worker",
            {"workers": job.workers, "backend": backend},
        )
        resources = {"CPU": job.cpus, **({"GPU": job.gpus} if job.gpus > 0 else {})}
        trainer = TorchTrainer(
            _train_worker,
            train_loop_config={
                "job": job,
                "board": self.board,
                "run_id": reporter.logger.run_id,
                "task": task,
                "model": model,
                "data": data,
                "config": config,
            },
            torch_config=TorchConfig(backend=backend),
            scaling_config=ScalingConfig(
                num_workers=job.workers, use_gpu=job.gpus > 0, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name=checkpoint_dir.name,
                storage_path=str(checkpoint_dir.parent),
                failure_config=FailureConfig(max_failures=job.max_retries),
                checkpoint_config=CheckpointConfig(num_to_keep=CHECKPOINTS_KEPT),
            ),
        )
        result = trainer.fit()  # raises TrainingFailedError once restarts are used up
        if result.checkpoint is None:
            raise RuntimeError("the worker group ended without reporting a checkpoint")
        with result.checkpoint.as_directory() as folder:
            return _read_outcome(Path(folder))


def storage_warning(checkpoint_dir: Path, *, nodes: int) -> str | None:
    """A warning when checkpoints go to a local path and the cluster has several nodes."""
    if nodes <= 1 or "://" in str(checkpoint_dir):
        return None
    return (
        f"checkpoints go to {checkpoint_dir.parent} (FOVEA_CHECKPOINT_ROOT), a local path, "
        f"and the Ray cluster has {nodes} nodes: it must be a filesystem every node mounts, "
        "or a restarted worker group cannot resume"
    )


def _alive_nodes() -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def _read_outcome(folder: Path) -> FitResult:
    outcome = json.loads((folder / OUTCOME_NAME).read_text())
    if outcome["status"] == "user_error":
        raise UserError(outcome["error"])
    return result_from_checkpoint(
        folder / CHECKPOINT_NAME,
        cancelled=outcome["status"] == "cancelled",
        resumed_from_epoch=outcome["resumed_from_epoch"],
        train_images_per_s=outcome["train_images_per_s"],
    )


# --- inside each Ray Train worker ---------------------------------------------------------


def _train_worker(loop: dict[str, Any]) -> None:
    """One rank: trains at the normal policy, the local Ray around it in batch."""
    with priority.doing_the_work():
        _train_rank(loop)


def _train_rank(loop: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    job: WorkerJob = loop["job"]
    rank = ray.train.get_context().get_world_rank()
    torch.set_num_threads(max(1, int(job.cpus)))
    device = ray.train.torch.get_device() if job.gpus > 0 else torch.device("cpu")
    _announce(loop["board"], job, rank)
    local = Path(tempfile.mkdtemp(prefix=f"fovea-{job.job_id}-rank{rank}-"))
    _restore(local)
    logger, reporter = _reporter(loop, rank)

    def report(metrics: dict[str, Any]) -> None:
        """A barrier of all ranks; rank 0's folder becomes the group's checkpoint."""
        if logger is not None:
            logger.flush()  # every point up to this checkpoint is in MLflow before it counts
        checkpoint = Checkpoint.from_directory(str(local)) if rank == 0 else None
        ray.train.report(metrics, checkpoint=checkpoint, delete_local_checkpoint_after_upload=False)

    try:
        result = fit(
            loop["task"],
            loop["model"],
            loop["data"],
            loop["config"],
            device=device,
            checkpoint_dir=local,
            reporter=reporter,
            on_checkpoint=lambda _path, epoch: report({"epoch": epoch}),
        )
        outcome = {
            "status": "cancelled" if result.cancelled else "finished",
            "resumed_from_epoch": result.resumed_from_epoch,
            "train_images_per_s": result.train_images_per_s,
        }
    except UserError as exc:  # the engine raises these on every rank at once
        outcome = {"status": "user_error", "error": str(exc)}
    if rank == 0:
        (local / OUTCOME_NAME).write_text(json.dumps(outcome))
        _push_now(reporter)
    report({"outcome": outcome["status"]})
    shutil.rmtree(local, ignore_errors=True)


def _push_now(reporter: Any) -> None:
    """Send rank 0's last events (early stop, cancel) before the group ends."""
    push = getattr(reporter, "push", None)
    if push is None:
        return
    if "wait" in inspect.signature(push).parameters:
        push(wait=True)  # a reporter that sends in the background: wait for it here
    else:
        push()


def _announce(board: Any, job: WorkerJob, rank: int) -> None:
    """One event per worker (re)start: where each rank runs, for people and the kill test."""
    data = {"rank": rank, "pid": os.getpid(), "host": socket.gethostname(), "attempt": job.attempt}
    event = {"kind": "worker_started", "message": f"rank {rank} started (pid {os.getpid()})"}
    try:
        board.push(job.job_id, None, [{**event, "data": data}])
    except Exception:  # the control plane being away must not stop training
        log.warning("could not announce rank %d of job %s", rank, job.job_id, exc_info=True)


def _restore(local: Path) -> None:
    """The group's latest checkpoint (after a restart or a retry) into `local`."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        saved = Path(folder) / CHECKPOINT_NAME
        if saved.is_file():
            shutil.copy2(saved, local / CHECKPOINT_NAME)


def _reporter(loop: dict[str, Any], rank: int) -> tuple[Any, Any]:
    """(MLflow logger or None, engine Reporter): rank 0 reports, the others stay silent."""
    if rank != 0:
        return None, NullReporter()
    from fovea.tracking.logger import RunLogger
    from fovea.workers.runtime import BoardReporter

    job: WorkerJob = loop["job"]
    logger = RunLogger(tracking_uri=job.tracking_uri, run_id=loop["run_id"])
    reporter = BoardReporter(
        job_id=job.job_id,
        board=loop["board"],
        logger=logger,
        attempt=job.attempt,  # the board fences stale attempts off by this
        interval_s=job.progress_interval_s,
    )
    return logger, reporter
