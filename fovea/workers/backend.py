"""Start, watch and stop jobs on Ray. The scheduler's only window onto the cluster."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import (
    GetTimeoutError,
    NodeDiedError,
    ObjectLostError,
    OutOfMemoryError,
    RayActorError,
    RayTaskError,
    TaskCancelledError,
    WorkerCrashedError,
)

from fovea.workers import distributed
from fovea.workers.types import JobResult, WorkerJob

log = logging.getLogger(__name__)

BOARD_NAME = "fovea-status-board"
# Failures of the machine or process, not of the user's job: retried from the checkpoint.
_RETRYABLE = (WorkerCrashedError, NodeDiedError, ObjectLostError, OutOfMemoryError, RayActorError)


@ray.remote(num_cpus=0)
class StatusBoard:
    """Tiny actor workers push progress and events to; the scheduler drains it.

    It also carries cooperative cancel flags back to the workers.
    """

    def __init__(self) -> None:
        self._progress: dict[str, dict[str, Any]] = {}
        self._events: dict[str, list[dict[str, Any]]] = {}
        self._cancel: set[str] = set()

    def push(
        self, job_id: str, progress: dict[str, Any] | None, events: list[dict[str, Any]]
    ) -> bool:
        if progress is not None:
            self._progress[job_id] = progress
        if events:
            self._events.setdefault(job_id, []).extend(events)
        return job_id in self._cancel

    def drain(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for job_id in set(self._progress) | set(self._events):
            out[job_id] = {
                "progress": self._progress.pop(job_id, None),
                "events": self._events.pop(job_id, []),
            }
        return out

    def cancel(self, job_id: str) -> None:
        self._cancel.add(job_id)

    def forget(self, job_id: str) -> None:
        self._cancel.discard(job_id)
        self._progress.pop(job_id, None)
        self._events.pop(job_id, None)


@ray.remote(max_retries=0)
def _run_job_remote(job: WorkerJob, board: Any) -> JobResult:
    from fovea.workers.runtime import run_job

    return run_job(job, board=board)


@dataclass
class Handle:
    job_id: str
    attempt: int
    ref: ray.ObjectRef
    cpus: float
    gpus: float
    started: float = field(default_factory=time.monotonic)
    cancel_sent_at: float | None = None
    force_cancelled: bool = False


@dataclass
class Outcome:
    result: JobResult | None = None  # the worker returned (succeeded, failed or cancelled)
    lost: str | None = None  # the worker died: retryable
    killed: bool = False  # we force-cancelled it


class RayBackend:
    """Runs each job as one Ray task with the job's resource request."""

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        cancel_grace_s: float = 15.0,
    ) -> None:
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if address:
                kwargs["address"] = address
            else:
                # Embedded default: a local Ray on loopback only (token auth stays on).
                kwargs.update(num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address="127.0.0.1")
                os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                # Ray runs workers at nice 15, so on a small machine every burst of the
                # control plane (raylet, this process) preempts training; run them at 0.
                os.environ.setdefault("RAY_worker_niceness", "0")
            ray.init(**kwargs)
        self.cancel_grace_s = cancel_grace_s
        try:
            self.board = ray.get_actor(BOARD_NAME)
        except ValueError:
            self.board = StatusBoard.options(name=BOARD_NAME, get_if_exists=True).remote()

    def capacity(self) -> tuple[float, float]:
        res = ray.cluster_resources()
        return float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))

    def submit(self, job: WorkerJob) -> Handle:
        ray.get(self.board.forget.remote(job.job_id))
        if job.workers > 1:  # data-parallel under Ray Train: its workers hold the resources
            ref = distributed.start(job, self.board)
        else:
            ref = _run_job_remote.options(
                num_cpus=job.cpus, num_gpus=job.gpus, name=f"fovea-job-{job.job_id}"
            ).remote(job, self.board)
        return Handle(job.job_id, job.attempt, ref, job.cpus * job.workers, job.gpus * job.workers)

    def poll(self, handle: Handle) -> Outcome | None:
        """None while the job runs; an Outcome once it has ended one way or another."""
        ready, _ = ray.wait([handle.ref], timeout=0)
        if not ready:
            if (
                handle.cancel_sent_at is not None
                and not handle.force_cancelled
                and time.monotonic() - handle.cancel_sent_at > self.cancel_grace_s
            ):
                log.warning(
                    "job %s ignored the cancel flag; force-killing its worker", handle.job_id
                )
                ray.cancel(handle.ref, force=True)
                handle.force_cancelled = True
            return None
        try:
            return Outcome(result=ray.get(handle.ref, timeout=5))
        except (TaskCancelledError, GetTimeoutError):
            return Outcome(killed=True)
        except _RETRYABLE as exc:
            if handle.force_cancelled:
                return Outcome(killed=True)
            return Outcome(lost=f"{type(exc).__name__}: {_first_line(exc)}")
        except RayTaskError as exc:
            if handle.force_cancelled:
                return Outcome(killed=True)
            # run_job catches every exception it can; reaching here means a bug in it.
            return Outcome(
                result=JobResult(status="failed", error=f"internal error: {_first_line(exc)}")
            )

    def cancel(self, handle: Handle) -> None:
        """Ask the worker to stop at its next step; force-kill after the grace period."""
        if handle.cancel_sent_at is None:
            handle.cancel_sent_at = time.monotonic()
            self.board.cancel.remote(handle.job_id)

    def drain_status(self) -> dict[str, dict[str, Any]]:
        return ray.get(self.board.drain.remote(), timeout=30)

    def shutdown(self) -> None:
        if ray.is_initialized():
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
