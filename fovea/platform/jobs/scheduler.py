"""Admission, dispatch, leases, retries and reconciliation of jobs on Ray.

One loop, `Scheduler.tick()`, run by a thread of `fovea up` or by `fovea scheduler`:
1. drain worker progress and events into the store;
2. reconcile the jobs this scheduler started (finished, lost, cancel requested), each
   outcome mapped to a state by the one failure policy (fovea.platform.jobs.policy);
3. renew its leases and recover jobs whose lease expired (their scheduler died);
4. fire retraining schedules that are due;
5. claim queued jobs that fit what the cluster has free (its capacity minus the running
   jobs of every scheduler, counted in the store) and start them.

Between ticks it sleeps: while it runs jobs, `scheduler_interval_s` (how fresh the progress
in the store is; a job that ends wakes it at once, through the backend's `on_done`; other
commits wait for the next tick, and its own progress writes wake no one); when idle, until
a commit somewhere wakes it (fovea.platform.wake) or its next deadline (a backoff ending, a
lease expiring, a schedule due), at most `scheduler_idle_s`. A tick that finds nothing to
do opens no write transaction.

While its jobs run, a tick does steps 1-2 (and renews its leases when due); steps 3-5 only
after a job of it ended, a commit surely wrote work (a submit, a cancel, a schedule), or
every BUSY_PASS_S (at most a third of the lease): what only time brings (a backoff ending,
a schedule due, another scheduler's lease expiring) waits that long at most, and a busy
machine is not read for work it has no room for every `scheduler_interval_s`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fovea.config import Settings
from fovea.platform.errors import NotFound
from fovea.platform.jobs import service as svc
from fovea.platform.jobs.closing import RunCloser
from fovea.platform.jobs.policy import Backoff
from fovea.platform.store import Job, JobState, read_session_factory, transaction, utcnow
from fovea.platform.wake import LOCAL, Listener, Wake, quiet
from fovea.platform.weights.service import WeightsStore, is_reference, split_reference
from fovea.workers.backend import Backend, Handle
from fovea.workers.failures import Outcome
from fovea.workers.types import WorkerJob

log = logging.getLogger(__name__)

UNFIT_CHECK_S = 10.0
BUSY_PASS_S = 10.0  # while jobs run: the longest time between two looks for other work


class Scheduler:
    def __init__(
        self,
        *,
        settings: Settings,
        sessions: sessionmaker[Session],
        backend: Backend,
        wake: Wake = LOCAL,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.reads = read_session_factory(sessions.kw["bind"])
        self.backend = backend
        self.wake = wake
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.backoff = Backoff(settings.retry_backoff_s, settings.retry_backoff_max_s)
        self.handles: dict[str, Handle] = {}
        self.runs = RunCloser(sessions=sessions, reads=self.reads, settings=settings)
        self._warned_unfit: set[str] = set()
        self._unfit_checked: tuple[svc.Capacity | None, float] = (None, 0.0)
        self._renewed_at = 0.0
        self._woken = True  # the last sleep ended by a notify (a commit: maybe a new job)
        self._nudged = True  # ... by a sure one, or a job of this scheduler ended
        self._passed_at = 0.0  # the last full pass (steps 3-5)
        self._busy_pass_s = min(BUSY_PASS_S, self.lease.total_seconds() / 3)
        self._draining = threading.Event()
        self._drain_tick = 0
        self._stop = threading.Event()
        self._ended = threading.Event()  # one of this scheduler's jobs has ended
        self._thread: threading.Thread | None = None
        self._listener = Listener(settings.db_url, wake, sqlite_check_s=settings.sqlite_check_s)
        self.ticks = 0  # for tests and benchmarks

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        self._listener.start()
        self.runs.start()
        self._thread = threading.Thread(target=self._loop, name="fovea-scheduler", daemon=True)
        self._thread.start()

    def drain(self) -> None:
        """No new claims nor fires; running jobs go on (see `stop`)."""
        if not self._draining.is_set():
            log.info("scheduler %s draining: no new claims", self.owner)
            self._drain_tick = self.ticks
        self._draining.set()
        self.wake.notify()

    def wait_drained(self, timeout: float) -> bool:
        """Wait until this scheduler runs nothing (True) or `timeout` passes (False). A tick
        that was dispatching when the drain began is waited for: its jobs count too."""
        deadline = time.monotonic() + timeout

        def busy() -> bool:
            in_flight = self._thread is not None and self.ticks < self._drain_tick + 2
            return in_flight or bool(self.handles)

        while busy() and time.monotonic() < deadline:
            time.sleep(0.1)
        return not busy()

    def stop(self, timeout: float = 10.0, *, hand_back: bool = True) -> None:
        """Stop the loop; with `hand_back`, jobs still running are asked to stop and put
        back in the queue at once (their attempt not counted), so a restart, or another
        scheduler, resumes them from their checkpoint without waiting for the lease."""
        self._draining.set()
        self._stop.set()
        self.wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        self._listener.stop()
        if hand_back:
            self._hand_back()
        self.runs.stop(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sleep = self.tick()
            except Exception:
                log.exception("scheduler tick failed; retrying")
                sleep = self.settings.scheduler_interval_s
            self._woken, self._nudged = self._sleep(sleep)

    def _sleep(self, seconds: float) -> tuple[bool, bool]:
        """Sleep until the next tick; (whether a commit woke it, whether one surely wrote
        work or a job ended). While jobs run, a commit does not end the sleep (the tick comes
        within `scheduler_interval_s` anyway); only a job's end or a stop does, so a busy
        store costs no extra ticks."""
        if not self.handles:
            return self.wake.wait(seconds), self.wake.sure
        deadline = time.monotonic() + seconds
        woken = sure = False
        while not (self._ended.is_set() or self._stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self.wake.wait(left):
                woken, sure = True, sure or self.wake.sure
        ended = self._ended.is_set()
        self._ended.clear()
        return woken, sure or ended

    def _job_ended(self) -> None:
        self._ended.set()
        self.wake.notify()

    # --- one pass ------------------------------------------------------------------------
    def tick(self) -> float:
        """One pass; returns how long the loop may sleep before the next."""
        self.ticks += 1
        running = len(self.handles)
        if self.handles:
            self._apply_status()
            self._reconcile()
            if not self.handles:  # the last one ended: what its worker said last, then rest
                self._apply_status()
                self.backend.release()
        now = time.monotonic()
        self._renew(now)
        busy = running > 0 and len(self.handles) == running  # none of its jobs ended this tick
        if busy and not self._nudged and now - self._passed_at < self._busy_pass_s:
            return self.settings.scheduler_interval_s  # progress only (see the module doc)
        self._passed_at = now
        self._recover_expired()
        if not self._draining.is_set():
            self._fire_schedules()
            self._dispatch()
        if self.handles:
            return self.settings.scheduler_interval_s
        sleep = self._idle_sleep()
        backend_wants = self.backend.idle()  # e.g. the local Ray stops after idling a while
        if backend_wants is not None:
            sleep = min(sleep, backend_wants + 0.05)
        return sleep

    def _fire_schedules(self) -> None:
        """Retraining schedules that are due submit their jobs (before dispatch, so those
        start this tick). A failure here must not stop dispatching: logged, retried."""
        from fovea.platform.retraining.fires import any_due, fire_due_schedules

        try:
            with self.reads() as session:
                if not any_due(session=session):
                    return
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
            quiet(session)  # progress and events: no work for any scheduler
            for job_id, update in updates.items():
                job = session.get(Job, job_id)
                if job is None or job.state.is_terminal:
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
        with self.reads() as session:
            rows = session.execute(
                select(Job.id, Job.state, Job.cancel_requested).where(
                    Job.id.in_(list(self.handles))
                )
            ).all()
        states = {job_id: (state, cancel) for job_id, state, cancel in rows}
        ended: list[tuple[str, Outcome]] = []
        for job_id, handle in list(self.handles.items()):
            state, cancel = states.get(job_id, (None, False))
            if state is not JobState.RUNNING:
                self.backend.cancel(handle)  # the job was deleted or taken from us
            elif cancel:
                self.backend.cancel(handle)
            outcome = self.backend.poll(handle)
            if outcome is not None:
                ended.append((job_id, outcome))
        if ended:
            self._record(ended)  # raises before forgetting: the next tick polls them again
            for job_id, _ in ended:
                del self.handles[job_id]

    def _record(self, ended: list[tuple[str, Outcome]]) -> None:
        """The outcomes of one tick, in one transaction."""
        end_runs = False
        with transaction(self.sessions) as session:
            ids = [job_id for job_id, _ in ended]
            jobs = {j.id: j for j in session.scalars(select(Job).where(Job.id.in_(ids)))}
            for job_id, outcome in ended:
                job = jobs.get(job_id)
                if job is None or job.state is not JobState.RUNNING:
                    continue
                if job.lease_owner != self.owner:
                    continue  # another scheduler recovered it meanwhile: its outcome, not ours
                svc.record_outcome(session=session, job=job, outcome=outcome, backoff=self.backoff)
                end_runs = end_runs or job.run_end_pending is not None
        if end_runs:
            self.runs.notify()

    def _renew(self, now: float) -> None:
        if self.handles and now - self._renewed_at > self.lease.total_seconds() / 3:
            with transaction(self.sessions) as session:
                svc.renew_leases(
                    session=session, owner=self.owner, job_ids=list(self.handles), lease=self.lease
                )
            self._renewed_at = now

    def _recover_expired(self) -> None:
        with self.reads() as session:
            stale = [
                job_id
                for job_id, owner in self._expired_or_orphaned(session)
                if job_id not in self.handles
            ]
        if not stale:
            return
        recovered = False
        with transaction(self.sessions) as session:
            for job_id, owner in self._expired_or_orphaned(session):
                if job_id not in stale:
                    continue
                job = session.get(Job, job_id)
                assert job is not None
                reason = f"lease of {owner} expired"
                if owner and self._owner_is_dead(owner):
                    reason = f"its scheduler {owner} is gone"
                svc.retry_or_fail(session=session, job=job, reason=reason, backoff=self.backoff)
                recovered = True
        if recovered:
            self.runs.notify()

    def _expired_or_orphaned(self, session: Session) -> list[tuple[str, str]]:
        """Running jobs whose lease expired, or whose scheduler was a process of this host
        that no longer exists (found at once after a restart, not a lease later)."""
        rows = session.execute(
            select(Job.id, Job.lease_owner, Job.lease_expires_at).where(
                Job.state == JobState.RUNNING
            )
        ).all()
        now = utcnow()
        return [
            (job_id, owner or "")
            for job_id, owner, expires in rows
            if owner != self.owner
            and (
                (expires is not None and expires < now)
                or (owner is not None and self._owner_is_dead(owner))
            )
        ]

    def _owner_is_dead(self, owner: str) -> bool:
        host, _, rest = owner.partition(":")
        pid = rest.partition(":")[0]
        if host != self.host or not pid.isdigit() or int(pid) == os.getpid():
            return False
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _warn_unfit(self, total: svc.Capacity) -> None:
        """Say once, in its events, why a job asking for more than the cluster has waits
        (looked for after a commit woke this scheduler, when the cluster's size changes,
        and every UNFIT_CHECK_S)."""
        now = time.monotonic()
        same = total == self._unfit_checked[0] and now - self._unfit_checked[1] < UNFIT_CHECK_S
        if same and not self._woken:
            return
        self._unfit_checked = (total, now)
        with self.reads() as session:
            unfit = [
                job.id
                for job in svc.unfit_queued_jobs(session=session, total=total)
                if job.id not in self._warned_unfit
            ]
        if not unfit:
            return
        with transaction(self.sessions) as session:
            for job_id in unfit:
                job = session.get(Job, job_id)
                if job is None:
                    continue
                self._warned_unfit.add(job_id)
                svc.add_event(
                    session=session,
                    job_id=job_id,
                    kind="waiting_for_resources",
                    message=f"needs {job.cpus:g} CPUs and {job.gpus:g} GPUs; the Ray cluster "
                    f"has {total.cpus:g} CPUs and {total.gpus:g} GPUs in all: it stays "
                    "queued until the cluster grows (or cancel it)",
                )

    def _claimable(self, total: svc.Capacity) -> bool:
        """A read: is there a queued job past its backoff that fits what is free now?"""
        with self.reads() as session:
            free = total.minus(svc.running_usage(session=session))
            fitting = (
                select(Job.id)
                .where(
                    Job.state == JobState.QUEUED,
                    svc.claimable(utcnow()),
                    Job.cpus <= free.cpus + 1e-9,
                    Job.gpus <= free.gpus + 1e-9,
                )
                .limit(1)
            )
            return session.scalar(fitting) is not None

    def _dispatch(self) -> None:
        total = svc.Capacity(*self.backend.capacity())
        self._warn_unfit(total)
        if not self._claimable(total):
            return
        with transaction(self.sessions) as session:
            svc.lock_claims(session)
            free = total.minus(svc.running_usage(session=session))
            claimed = svc.claim_jobs(
                session=session,
                owner=self.owner,
                free=free,
                lease=self.lease,
                project_quota=self.settings.project_quota,
            )
            work = [(job.id, job.attempt, job.spec, job.mlflow_run_id) for job in claimed]
        for job_id, attempt, spec, run_id in work:
            self._start(job_id, attempt, spec, run_id)

    def _start(self, job_id: str, attempt: int, spec: dict, run_id: str | None) -> None:
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
            progress_interval_s=self.settings.scheduler_interval_s,
            stored_weights=self._stored_weights(spec),
        )
        try:
            handle = self.backend.submit(worker_job)
            self.handles[job_id] = handle
            self.backend.on_done(handle, self._job_ended)
        except Exception as exc:  # Ray refused: put it back rather than lose it
            log.exception("could not start job %s on Ray", job_id)
            with transaction(self.sessions) as session:
                job = session.get(Job, job_id)
                if job is not None and job.state is JobState.RUNNING:
                    svc.retry_or_fail(
                        session=session, job=job, reason=f"Ray submit: {exc}", backoff=self.backoff
                    )

    def _stored_weights(self, spec: dict) -> tuple[str, str] | None:
        """(file, SHA-256) of the weights-store entry the spec names, if it names one. An
        entry gone since submit leaves its pinned file's path: the worker fails the job
        naming it (a user error, not retried)."""
        weights = spec["model"].get("weights")
        if not weights or not is_reference(weights):
            return None
        store = WeightsStore(self.settings.weights_dir)
        name, digest = split_reference(weights)
        try:
            entry = store.get(name)
        except NotFound:
            return str(store.root / "missing" / f"{name.replace('/', '_')}.pth"), digest or ""
        if digest is not None and digest != entry.sha256:
            return str(store.blob(sha256=digest, suffix=entry.format)), digest
        return str(store.path_of(entry)), entry.sha256

    # --- sleeping ------------------------------------------------------------------------
    def _idle_sleep(self) -> float:
        """Seconds until the store's next deadline, at most scheduler_idle_s."""
        from fovea.platform.retraining.service import next_due_at

        with self.reads() as session:
            deadlines: list[datetime | None] = [
                session.scalar(
                    select(func.min(Job.not_before)).where(Job.state == JobState.QUEUED)
                ),
                session.scalar(
                    select(func.min(Job.lease_expires_at)).where(Job.state == JobState.RUNNING)
                ),
                next_due_at(session=session),
            ]
        now = utcnow()
        sleep = self.settings.scheduler_idle_s
        for at in deadlines:
            if at is not None and at > now:  # one already past was dealt with this tick
                sleep = min(sleep, (at - now).total_seconds() + 0.05)
        return sleep

    def _hand_back(self) -> None:
        for job_id, handle in list(self.handles.items()):
            try:
                self.backend.cancel(handle)
            except Exception:
                log.warning("could not ask job %s to stop", job_id, exc_info=True)
            try:
                with transaction(self.sessions) as session:
                    job = session.get(Job, job_id)
                    if job is not None and job.state is JobState.RUNNING:
                        svc.requeue_unpenalised(
                            session=session, job=job, reason=f"scheduler {self.owner} stopped"
                        )
            except Exception:
                log.warning("could not hand job %s back; its lease will", job_id, exc_info=True)
            del self.handles[job_id]
        self.runs.sweep()
