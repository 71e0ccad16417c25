"""Real stores for tests: a fresh PostgreSQL database, a migrated job store, an MLflow store."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

PG_ADMIN_URL = os.environ.get(
    "FOVEA_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database on the real server, dropped afterwards (a generator for
    fixtures: `yield from pg_database()`)."""
    from sqlalchemy import create_engine, text

    name = f"fovea_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # CI must have it: fail loudly, never skip
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not usable: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_sessions(url: str) -> sessionmaker[Session]:
    """Sessions on a job store at `url`, migrated to the newest schema."""
    from fovea.platform.store import make_engine, session_factory, upgrade

    engine = make_engine(url)
    upgrade(engine)
    return session_factory(engine)


@dataclass(frozen=True)
class MlflowStore:
    """A real MLflow store in the embedded default layout: <root>/mlflow.db, <root>/mlartifacts."""

    root: Path
    tracking_uri: str
    artifact_root: Path

    @classmethod
    def create(cls, root: Path) -> MlflowStore:
        from fovea.tracking._mlflow import make_client

        store = cls(
            root=root,
            tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
            artifact_root=root / "mlartifacts",
        )
        make_client(store.tracking_uri).search_experiments()  # creates the schema once
        return store
