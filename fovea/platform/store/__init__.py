"""The SQL store of the control plane: typed SQLAlchemy tables (`job_tables`, `monitoring_tables`,
`retraining_tables`), engines and sessions (`db`); the schema changes only through the Alembic
migrations under `migrations/`."""

from fovea.platform.store.db import (
    make_engine,
    read_session_factory,
    session_factory,
    transaction,
    upgrade,
)
from fovea.platform.store.job_tables import (
    TRANSITIONS,
    Base,
    Job,
    JobEvent,
    JobState,
    ModelEvent,
    utcnow,
)
from fovea.platform.store.monitoring_tables import DriftReport, Prediction, ScoreRun
from fovea.platform.store.retraining_tables import (
    Overlap,
    Schedule,
    ScheduleEvent,
    ScheduleEventKind,
)

__all__ = [
    "TRANSITIONS",
    "Base",
    "DriftReport",
    "Job",
    "JobEvent",
    "JobState",
    "ModelEvent",
    "Overlap",
    "Prediction",
    "Schedule",
    "ScheduleEvent",
    "ScheduleEventKind",
    "ScoreRun",
    "make_engine",
    "read_session_factory",
    "session_factory",
    "transaction",
    "upgrade",
    "utcnow",
]
