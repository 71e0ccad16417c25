"""Models and migrations agree, on real SQLite and PostgreSQL; alembic works from its CLI;
upgrading keeps the rows; persisted state values are the enum's values."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, StatementError

from fovea.platform.jobs import service as svc
from fovea.platform.jobs.spec import JobSpec
from fovea.platform.store import Base, Job, JobState, make_engine, session_factory, transaction
from fovea.platform.store.db import upgrade
from tests.support.specs import digits_spec

REPO = Path(__file__).resolve().parents[2]
SPEC = JobSpec.model_validate(digits_spec(name="j"))


def _differences(engine) -> list:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine)
        assert _differences(engine) == []
    finally:
        engine.dispose()


def _insert_job(conn, job_id: str, state: str) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO jobs (id, name, task, project, priority, state, attempt, max_retries,"
            " cpus, gpus, spec, spec_hash, cancel_requested, submitted_at, updated_at) VALUES"
            " (:id, 'n', 'classification', 'p', 0, :state, 0, 0, 1.0, 0.0, '{}', 'h', false,"
            " CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
        ),
        {"id": job_id, "state": state},
    )


def test_upgrade_keeps_rows_and_adds_the_state_check(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        upgrade(engine, revision="0002")
        with engine.begin() as conn:
            _insert_job(conn, "old", "running")
            conn.execute(
                text(
                    "INSERT INTO job_events (job_id, at, kind, from_state, to_state, message)"
                    " VALUES ('old', CURRENT_TIMESTAMP, 'state', 'queued', 'running', 'm')"
                )
            )
        upgrade(engine)  # 0003 rebuilds the table on SQLite: the event must survive it
        with engine.connect() as conn:
            assert conn.execute(text("SELECT state FROM jobs")).scalars().all() == ["running"]
            events = conn.execute(text("SELECT job_id, to_state FROM job_events")).all()
            assert [tuple(e) for e in events] == [("old", "running")]
        with pytest.raises(IntegrityError), engine.begin() as conn:
            _insert_job(conn, "bad", "sleeping")
        with transaction(session_factory(engine)) as s:
            job = s.get(Job, "old")
            assert job is not None and job.state is JobState.RUNNING
    finally:
        engine.dispose()


@pytest.fixture
def upgraded(db_url: str):  # type: ignore[no-untyped-def]
    engine = make_engine(db_url)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_states_persist_as_their_values(upgraded) -> None:  # type: ignore[no-untyped-def]
    sessions = session_factory(upgraded)
    with transaction(sessions) as s:
        job, _ = svc.create_job(session=s, spec=SPEC)
        svc.transition(session=s, job=job, to=JobState.CANCELLED, message="x")
    with upgraded.connect() as conn:
        assert conn.execute(text("SELECT state FROM jobs")).scalar() == "cancelled"
        rows = conn.execute(text("SELECT from_state, to_state FROM job_events ORDER BY id"))
        assert [tuple(r) for r in rows] == [(None, "queued"), ("queued", "cancelled")]
    with pytest.raises(StatementError), transaction(sessions) as s:
        s.get(Job, job.id).state = "sleeping"  # type: ignore[union-attr,assignment]


def test_transition_fields_are_typed(upgraded) -> None:  # type: ignore[no-untyped-def]
    sessions = session_factory(upgraded)
    with transaction(sessions) as s:
        job, _ = svc.create_job(session=s, spec=SPEC)
    with transaction(sessions) as s, pytest.raises(TypeError, match="eror"):
        svc.transition(session=s, job=s.get(Job, job.id), to=JobState.FAILED, eror="x")  # type: ignore[call-arg]
    with transaction(sessions) as s:
        svc.transition(session=s, job=s.get(Job, job.id), to=JobState.FAILED, error="bad")
    with transaction(sessions) as s:
        stored = s.get(Job, job.id)
        assert stored.state is JobState.FAILED and stored.error == "bad"
        assert stored.attempt == 0  # fields not given keep their value


def _alembic(*args: str, url: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(REPO / "alembic.ini"),
            "-x",
            f"url={url}",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )


def test_alembic_cli_upgrades_and_finds_nothing_to_generate(db_url: str, tmp_path: Path) -> None:
    up = _alembic("upgrade", "head", url=db_url, cwd=tmp_path)
    assert up.returncode == 0, up.stderr[-3000:]
    assert "Running upgrade 0002 -> 0003" in up.stderr
    check = _alembic("check", url=db_url, cwd=tmp_path)
    assert check.returncode == 0, check.stderr[-3000:]
    assert "No new upgrade operations detected" in check.stdout + check.stderr


def test_alembic_cli_uses_fovea_settings(tmp_path: Path) -> None:
    home = tmp_path / f"home-{uuid.uuid4().hex[:6]}"
    env = {**os.environ, "PYTHONPATH": str(REPO), "FOVEA_HOME": str(home)}
    env.pop("FOVEA_DATABASE_URL", None)
    out = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(REPO / "alembic.ini"), "upgrade", "head"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert (home / "fovea.db").is_file()
