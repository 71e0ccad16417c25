"""The job store and its services on real SQLite and the real PostgreSQL server."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, inspect, select
from sqlalchemy.exc import OperationalError

from fovea.platform.errors import SpecError
from fovea.platform.jobs import service as svc
from fovea.platform.jobs.spec import JobSpec
from fovea.platform.jobs.validation import resolve_data_path
from fovea.platform.store import (
    Job,
    JobEvent,
    JobState,
    make_engine,
    read_session_factory,
    session_factory,
    transaction,
    upgrade,
)
from tests.support.specs import digits_spec


def spec(name: str = "j", priority: int = 0, project: str = "p", cpus: float = 1.0) -> JobSpec:
    return JobSpec.model_validate(
        digits_spec(name=name, project=project, priority=priority, resources={"cpus": cpus})
    )


@pytest.fixture
def sessions(db_url: str):
    engine = make_engine(db_url)
    upgrade(engine)
    upgrade(engine)  # idempotent
    yield session_factory(engine)
    engine.dispose()


def test_migrations_create_schema(sessions) -> None:
    insp = inspect(sessions.kw["bind"])
    assert {"jobs", "job_events", "alembic_version"} <= set(insp.get_table_names())
    assert "ix_jobs_claim_order" in {i["name"] for i in insp.get_indexes("jobs")}


def test_create_and_events(sessions) -> None:
    with transaction(sessions) as s:
        job, created = svc.create_job(session=s, spec=spec())
    assert created and job.state == "queued" and job.attempt == 0
    with transaction(sessions) as s:
        got = svc.get_job(session=s, job_id=job.id, with_events=True)
        assert [e.kind for e in got.events] == ["submitted"]
        assert got.submitted_at.tzinfo is not None


def test_idempotency(sessions) -> None:
    with transaction(sessions) as s:
        a, created_a = svc.create_job(session=s, spec=spec(), idempotency_key="k1")
    with transaction(sessions) as s:
        b, created_b = svc.create_job(session=s, spec=spec(), idempotency_key="k1")
    assert created_a and not created_b and a.id == b.id
    with transaction(sessions) as s, pytest.raises(svc.IdempotencyConflict):
        svc.create_job(session=s, spec=spec(name="other"), idempotency_key="k1")
    with transaction(sessions) as s:
        assert svc.list_jobs(session=s).total == 1


def test_claim_order_priority_then_fifo(sessions) -> None:
    ids = {}
    for name, prio in [("low1", 0), ("high1", 5), ("low2", 0), ("high2", 5), ("mid", 2)]:
        with transaction(sessions) as s:
            ids[name] = svc.create_job(session=s, spec=spec(name, prio))[0].id
    order = []
    for _ in range(5):
        with transaction(sessions) as s:
            got = svc.claim_jobs(
                session=s, owner="a", free=svc.Capacity(1, 0), lease=timedelta(seconds=30)
            )
            assert len(got) == 1
            order.append(got[0].name)
    assert order == ["high1", "high2", "mid", "low1", "low2"]
    with transaction(sessions) as s:
        job = svc.get_job(session=s, job_id=ids["high1"], with_events=True)
        assert job.state == "running" and job.attempt == 1 and job.lease_owner == "a"
        assert [(e.from_state, e.to_state) for e in job.events][-1] == ("queued", "running")


def test_claim_respects_capacity_and_quota(sessions) -> None:
    with transaction(sessions) as s:
        svc.create_job(session=s, spec=spec("big", 9, cpus=4))
        svc.create_job(session=s, spec=spec("a1", 1, project="a"))
        svc.create_job(session=s, spec=spec("a2", 1, project="a"))
        svc.create_job(session=s, spec=spec("b1", 0, project="b"))
    with transaction(sessions) as s:
        got = svc.claim_jobs(
            session=s,
            owner="o",
            free=svc.Capacity(3, 0),
            lease=timedelta(seconds=30),
            project_quota=1,
        )
    # "big" does not fit 3 CPUs; project "a" may run one job at a time
    assert [j.name for j in got] == ["a1", "b1"]


def test_two_schedulers_never_claim_one_job(sessions) -> None:
    n = 30
    with transaction(sessions) as s:
        for i in range(n):
            svc.create_job(session=s, spec=spec(f"j{i}"))
    claimed: dict[str, list[str]] = {"a": [], "b": []}
    errors: list[BaseException] = []

    def worker(owner: str) -> None:
        try:
            # until every job is claimed: on PostgreSQL a scheduler whose candidates are all
            # locked by the other (SKIP LOCKED) claims nothing in that round, by design
            for _ in range(50 * n):
                if len(claimed["a"]) + len(claimed["b"]) >= n:
                    break
                with transaction(sessions) as s:
                    got = svc.claim_jobs(
                        session=s,
                        owner=owner,
                        free=svc.Capacity(2, 0),
                        lease=timedelta(seconds=30),
                        limit=2,
                    )
                    claimed[owner].extend(j.id for j in got)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(o,)) for o in claimed]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    all_ids = claimed["a"] + claimed["b"]
    assert len(all_ids) == n and len(set(all_ids)) == n
    with transaction(sessions) as s:
        assert svc.list_jobs(session=s, state=JobState.RUNNING, limit=500).total == n
        dispatch_events = s.scalars(select(JobEvent).where(JobEvent.to_state == "running")).all()
        assert len(dispatch_events) == n


def test_transitions_and_cancel(sessions) -> None:
    with transaction(sessions) as s:
        queued = svc.create_job(session=s, spec=spec("q"))[0]
        running = svc.create_job(session=s, spec=spec("r", 5))[0]
    with transaction(sessions) as s:
        svc.claim_jobs(session=s, owner="o", free=svc.Capacity(1, 0), lease=timedelta(seconds=30))
    with transaction(sessions) as s:
        assert svc.request_cancel(session=s, job_id=queued.id).state == "cancelled"
        r = svc.request_cancel(session=s, job_id=running.id)
        assert r.state == "running" and r.cancel_requested
    with transaction(sessions) as s, pytest.raises(svc.InvalidTransition):
        svc.request_cancel(session=s, job_id=queued.id)
    with transaction(sessions) as s:
        job = svc.get_job(session=s, job_id=queued.id)
        with pytest.raises(svc.InvalidTransition):
            svc.transition(session=s, job=job, to=JobState.RUNNING)
    with transaction(sessions) as s, pytest.raises(svc.NotFound):
        svc.get_job(session=s, job_id="nope")


def test_expired_lease_retries_then_fails(sessions) -> None:
    with transaction(sessions) as s:
        job = svc.create_job(session=s, spec=spec().model_copy(update={"max_retries": 1}))[0]
    for attempt, expected in [(1, "queued"), (2, "failed")]:
        with transaction(sessions) as s:
            got = svc.claim_jobs(
                session=s, owner="dead", free=svc.Capacity(1, 0), lease=timedelta(seconds=-1)
            )
            assert got[0].attempt == attempt
        with transaction(sessions) as s:
            expired = svc.expired_running_jobs(session=s)
            assert [j.id for j in expired] == [job.id]
            svc.retry_or_fail(session=s, job=expired[0], reason="lease expired")
        with transaction(sessions) as s:
            assert svc.get_job(session=s, job_id=job.id).state == expected
    with transaction(sessions) as s:
        final = svc.get_job(session=s, job_id=job.id)
        assert "2 attempt" in (final.error or "")


def test_list_filters_and_pagination(sessions) -> None:
    with transaction(sessions) as s:
        for i in range(5):
            svc.create_job(session=s, spec=spec(f"a{i}", project="a"))
        svc.create_job(session=s, spec=spec("b0", project="b"))
    with transaction(sessions) as s:
        page = svc.list_jobs(session=s, project="a", limit=2, offset=0)
        assert page.total == 5 and [j.name for j in page.items] == ["a4", "a3"]
        page2 = svc.list_jobs(session=s, project="a", limit=2, offset=4)
        assert [j.name for j in page2.items] == ["a0"]
        assert svc.list_jobs(session=s, state=JobState.CANCELLED).total == 0


def test_data_root_checks(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "ds").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "escape").symlink_to(outside)
    assert resolve_data_path(str(root / "ds"), roots=[root], field="f") == root / "ds"
    for bad in [str(outside), str(root / "ds" / ".." / ".." / "outside"), str(root / "escape")]:
        with pytest.raises(SpecError, match="outside the configured data roots"):
            resolve_data_path(bad, roots=[root], field="dataset.uri")
    with pytest.raises(SpecError, match="does not exist"):
        resolve_data_path(str(root / "missing"), roots=[root], field="dataset.uri")


def test_job_rows_roundtrip_spec(sessions) -> None:
    with transaction(sessions) as s:
        job = svc.create_job(session=s, spec=spec("x"))[0]
    with transaction(sessions) as s:
        row = s.get(Job, job.id)
        assert JobSpec.model_validate(row.spec).canonical_hash() == row.spec_hash


def test_sqlite_reads_never_take_the_write_lock(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'locks.db'}")
    # after the engine's own hook: a lock wait gives up in 0.2 s instead of 30 s
    event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=200"))
    upgrade(engine)
    writes, reads = session_factory(engine), read_session_factory(engine)
    with transaction(writes) as s:
        svc.create_job(session=s, spec=spec("a"))
    with transaction(writes) as holder:  # an open write transaction holds the lock
        svc.create_job(session=holder, spec=spec("b"))
        holder.flush()
        with transaction(reads) as s:  # a read goes ahead, seeing the committed rows
            assert svc.list_jobs(session=s).total == 1
        with pytest.raises(OperationalError, match="locked"), transaction(writes) as s:
            svc.create_job(session=s, spec=spec("c"))  # a second writer really waits
    with transaction(reads) as s:
        assert svc.list_jobs(session=s).total == 2
    engine.dispose()
