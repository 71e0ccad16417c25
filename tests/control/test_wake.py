"""An idle scheduler sleeps, and wakes at once on work: a submit in this process, a commit
in another (PostgreSQL NOTIFY, SQLite data_version), a backoff ending. A scheduler running
jobs ticks on its interval, and at once when one ends. Real databases."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from fovea.platform.jobs import service as svc
from fovea.platform.jobs.scheduler import Scheduler
from fovea.platform.store import Job, JobState, transaction
from fovea.platform.wake import LOCAL, Listener, Wake, quiet
from fovea.workers.backend import Handle
from fovea.workers.failures import Outcome
from fovea.workers.testing import FakeBackend, finished
from tests.support.scheduling import settings, spec, submit
from tests.support.stores import make_sessions


def test_a_commit_that_writes_a_job_wakes_this_process(db_url: str) -> None:
    sessions = make_sessions(db_url)
    LOCAL.wait(0)
    with transaction(sessions) as s:
        svc.list_jobs(session=s)  # reads only
    assert not LOCAL.wait(0)
    try:
        with transaction(sessions) as s:
            svc.create_job(session=s, spec=spec())
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass
    assert not LOCAL.wait(0)  # nothing was committed
    submit(sessions, 1)
    assert LOCAL.wait(0)


@contextmanager
def listening(db_url: str) -> Iterator[Wake]:
    """A Listener's Wake, once it has begun to listen (no wake pending)."""
    wake = Wake()
    listener = Listener(db_url, wake, sqlite_check_s=0.1)
    listener.start()
    try:
        time.sleep(0.5)
        wake.wait(0)
        yield wake
    finally:
        listener.stop()


def test_listener_hears_commits_of_other_connections(db_url: str) -> None:
    sessions = make_sessions(db_url)
    with listening(db_url) as wake:
        assert not wake.wait(0.5)  # nothing happens: no wake
        other = make_sessions(db_url)  # another engine, as another process would have
        submit(other, 1)
        assert wake.wait(5.0)
    del sessions


def started_scheduler(
    db_url: str, tmp_path: Path, backend: FakeBackend, **extra: float
) -> tuple[Scheduler, sessionmaker[Session]]:
    """A scheduler on its own thread with its own Wake (commits reach it by its listener)."""
    sessions = make_sessions(db_url)
    scheduler = Scheduler(
        settings=settings(tmp_path, db_url, **extra),
        sessions=sessions,
        backend=backend,
        wake=Wake(),
    )
    scheduler.start()
    return scheduler, sessions


def test_idle_scheduler_sleeps_and_wakes_on_submit(db_url: str, tmp_path: Path) -> None:
    backend = FakeBackend(polls=1)
    scheduler, sessions = started_scheduler(
        db_url, tmp_path, backend, scheduler_idle_s=30.0, sqlite_check_s=0.2
    )
    try:
        time.sleep(1.5)
        idle_ticks = scheduler.ticks
        time.sleep(3.0)
        assert scheduler.ticks - idle_ticks <= 1, "an idle scheduler kept ticking"
        other = make_sessions(db_url)  # the API of another process
        (job_id,) = submit(other, 1)
        started = time.monotonic()
        while not backend.submits and time.monotonic() - started < 5:
            time.sleep(0.02)
        assert backend.submits[job_id] == 1
        assert time.monotonic() - started < 2.0  # woken, not a 30 s poll later
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with transaction(sessions) as s:
                if svc.get_job(session=s, job_id=job_id).state is JobState.SUCCEEDED:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("the job did not finish")
    finally:
        scheduler.stop()


def test_progress_writes_wake_no_one(db_url: str) -> None:
    """The scheduler's own progress writes (every tick while jobs run) are no work: no local
    wake, no NOTIFY to other processes' schedulers."""
    sessions = make_sessions(db_url)
    (job_id,) = submit(sessions, 1)
    with listening(db_url) as wake:
        LOCAL.wait(0)
        with transaction(sessions) as s:
            quiet(s)
            s.get(Job, job_id).progress = {"epoch": 1, "fraction": 0.5}  # type: ignore[union-attr]
        assert not LOCAL.wait(0)
        if db_url.startswith("postgresql"):  # SQLite's data_version cannot tell who wrote
            assert not wake.wait(1.0)
        with transaction(sessions) as s:  # the next transaction of a session is not quiet
            s.get(Job, job_id).cancel_requested = True  # type: ignore[union-attr]
        assert LOCAL.wait(0)
        assert wake.wait(5.0)


class HeldBackend(FakeBackend):
    """Attempts run until `end(job_id)`; their end is announced through `on_done`."""

    def __init__(self, cpus: float = 1.0) -> None:
        super().__init__(cpus=cpus, polls=10**9)
        self.callbacks: dict[str, Callable[[], None]] = {}
        self.ended: set[str] = set()

    def on_done(self, handle: Handle, callback: Callable[[], None]) -> None:
        self.callbacks[handle.job_id] = callback

    def poll(self, handle: Handle) -> Outcome | None:
        if handle.job_id not in self.ended:
            return None
        return finished(handle.ref["job"])

    def end(self, job_id: str) -> None:
        self.ended.add(job_id)
        self.callbacks[job_id]()


def test_busy_scheduler_ticks_on_its_interval_and_at_once_when_a_job_ends(
    db_url: str, tmp_path: Path
) -> None:
    backend = HeldBackend()
    scheduler, sessions = started_scheduler(
        db_url, tmp_path, backend, scheduler_interval_s=30.0, sqlite_check_s=0.1
    )
    try:
        time.sleep(0.5)  # its listener has begun to watch
        first, second = submit(sessions, 2)  # one CPU: the second waits for the first
        deadline = time.monotonic() + 10
        while not backend.submits and time.monotonic() < deadline:
            time.sleep(0.02)
        assert dict(backend.submits) == {first: 1}
        time.sleep(0.5)
        busy_ticks = scheduler.ticks
        other = make_sessions(db_url)  # another process's API, committing meanwhile
        for _ in range(5):
            with transaction(other) as s:
                s.get(Job, second).priority = 1  # type: ignore[union-attr]
            time.sleep(0.3)
        assert scheduler.ticks == busy_ticks, "commits woke a scheduler that runs jobs"
        ended_at = time.monotonic()
        backend.end(first)
        while backend.submits[second] == 0 and time.monotonic() - ended_at < 10:
            time.sleep(0.02)
        assert backend.submits[second] == 1
        assert time.monotonic() - ended_at < 5.0  # woken by the end, not 30 s later
        with transaction(sessions) as s:
            assert svc.get_job(session=s, job_id=first).state is JobState.SUCCEEDED
    finally:
        scheduler.stop()


class TalkingBackend(HeldBackend):
    """A HeldBackend whose running attempts report progress at every drain, as workers do."""

    def drain_status(self) -> dict[str, dict[str, Any]]:
        running = [job_id for job_id in self.jobs if job_id not in self.ended]
        return {
            job_id: {"progress": {"fraction": time.monotonic() % 1}, "events": []}
            for job_id in running
        }


def test_busy_scheduler_looks_for_work_when_told_or_every_busy_pass(
    db_url: str, tmp_path: Path
) -> None:
    """While its jobs run, a tick writes their progress but reads the store for other work
    only when a commit surely wrote work (PostgreSQL's NOTIFY; SQLite's data_version changes
    with any commit, its own progress writes too), or every busy pass (a third of the lease
    here): a submit from another process starts within that."""
    backend = TalkingBackend(cpus=2.0)
    scheduler, sessions = started_scheduler(
        db_url, tmp_path, backend, scheduler_interval_s=0.2, sqlite_check_s=0.1, lease_seconds=6.0
    )
    looks = []
    claimable = scheduler._claimable
    scheduler._claimable = lambda total: looks.append(time.monotonic()) or claimable(total)  # type: ignore[method-assign]
    try:
        time.sleep(0.5)
        (first,) = submit(sessions, 1)
        deadline = time.monotonic() + 10
        while not backend.submits and time.monotonic() < deadline:
            time.sleep(0.02)
        assert dict(backend.submits) == {first: 1}
        time.sleep(0.5)
        ticks, looked = scheduler.ticks, len(looks)
        time.sleep(4.5)  # ~20 ticks, each writing progress
        with transaction(sessions) as s:
            assert svc.get_job(session=s, job_id=first).progress is not None
        assert scheduler.ticks - ticks >= 10
        assert len(looks) - looked <= 4, "a busy scheduler looked for work at every tick"
        other = make_sessions(db_url)  # another process's API
        (second,) = submit(other, 1)
        submitted = time.monotonic()
        while backend.submits[second] == 0 and time.monotonic() - submitted < 10:
            time.sleep(0.02)
        took = time.monotonic() - submitted
        assert backend.submits[second] == 1
        assert took < (1.5 if db_url.startswith("postgresql") else 3.5), took
    finally:
        scheduler.stop()
