"""Admission, dispatch, leases, retries and reconciliation of jobs on Ray.

One loop, `Scheduler.tick()`, run by a thread of `fovea up` (or its own process):
1. drain worker progress and events into the store;
2. reconcile the jobs this scheduler started (finished, lost, cancel requested);
3. renew its leases and recover jobs whose lease expired (their scheduler died);
4. claim queued jobs that fit the cluster, priority first, and start them on Ray.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from fovea.config import Settings
from fovea.platform import jobs as svc
from fovea.platform.store import Job, JobState, transaction
from fovea.workers.backend import Handle, Outcome, RayBackend
from fovea.workers.types import WorkerJob

log = logging.getLogger(__name__)


class Scheduler:
    def __init__(
        self, *, settings: Settings, sessions: sessionmaker[Session], backend: RayBackend
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.backend = backend
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.handles: dict[str, Handle] = {}
        self._warned_unfit: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fovea-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying")
            self._stop.wait(self.settings.scheduler_interval_s)

    # --- one pass ------------------------------------------------------------------------
    def tick(self) -> None:
        self._apply_status()
        self._reconcile()
        self._recover_expired()
        self._fire_schedules()
        self._dispatch()

    def _fire_schedules(self) -> None:
        """Retraining schedules that are due submit their jobs (before dispatch, so those
        start this tick). A failure here must not stop dispatching: logged, retried."""
        from fovea.platform.schedule_fire import fire_due_schedules

        try:
            with transaction(self.sessions) as session:
                fire_due_schedules(
                    session=session,
                    data_roots=self.settings.data_roots,
                    tracking_uri=self.settings.tracking_uri,
                )
        except Exception:
            log.exception("firing schedules failed; retrying next tick")

    def _apply_status(self) -> None:
        updates = self.backend.drain_status()
        if not updates:
            return
        with transaction(self.sessions) as session:
            for job_id, update in updates.items():
                job = session.get(Job, job_id)
                if job is None or job.job_state.is_terminal:
                    continue
                if update["progress"] is not None:
                    job.progress = update["progress"]
                for event in update["events"]:
                    if event["kind"] == "mlflow_run":
                        job.mlflow_run_id = event["data"]["run_id"]
                    svc.add_event(
                        session=session,
                        job_id=job_id,
                        kind=event["kind"][:40],
                        message=event["message"],
                        data=event["data"] or None,
                    )

    def _reconcile(self) -> None:
        for job_id, handle in list(self.handles.items()):
            with transaction(self.sessions) as session:
                job = session.get(Job, job_id)
                if job is None or job.job_state is not JobState.RUNNING:
                    continue
                if job.cancel_requested:
                    self.backend.cancel(handle)
            outcome = self.backend.poll(handle)
            if outcome is None:
                continue
            del self.handles[job_id]
            with transaction(self.sessions) as session:
                job = session.get(Job, job_id)
                if job is not None and job.job_state is JobState.RUNNING:
                    self._record(session, job, outcome)

    def _record(self, session: Session, job: Job, outcome: Outcome) -> None:
        if outcome.killed:
            svc.transition(
                session=session,
                job=job,
                to=JobState.CANCELLED,
                message="cancelled; the Ray worker was stopped",
            )
            return
        if outcome.lost is not None:
            svc.retry_or_fail(session=session, job=job, reason=outcome.lost)
            return
        result = outcome.result
        assert result is not None
        if result.mlflow_run_id:
            job.mlflow_run_id = result.mlflow_run_id
        if result.status == "cancelled":
            svc.transition(
                session=session,
                job=job,
                to=JobState.CANCELLED,
                message="cancelled; the worker stopped at the next step",
            )
        elif result.status == "failed":
            svc.transition(
                session=session,
                job=job,
                to=JobState.FAILED,
                message=f"failed: {result.error}",
                error=result.error,
            )
        else:
            svc.transition(
                session=session,
                job=job,
                to=JobState.SUCCEEDED,
                message="succeeded"
                + (
                    f"; model {result.model_name} v{result.model_version}"
                    + (" is champion" if result.is_champion else "")
                    if result.model_name
                    else ""
                ),
                data={"timings": result.timings, "train_images_per_s": result.train_images_per_s},
                metrics=result.metrics,
                model_name=result.model_name,
                model_version=result.model_version,
                progress={**(job.progress or {}), "fraction": 1.0},
            )

    def _recover_expired(self) -> None:
        with transaction(self.sessions) as session:
            svc.renew_leases(
                session=session, owner=self.owner, job_ids=list(self.handles), lease=self.lease
            )
            for job in svc.expired_running_jobs(session=session):
                if job.id in self.handles:
                    continue
                svc.retry_or_fail(
                    session=session, job=job, reason=f"lease of {job.lease_owner} expired"
                )

    def _warn_unfit(self, total: svc.Capacity) -> None:
        """Say once, in its events, why a job asking for more than the cluster has waits."""
        with transaction(self.sessions) as session:
            for job in svc.unfit_queued_jobs(session=session, total=total):
                if job.id in self._warned_unfit:
                    continue
                self._warned_unfit.add(job.id)
                svc.add_event(
                    session=session,
                    job_id=job.id,
                    kind="waiting_for_resources",
                    message=f"needs {job.cpus:g} CPUs and {job.gpus:g} GPUs; the Ray cluster "
                    f"has {total.cpus:g} CPUs and {total.gpus:g} GPUs in all: it stays "
                    "queued until the cluster grows (or cancel it)",
                )

    def _dispatch(self) -> None:
        total_cpus, total_gpus = self.backend.capacity()
        used_cpus = sum(h.cpus for h in self.handles.values())
        used_gpus = sum(h.gpus for h in self.handles.values())
        free = svc.Capacity(total_cpus - used_cpus, total_gpus - used_gpus)
        self._warn_unfit(svc.Capacity(total_cpus, total_gpus))
        if free.cpus <= 0 and free.gpus <= 0:
            return
        with transaction(self.sessions) as session:
            claimed = svc.claim_jobs(
                session=session,
                owner=self.owner,
                free=free,
                lease=self.lease,
                project_quota=self.settings.project_quota,
            )
            work = [(job.id, job.attempt, job.spec, job.mlflow_run_id) for job in claimed]
        for job_id, attempt, spec, run_id in work:
            worker_job = WorkerJob.from_spec(
                spec,
                job_id=job_id,
                attempt=attempt,
                tracking_uri=self.settings.tracking_uri,
                artifact_root=str(self.settings.artifact_root),
                experiment=self.settings.mlflow_experiment,
                checkpoint_dir=str(Path(self.settings.checkpoints) / job_id),
                mlflow_run_id=run_id,
                data_roots=tuple(str(root) for root in self.settings.data_roots),
            )
            try:
                self.handles[job_id] = self.backend.submit(worker_job)
            except Exception as exc:  # Ray refused: put it back rather than lose it
                log.exception("could not start job %s on Ray", job_id)
                with transaction(self.sessions) as session:
                    job = session.get(Job, job_id)
                    if job is not None:
                        svc.retry_or_fail(session=session, job=job, reason=f"Ray submit: {exc}")
