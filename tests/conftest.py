"""Shared fixtures: real SQLite and PostgreSQL job stores, real datasets, one real stack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import Stack
from tests.support.stores import pg_database

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def datasets() -> Path:
    if not DATASETS.is_dir():  # present on every developer machine and in CI: never skip
        pytest.fail(f"shared datasets folder not found at {DATASETS}")
    return DATASETS


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        yield from pg_database()


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield from pg_database()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One real `fovea up` (API, scheduler, local Ray, SQLite, MLflow) for every test that
    needs no stack of its own: starting one costs 10-20 s. Tests keep apart by names (jobs,
    models, schedules, data folders) no other test uses."""
    root = tmp_path_factory.mktemp("stack")
    data = root / "data"
    (data / "empty" / "someclass").mkdir(parents=True)  # a dataset with no images
    for name in ("cats", "dogs"):  # image files by name, none of them readable
        (data / "unreadable" / name).mkdir(parents=True)
        (data / "unreadable" / name / "x.jpg").write_bytes(b"not a jpeg")
    # every live image kept: the drift page shows those of a drifting window; progress
    # every 0.5 s: a fault test kills a worker at a given epoch of a short job; a retry
    # waits 0.5 s, not 5 (how backoff grows: tests/control/test_scheduler.py)
    env = {
        "FOVEA_PREDICTION_SAMPLE_RATE": "1",
        "FOVEA_SCHEDULER_INTERVAL_S": "0.5",
        "FOVEA_RETRY_BACKOFF_S": "0.5",
    }
    s = Stack(root / "home", data, env=env)
    s.start()
    yield s
    s.stop()
