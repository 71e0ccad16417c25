"""What runs inside a Ray worker: WorkerJob -> JobResult.

A job's life (`_run_job`): open its MLflow run, then the phases of fovea.workers.phases,
prepare -> train -> publish, and the result; a user error or a crash anywhere fails it by
the failure policy (fovea.workers.failures). BoardReporter carries progress and events to
the status board on the way.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import torch

from fovea import priority
from fovea.tasks import DataConfig, ModelConfig, UserError, get_task
from fovea.tasks.engine import FitResult, fit
from fovea.tracking.logger import RunLogger
from fovea.workers import phases
from fovea.workers.failures import OutcomeKind, classify_exception
from fovea.workers.types import JobResult, WorkerJob

log = logging.getLogger(__name__)


class BoardReporter:
    """Engine Reporter: metrics to MLflow (buffered), progress and events to the board.

    Pushes to the board (fovea.workers.board) are throttled to one per `interval_s` (the
    job's `progress_interval_s`: as often as the scheduler drains the board) and sent from
    a thread of the reporter's own, never waited on by the training loop (see `push`);
    events go at once.
    """

    def __init__(
        self, *, job_id: str, board: Any, logger: Any, interval_s: float = 2.0, attempt: int = 0
    ) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.board = board
        self.logger = logger
        self.interval_s = interval_s
        self._events: list[dict[str, Any]] = []
        self._progress: dict[str, Any] | None = None
        self._last_push = 0.0
        self._cancelled = False
        self._lock = threading.Lock()
        self._sender = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="fovea-board", initializer=priority.yield_to_training
        )
        self._inflight: tuple[Future[bool], list[dict[str, Any]]] | None = None

    # Reporter protocol -----------------------------------------------------------------
    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)

    def progress(
        self, *, epoch: int, epochs: int, step: int, steps: int, metrics: Mapping[str, float]
    ) -> None:
        self._progress = {
            "epoch": epoch,
            "epochs": epochs,
            "step": step,
            "steps": steps,
            "fraction": round(((epoch - 1) + step / max(steps, 1)) / max(epochs, 1), 4),
            "metrics": {k: float(v) for k, v in metrics.items()},
            "at": time.time(),
        }
        if time.monotonic() - self._last_push >= self.interval_s:
            self.push()

    def event(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            self._events.append({"kind": kind, "message": message, "data": dict(data or {})})
        self.push()

    def should_stop(self) -> bool:
        return self._cancelled

    # EventSink for tasks ---------------------------------------------------------------
    def __call__(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        self.event(kind, message, data)

    def push(self, *, wait: bool = False) -> None:
        """Send the progress and the pending events to the board.

        The training thread never waits on the control plane: the push is handed to the
        sender thread and its answer (whether a cancel was asked) taken in by a later
        push. While one push is still on its way the next leaves its events queued for the
        one after. `wait=True` (at the end of a job) sends everything and waits for the
        answer, up to 10 s.
        """
        if self._inflight is not None and not self._settle(timeout=10.0 if wait else 0.0):
            return
        with self._lock:
            events, self._events = self._events, []
        self._last_push = time.monotonic()
        progress = self._progress
        future = self._sender.submit(self.board.push, self.job_id, progress, events, self.attempt)
        self._inflight = (future, events)
        if wait:
            self._settle(timeout=10.0)

    def _settle(self, *, timeout: float) -> bool:
        """Take in the answer of the push on its way; False while it is still pending."""
        assert self._inflight is not None
        future, events = self._inflight
        if timeout == 0 and not future.done():
            return False
        self._inflight = None
        try:
            self._cancelled = bool(future.result(timeout=timeout)) or self._cancelled
        except Exception as exc:  # the control plane being away must not kill training
            if isinstance(exc, FutureTimeout):
                exc = TimeoutError(f"no answer from the status board in {timeout:.0f} s")
            log.warning("status push failed for job %s: %s", self.job_id, exc)
            self._requeue(events)
        return True

    def _requeue(self, events: list[dict[str, Any]]) -> None:
        with self._lock:
            self._events[:0] = events


def run_job(job: WorkerJob, *, board: Any, fit_fn: Callable[..., FitResult] = fit) -> JobResult:
    """Train one job to the end. Never raises for a user error: it returns status 'failed'.

    `fit_fn` trains (engine.fit's signature); fovea.workers.distributed passes one that runs
    `fit` on a Ray Train worker group, and this process does the rest on CPU. The calling
    thread trains at the normal policy, the control plane around it in batch
    (fovea.priority)."""
    with priority.doing_the_work():
        return _run_job(job, board=board, fit_fn=fit_fn)


def _run_job(job: WorkerJob, *, board: Any, fit_fn: Callable[..., FitResult]) -> JobResult:
    started = time.monotonic()
    torch.set_num_threads(max(1, int(job.cpus)))
    reporter = BoardReporter(
        job_id=job.job_id,
        board=board,
        logger=None,
        attempt=job.attempt,
        interval_s=job.progress_interval_s,
    )
    logger = None
    try:
        task = get_task(job.task, train=job.train)
        logger = _open_run(job, reporter=reporter)
        prepared = phases.prepare(job, task=task, logger=logger, events=reporter)
        trained = phases.train(job, prepared, logger=logger, reporter=reporter, fit_fn=fit_fn)
        if trained.result.cancelled:
            return _cancelled(logger, reporter)
        published = phases.publish(job, prepared, trained, logger=logger, events=reporter)
        return _succeeded(
            job, trained, published, logger=logger, reporter=reporter, started=started
        )
    except UserError as exc:
        return _failed(logger, reporter, str(exc), OutcomeKind.USER_ERROR)
    except Exception as exc:  # a bug or an environment problem: the policy tells which
        log.error("job %s crashed:\n%s", job.job_id, traceback.format_exc())
        return _failed(logger, reporter, f"{type(exc).__name__}: {exc}", classify_exception(exc))


def _open_run(job: WorkerJob, *, reporter: BoardReporter) -> RunLogger:
    """The job's MLflow run: a new one, or on a retry the run the first attempt opened."""
    logger = RunLogger(
        tracking_uri=job.tracking_uri,
        experiment=None if job.mlflow_run_id else job.experiment,
        artifact_root=job.artifact_root,
        run_name=f"{job.name}-{job.job_id}",
        run_id=job.mlflow_run_id,
        tags={"fovea.job_id": job.job_id, "fovea.task": job.task, "fovea.project": job.project},
    )
    reporter.logger = logger
    reporter.event("mlflow_run", f"MLflow run {logger.run_id}", {"run_id": logger.run_id})
    if job.mlflow_run_id is None:
        logger.log_params(_params(job))
    logger.set_tags({"fovea.attempt": str(job.attempt)})
    return logger


def _succeeded(
    job: WorkerJob,
    trained: phases.Trained,
    published: phases.Published,
    *,
    logger: RunLogger,
    reporter: BoardReporter,
    started: float,
) -> JobResult:
    logger.close(status="FINISHED")
    # The best weights now live in MLflow; checkpoints only serve resuming a failed run.
    shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    reporter.push(wait=True)
    result, record = trained.result, published.record
    return JobResult(
        status="succeeded",
        metrics=result.metrics,
        mlflow_run_id=logger.run_id,
        model_name=record.name if record else None,
        model_version=str(record.version) if record else None,
        is_champion=bool(record and record.is_champion),
        train_images_per_s=result.train_images_per_s,
        timings={
            "wall_s": time.monotonic() - started,
            "fit_s": trained.fit_s,
            "mlflow_s": logger.mlflow_seconds,
            "mlflow_blocking_s": logger.blocking_seconds,
            "mlflow_blocking_fit_s": trained.mlflow_blocking_fit_s,
            "mlflow_fit_s": trained.mlflow_fit_s,
            "mlflow_cpu_fit_s": trained.mlflow_cpu_fit_s,
        },
    )


def _cancelled(logger: RunLogger, reporter: BoardReporter) -> JobResult:
    logger.close(status="KILLED")
    reporter.push(wait=True)
    return JobResult(status="cancelled", mlflow_run_id=logger.run_id)


def _failed(logger: Any, reporter: BoardReporter, error: str, kind: OutcomeKind) -> JobResult:
    run_id = None
    if logger is not None:
        run_id = logger.run_id
        try:
            logger.set_tags({"fovea.error": error[:5000]})
            logger.close(status="FAILED")
        except Exception:
            log.warning("could not close the MLflow run", exc_info=True)
    reporter.push(wait=True)
    return JobResult(status="failed", error=error, mlflow_run_id=run_id, failure=kind.value)


def _params(job: WorkerJob) -> dict[str, Any]:
    def fields(obj: DataConfig | ModelConfig | Any) -> dict[str, Any]:
        return {k: getattr(obj, k) for k in obj.__dataclass_fields__}

    data = fields(job.data)
    data["augment"] = fields(job.data.augment)
    return {
        "task": job.task,
        "data": data,
        "model": fields(job.model),
        "train": fields(job.train),
        "resources": {"cpus": job.cpus, "gpus": job.gpus, "workers": job.workers},
    }
