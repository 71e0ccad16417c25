"""Start, watch and stop jobs on Ray. The scheduler's only window onto the cluster."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

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

from fovea import priority
from fovea.workers import distributed
from fovea.workers.board import KVBoard
from fovea.workers.failures import Outcome, OutcomeKind, first_line, outcome_of_result
from fovea.workers.types import WorkerJob

log = logging.getLogger(__name__)

EMBEDDED_RAY_ENV = {
    "RAY_enable_metrics_collection": "0",
    "RAY_prestart_worker_first_driver": "0",
    "RAY_task_events_report_interval_ms": "60000",
    "RAY_event_stats": "0",
    "RAY_num_workers_soft_limit": "0",
    # Ray's own daemons, at the pace a one-machine stack needs (bench/overhead.py): node
    # stats for the (off) Ray dashboard every minute, not every 5 s; the dashboard agent
    # checks on its raylet every 2 s, not 0.4 s; the autoscaler (nothing to scale; stopped
    # after the start by _stop_idle_head_daemons, where it can be) every 30 s.
    "REPORTER_UPDATE_INTERVAL_MS": "60000",
    "RAY_DASHBOARD_AGENT_CHECK_PARENT_INTERVAL_S": "2",
    "AUTOSCALER_UPDATE_INTERVAL_S": "30",
    # The log monitor (workers' output to this console) looks for new log files every 2 s,
    # not ten times a second: a new worker's first lines come up to 2 s later, none lost,
    # and an idle stack wakes less (bench/RESULTS.md).
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0",
    "LOG_NAME_UPDATE_INTERVAL_S": "2",
    # The raylet's timers at 1 s, not 0.1-0.25 s: memory checks of the OOM killer, idle
    # workers to stop, object-store GC and pull retries, resource reports to the GCS (one
    # node: nothing else waits on them), so the raylet wakes, and preempts training, less.
    "RAY_memory_monitor_refresh_ms": "1000",
    "RAY_kill_idle_workers_interval_ms": "1000",
    "RAY_raylet_check_gc_period_milliseconds": "1000",
    "RAY_object_manager_timer_freq_ms": "1000",
    "RAY_raylet_report_resources_period_milliseconds": "1000",
}
NAMESPACE = "fovea"  # the Ray namespace of Fovea's named actors (as fovea.workers.serving)
# Failures of the machine or process, not of the user's job: retried from the checkpoint.
_RETRYABLE = (WorkerCrashedError, NodeDiedError, ObjectLostError, OutOfMemoryError, RayActorError)


@ray.remote(max_retries=0)
def _run_job_remote(job: WorkerJob, board: Any) -> Any:
    from fovea.workers.runtime import run_job

    return run_job(job, board=board)


@dataclass
class Handle:
    job_id: str
    attempt: int
    ref: Any  # a ray.ObjectRef for RayBackend; whatever a test backend keeps
    cpus: float
    gpus: float
    started: float = field(default_factory=time.monotonic)
    cancel_sent_at: float | None = None
    force_cancelled: bool = False


class Backend(Protocol):
    """What the scheduler needs of a cluster. RayBackend is the real one; tests inject
    fakes (fovea.workers.testing) to drive faults the real one cannot produce on cue."""

    def capacity(self) -> tuple[float, float]: ...  # total (cpus, gpus) of the cluster

    def submit(self, job: WorkerJob) -> Handle: ...

    def poll(self, handle: Handle) -> Outcome | None: ...  # None while it runs

    # `callback()` (from any thread) once the attempt has ended, so the scheduler need not
    # poll for outcomes
    def on_done(self, handle: Handle, callback: Callable[[], None]) -> None: ...

    def cancel(self, handle: Handle) -> None: ...

    def drain_status(self) -> dict[str, dict[str, Any]]: ...

    def release(self) -> None: ...  # nothing runs now: free what idles

    def idle(self) -> float | None: ...  # still nothing: seconds until it wants a call

    def shutdown(self) -> None: ...


class EmbeddedRay:
    """The local Ray of the embedded default (no FOVEA_RAY_ADDRESS), owned by this process.

    Started when work needs it and stopped after `idle_stop_s` with nothing on it, so an
    idle `fovea up` runs no Ray process at all (Ray's daemons cost CPU even doing nothing:
    bench/idle.py). Holders say what keeps it up: "jobs" while the scheduler runs
    any, "serving" once a model replica lives on it (replicas are never stopped behind the
    API's back). `idle_stop_s` 0: never stopped.
    """

    def __init__(
        self, *, num_cpus: int | None, num_gpus: int | None, idle_stop_s: float = 0.0
    ) -> None:
        self.num_cpus, self.num_gpus, self.idle_stop_s = num_cpus, num_gpus, idle_stop_s
        self._lock = threading.RLock()
        self._holders: set[str] = set()
        self._idle_since = time.monotonic()
        self._capacity: tuple[float, float] | None = None
        self.starts = 0  # for tests and benchmarks

    def ensure(self) -> None:
        with self._lock:
            if ray.is_initialized():
                return
            started = time.monotonic()
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            # Ray runs workers at nice 15, so on a small machine every burst of the
            # control plane (raylet, this process) preempts training; run them at 0.
            os.environ.setdefault("RAY_worker_niceness", "0")
            # Only what the embedded default needs: no metrics export (the Ray dashboard is
            # off), no idle worker started ahead of a job, task events batched rarely, idle
            # workers left after a job exit (each costs CPU doing nothing).
            for name, value in EMBEDDED_RAY_ENV.items():
                os.environ.setdefault(name, value)
            # a local Ray on loopback only (token auth stays on); its daemons and workers
            # never preempt training (fovea.priority: the worker that trains opts back in)
            with priority.starting_daemons():
                ray.init(
                    include_dashboard=False,
                    log_to_driver=True,
                    namespace=NAMESPACE,
                    num_cpus=self.num_cpus,
                    num_gpus=self.num_gpus,
                    _node_ip_address="127.0.0.1",
                )
            _stop_idle_head_daemons()
            res = ray.cluster_resources()
            self._capacity = (float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0)))
            self._idle_since = time.monotonic()
            self.starts += 1
            if self.starts > 1:
                log.info("local Ray started again in %.1f s", time.monotonic() - started)

    @property
    def running(self) -> bool:
        return ray.is_initialized()

    def capacity(self) -> tuple[float, float]:
        """What the local Ray has; known without it once it has run (it does not change)."""
        if self._capacity is None:
            self.ensure()
        assert self._capacity is not None
        return self._capacity

    def hold(self, holder: str) -> None:
        with self._lock:
            self.ensure()
            self._holders.add(holder)

    def let_go(self, holder: str) -> None:
        with self._lock:
            if holder in self._holders:
                self._holders.discard(holder)
                if not self._holders:
                    self._idle_since = time.monotonic()

    def stop_if_idle(self) -> float | None:
        """Stop Ray when it has had no holder for idle_stop_s; else the seconds until it
        would (None: nothing to wait for: stopped, held, or never stopped)."""
        with self._lock:
            if self.idle_stop_s <= 0 or self._holders or not ray.is_initialized():
                return None
            left = self.idle_stop_s - (time.monotonic() - self._idle_since)
            if left > 0:
                return left
            log.info("no job nor served model for %.0f s: stopping the local Ray", self.idle_stop_s)
            ray.shutdown()
            return None

    def shutdown(self) -> None:
        with self._lock:
            self._holders.clear()
            if ray.is_initialized():
                ray.shutdown()


def _stop_idle_head_daemons() -> None:
    """Stop the two daemons of Ray's head that the embedded default has no use for and
    that `ray.init` has no switch to leave out: the autoscaler's monitor (one machine of
    a fixed size: nothing to scale) and the dashboard's head process (started even with
    include_dashboard=False, for usage stats, which are off). Neither does anything else
    here, yet they wake several times a second (gRPC pollers on 250 ms deadlines), and on
    two cores a wakeup preempts a training thread while the other waits for it at the
    next barrier (bench/overhead.py). Through Ray's own Node.kill_* (what its fault
    tests use), so Ray's shutdown knows they are gone; where a Ray release lacks them,
    both stay up and nothing else changes."""
    node = getattr(ray._private.worker.global_worker, "node", None)
    for stop in ("kill_monitor", "kill_dashboard"):
        try:
            getattr(node, stop)(check_alive=False)
        except Exception as exc:  # a private API: keep the daemon, go on
            log.debug("could not stop Ray's %s: %s", stop.removeprefix("kill_"), exc)


_embedded: EmbeddedRay | None = None


def embedded() -> EmbeddedRay | None:
    """This process's local Ray, when it runs the embedded default (serving shares it)."""
    return _embedded


class RayBackend:
    """Runs each job as one Ray task with the job's resource request."""

    def __init__(
        self,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        cancel_grace_s: float = 15.0,
        idle_stop_s: float = 0.0,
    ) -> None:
        global _embedded
        self.local: EmbeddedRay | None = None
        if address:
            if not ray.is_initialized():
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=True,
                    namespace=NAMESPACE,
                )
        elif not ray.is_initialized() or _embedded is not None:
            # Started now (its size and any start-up error known at once); stopped when
            # idle for idle_stop_s, started again by the next job.
            self.local = _embedded or EmbeddedRay(
                num_cpus=num_cpus, num_gpus=num_gpus, idle_stop_s=idle_stop_s
            )
            self.local.idle_stop_s = idle_stop_s
            self.local.ensure()
            _embedded = self.local
        self.cancel_grace_s = cancel_grace_s
        # In the GCS's key-value store: no process of its own. On a cluster of its own it
        # outlives this scheduler: the next one finds it, and with it fences off the
        # workers of attempts it gave up on.
        self.board = KVBoard(NAMESPACE)

    def capacity(self) -> tuple[float, float]:
        if self.local is not None:
            return self.local.capacity()
        res = ray.cluster_resources()
        return float(res.get("CPU", 0.0)), float(res.get("GPU", 0.0))

    def submit(self, job: WorkerJob) -> Handle:
        if self.local is not None:
            self.local.hold("jobs")
        self.board.forget(job.job_id, job.attempt)
        if job.workers > 1:  # data-parallel under Ray Train: its workers hold the resources
            ref = distributed.start(job, self.board)
        else:
            ref = _run_job_remote.options(
                num_cpus=job.cpus, num_gpus=job.gpus, name=f"fovea-job-{job.job_id}"
            ).remote(job, self.board)
        return Handle(job.job_id, job.attempt, ref, job.cpus * job.workers, job.gpus * job.workers)

    def on_done(self, handle: Handle, callback: Callable[[], None]) -> None:
        handle.ref.future().add_done_callback(lambda _future: callback())

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
            return outcome_of_result(ray.get(handle.ref, timeout=5))
        except (TaskCancelledError, GetTimeoutError):
            return Outcome(OutcomeKind.CANCELLED, "the Ray worker was stopped")
        except _RETRYABLE as exc:
            if handle.force_cancelled:
                return Outcome(OutcomeKind.CANCELLED, "the Ray worker was stopped")
            return Outcome(OutcomeKind.INFRA, f"{type(exc).__name__}: {first_line(exc)}")
        except RayTaskError as exc:
            if handle.force_cancelled:
                return Outcome(OutcomeKind.CANCELLED, "the Ray worker was stopped")
            # run_job catches every exception it can; reaching here means a bug in it.
            return Outcome(OutcomeKind.INTERNAL, f"internal error: {first_line(exc)}")

    def cancel(self, handle: Handle) -> None:
        """Ask the worker to stop at its next step; force-kill after the grace period."""
        if handle.cancel_sent_at is None:
            handle.cancel_sent_at = time.monotonic()
            self.board.cancel(handle.job_id)

    def release(self) -> None:
        """Nothing runs: the embedded Ray may stop once it has idled long enough."""
        if self.local is not None:
            self.local.let_go("jobs")

    def idle(self) -> float | None:
        """Nothing runs: stop the local Ray once it has idled long enough; the seconds
        until it would (the scheduler wakes then), or None."""
        if self.local is None:
            return None
        return self.local.stop_if_idle()

    def drain_status(self) -> dict[str, dict[str, Any]]:
        if not ray.is_initialized():
            return {}
        return self.board.drain()

    def shutdown(self) -> None:
        global _embedded
        if self.local is not None:
            self.local.shutdown()
            _embedded = None
        elif ray.is_initialized():
            ray.shutdown()
