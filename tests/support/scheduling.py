"""Jobs in a real store for scheduler tests (the scheduler runs them on a FakeBackend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.specs import digits_spec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from fovea.config import Settings
    from fovea.platform.jobs.spec import JobSpec


def spec(cpus: float = 1.0, max_retries: int = 0) -> JobSpec:
    from fovea.platform.jobs.spec import JobSpec

    return JobSpec.model_validate(
        digits_spec(name="tiny", resources={"cpus": cpus}, max_retries=max_retries)
    )


def settings(tmp_path: Path, url: str, **extra: float) -> Settings:
    """A scheduler's settings on the store at `url`: no retry backoff, a one-minute lease."""
    from fovea.config import Settings

    fields = {"retry_backoff_s": 0.0, "lease_seconds": 60.0, **extra}
    return Settings(home=tmp_path, database_url=url, data_roots=[tmp_path], **fields)


def submit(sessions: sessionmaker[Session], n: int, **kw: float) -> list[str]:
    """n queued copies of spec(**kw); their ids."""
    from fovea.platform.jobs import service as svc
    from fovea.platform.store import transaction

    one = spec(**kw)  # type: ignore[arg-type]
    with transaction(sessions) as s:
        return [svc.create_job(session=s, spec=one)[0].id for _ in range(n)]
