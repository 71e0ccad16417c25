"""Real job stores (SQLite and PostgreSQL) for the schedule tests; their helpers are in
tests/support/schedules.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session, sessionmaker

from fovea.platform.store import make_engine, session_factory, upgrade


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()
