"""The real scheduler, store and failure policy on real SQLite and PostgreSQL, driven by an
injected FakeBackend (fovea.workers.testing) that ends attempts as each test scripts."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from fovea.platform.jobs import service as svc
from fovea.platform.jobs.scheduler import Scheduler
from fovea.platform.store import (
    Job,
    JobEvent,
    JobState,
    transaction,
)
from fovea.platform.wake import Wake
from fovea.workers.failures import Outcome, OutcomeKind
from fovea.workers.testing import FakeBackend
from fovea.workers.types import JobResult, WorkerJob
from tests.support.scheduling import settings, submit
from tests.support.stores import make_sessions


def states(sessions: sessionmaker[Session]) -> dict[str, int]:
    with transaction(sessions) as s:
        return dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())


def run_until_done(schedulers: list[Scheduler], sessions, *, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    done = threading.Event()
    errors: list[BaseException] = []

    def loop(scheduler: Scheduler) -> None:
        try:
            while not done.is_set():
                scheduler.tick()
        except BaseException as exc:
            errors.append(exc)
            done.set()

    threads = [threading.Thread(target=loop, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done.is_set():
            counts = states(sessions)
            if not counts.get(JobState.QUEUED) and not counts.get(JobState.RUNNING):
                break
            time.sleep(0.2)
    finally:
        done.set()
        for t in threads:
            t.join(30)
    assert not errors, errors
    assert time.monotonic() < deadline, states(sessions)


def test_two_schedulers_dispatch_1000_jobs_once_and_never_over_capacity(
    pg_url: str, tmp_path: Path
) -> None:
    sessions = make_sessions(pg_url)
    ids = submit(sessions, 700, cpus=1.0) + submit(sessions, 300, cpus=2.0)
    cluster = FakeBackend(cpus=8.0, polls=2)  # one cluster, two schedulers
    schedulers = [
        Scheduler(
            settings=settings(tmp_path, pg_url),
            sessions=make_sessions(pg_url),  # each its own engine and connections
            backend=cluster,
            wake=Wake(),
        )
        for _ in range(2)
    ]
    run_until_done(schedulers, sessions, timeout=600)
    assert states(sessions) == {JobState.SUCCEEDED: 1000}
    assert sorted(cluster.submits) == sorted(ids)
    assert set(cluster.submits.values()) == {1}, "a job was dispatched twice"
    assert cluster.max_in_use[0] <= 8.0, cluster.max_in_use
    assert cluster.max_in_use[0] >= 6.0  # and the cluster was actually used
    assert all(s.ticks > 10 for s in schedulers)  # both took part
    with transaction(sessions) as s:
        dispatches = s.scalar(
            select(func.count()).select_from(JobEvent).where(JobEvent.to_state == "running")
        )
    assert dispatches == 1000


def _scripted(kinds: list[OutcomeKind]):  # type: ignore[no-untyped-def]
    """Each attempt of a job ends as the next kind in `kinds`."""
    calls: dict[str, int] = {}

    def script(job: WorkerJob) -> Outcome:
        n = calls.get(job.job_id, 0)
        calls[job.job_id] = n + 1
        kind = kinds[min(n, len(kinds) - 1)]
        if kind is OutcomeKind.FINISHED:
            return Outcome(kind, result=JobResult(status="succeeded", metrics={"top1": 0.9}))
        return Outcome(kind, f"injected {kind.value}")

    return script


@pytest.mark.parametrize(
    ("kinds", "max_retries", "final", "attempts"),
    [
        ([OutcomeKind.FINISHED], 0, JobState.SUCCEEDED, 1),
        ([OutcomeKind.USER_ERROR], 3, JobState.FAILED, 1),  # retrying cannot help
        ([OutcomeKind.INTERNAL], 3, JobState.FAILED, 1),
        ([OutcomeKind.INFRA, OutcomeKind.INFRA, OutcomeKind.FINISHED], 2, JobState.SUCCEEDED, 3),
        ([OutcomeKind.INFRA], 1, JobState.FAILED, 2),  # retries used up
        ([OutcomeKind.CANCELLED, OutcomeKind.FINISHED], 1, JobState.SUCCEEDED, 2),  # unasked
    ],
)
def test_policy_maps_each_outcome(
    db_url: str,
    tmp_path: Path,
    kinds: list[OutcomeKind],
    max_retries: int,
    final: JobState,
    attempts: int,
) -> None:
    sessions = make_sessions(db_url)
    (job_id,) = submit(sessions, 1, max_retries=max_retries)
    backend = FakeBackend(script=_scripted(kinds))
    scheduler = Scheduler(
        settings=settings(tmp_path, db_url), sessions=sessions, backend=backend, wake=Wake()
    )
    for _ in range(20):
        scheduler.tick()
    with transaction(sessions) as s:
        job = svc.get_job(session=s, job_id=job_id, with_events=True)
        assert job.state is final, [e.message for e in job.events]
        assert job.attempt == attempts == backend.submits[job_id]
        if final is JobState.FAILED:
            assert "injected" in (job.error or "")


def test_cancel_requested_cancels_and_retries_back_off(db_url: str, tmp_path: Path) -> None:
    sessions = make_sessions(db_url)
    cancel_id, retry_id = submit(sessions, 2, max_retries=3)
    backend = FakeBackend(polls=10**9)  # runs until stopped
    scheduler = Scheduler(
        settings=settings(tmp_path, db_url, retry_backoff_s=30.0),
        sessions=sessions,
        backend=backend,
        wake=Wake(),
    )
    scheduler.tick()
    assert set(scheduler.handles) == {cancel_id, retry_id}
    with transaction(sessions) as s:
        svc.request_cancel(session=s, job_id=cancel_id)
    backend.script = lambda job: Outcome(OutcomeKind.INFRA, "node died")
    backend.polls = 0  # the other attempt dies now
    for _ in range(3):
        scheduler.tick()
    with transaction(sessions) as s:
        cancelled = svc.get_job(session=s, job_id=cancel_id)
        retried = svc.get_job(session=s, job_id=retry_id)
        assert cancelled.state is JobState.CANCELLED
        assert retried.state is JobState.QUEUED and retried.not_before is not None
        wait = (retried.not_before - svc.utcnow()).total_seconds()
        assert 25 < wait <= 30  # backoff of the first retry: retry_backoff_s
    assert backend.submits[retry_id] == 1  # not re-dispatched during its backoff
    assert scheduler.tick() > 25  # and the idle scheduler sleeps until the backoff ends


def test_dead_local_scheduler_is_found_at_once_and_its_run_marked(
    db_url: str, tmp_path: Path
) -> None:
    """A job leased by a process of this host that no longer exists is recovered without
    waiting for its lease; its attempt's MLflow run is marked to be ended."""
    sessions = make_sessions(db_url)
    (job_id,) = submit(sessions, 1, max_retries=1)
    with transaction(sessions) as s:
        (job,) = svc.claim_jobs(
            session=s, owner="x", free=svc.Capacity(1, 0), lease=timedelta(hours=1)
        )
        import socket

        job.lease_owner = f"{socket.gethostname()}:{2**22 + 12345}:dead00"  # no such pid
        job.mlflow_run_id = "run-of-dead-attempt"
    backend = FakeBackend()
    scheduler = Scheduler(
        settings=settings(tmp_path, db_url), sessions=sessions, backend=backend, wake=Wake()
    )
    scheduler.tick()
    with transaction(sessions) as s:
        job = svc.get_job(session=s, job_id=job_id, with_events=True)
        assert job.state is JobState.RUNNING and job.attempt == 2, [e.message for e in job.events]
        assert any("is gone" in e.message for e in job.events)
    assert backend.submits[job_id] == 1


def test_idle_tick_writes_nothing(db_url: str, tmp_path: Path) -> None:
    from sqlalchemy import event

    sessions = make_sessions(db_url)
    scheduler = Scheduler(
        settings=settings(tmp_path, db_url), sessions=sessions, backend=FakeBackend(), wake=Wake()
    )
    writes: list[str] = []
    engine = sessions.kw["bind"]

    @event.listens_for(engine, "before_cursor_execute")
    def spy(conn, cursor, statement, *args) -> None:  # type: ignore[no-untyped-def]
        if not statement.lstrip().upper().startswith(("SELECT", "PRAGMA")):
            writes.append(statement)

    assert scheduler.tick() == pytest.approx(30.0, abs=0.1)  # nothing due: sleeps long
    # BEGIN IMMEDIATE (SQLite's write lock) or any INSERT/UPDATE would show here
    assert [w for w in writes if "IMMEDIATE" in w or w.split()[0].upper() != "BEGIN"] == []


def test_drain_claims_nothing_more(db_url: str, tmp_path: Path) -> None:
    sessions = make_sessions(db_url)
    (running,) = submit(sessions, 1)
    backend = FakeBackend(polls=3)
    scheduler = Scheduler(
        settings=settings(tmp_path, db_url), sessions=sessions, backend=backend, wake=Wake()
    )
    scheduler.tick()
    queued = submit(sessions, 2)
    scheduler.drain()
    for _ in range(5):
        scheduler.tick()
    assert scheduler.wait_drained(1.0)
    assert set(backend.submits) == {running}  # the running one finished, nothing new began
    with transaction(sessions) as s:
        assert svc.get_job(session=s, job_id=running).state is JobState.SUCCEEDED
        assert {svc.get_job(session=s, job_id=j).state for j in queued} == {JobState.QUEUED}


def test_stop_hands_running_jobs_back_without_counting_the_attempt(
    db_url: str, tmp_path: Path
) -> None:
    sessions = make_sessions(db_url)
    (job_id,) = submit(sessions, 1, max_retries=0)
    backend = FakeBackend(polls=10**9)
    scheduler = Scheduler(
        settings=settings(tmp_path, db_url), sessions=sessions, backend=backend, wake=Wake()
    )
    scheduler.tick()
    scheduler.stop()
    assert job_id in backend.cancelled
    with transaction(sessions) as s:
        job = svc.get_job(session=s, job_id=job_id)
        assert job.state is JobState.QUEUED and job.attempt == 0 and job.lease_owner is None


def _mlflow_run(tmp_path: Path) -> tuple[str, str]:
    from fovea.tracking._mlflow import make_client

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = make_client(uri)
    experiment = client.create_experiment("runs", artifact_location=str(tmp_path / "art"))
    return uri, client.create_run(experiment).info.run_id


def test_dead_attempt_run_is_ended_and_mlflow_outage_is_retried(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fovea.tracking._mlflow import make_client

    uri, run_id = _mlflow_run(tmp_path)
    sessions = make_sessions(db_url)
    (job_id,) = submit(sessions, 1, max_retries=0)
    backend = FakeBackend(script=lambda job: Outcome(OutcomeKind.INFRA, "WorkerCrashedError"))
    # First MLflow is down (nothing listens there): the mark stays, to be retried.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    down = settings(tmp_path, db_url, mlflow_tracking_uri="http://127.0.0.1:9")  # type: ignore[arg-type]
    scheduler = Scheduler(settings=down, sessions=sessions, backend=backend, wake=Wake())
    scheduler.tick()  # dispatched
    with transaction(sessions) as s:
        svc.get_job(session=s, job_id=job_id).mlflow_run_id = run_id  # the worker said so
    scheduler.tick()  # the worker died; no retries: failed
    assert scheduler.runs.sweep() is False
    with transaction(sessions) as s:
        job = svc.get_job(session=s, job_id=job_id)
        assert job.state is JobState.FAILED and job.run_end_pending == "FAILED"
    assert make_client(uri).get_run(run_id).info.status == "RUNNING"
    # MLflow is back (a restarted scheduler, same store): the run is ended, the mark cleared.
    up = Scheduler(
        settings=settings(tmp_path, db_url, mlflow_tracking_uri=uri),  # type: ignore[arg-type]
        sessions=sessions,
        backend=backend,
        wake=Wake(),
    )
    assert up.runs.sweep() is True
    assert make_client(uri).get_run(run_id).info.status == "FAILED"
    with transaction(sessions) as s:
        assert svc.get_job(session=s, job_id=job_id).run_end_pending is None
