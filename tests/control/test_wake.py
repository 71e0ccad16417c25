"""An idle scheduler sleeps, and wakes at once on work: a submit in this process, a commit
in another (PostgreSQL NOTIFY, SQLite data_version), a backoff ending. Real databases."""

from __future__ import annotations

import time
from pathlib import Path

from fovea.platform import jobs as svc
from fovea.platform.scheduler import Scheduler
from fovea.platform.store import JobState, transaction
from fovea.platform.wake import LOCAL, Listener, Wake
from fovea.workers.testing import FakeBackend
from tests.control.test_scheduler import make_sessions, settings, spec, submit


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


def test_listener_hears_commits_of_other_connections(db_url: str) -> None:
    sessions = make_sessions(db_url)
    wake = Wake()
    listener = Listener(db_url, wake, sqlite_check_s=0.1)
    listener.start()
    try:
        time.sleep(0.5)
        wake.wait(0)
        assert not wake.wait(0.5)  # nothing happens: no wake
        other = make_sessions(db_url)  # another engine, as another process would have
        submit(other, 1)
        assert wake.wait(5.0)
    finally:
        listener.stop()
    del sessions


def test_idle_scheduler_sleeps_and_wakes_on_submit(db_url: str, tmp_path: Path) -> None:
    sessions = make_sessions(db_url)
    backend = FakeBackend(polls=1)
    scheduler = Scheduler(
        settings=settings(tmp_path, db_url, scheduler_idle_s=30.0, sqlite_check_s=0.2),
        sessions=sessions,
        backend=backend,
        wake=Wake(),
    )
    scheduler.start()
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
