"""Multi-worker jobs in the spec and in admission: workers x per-worker resources count."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from fovea.platform.errors import SpecError
from fovea.platform.jobs import service as svc
from fovea.platform.jobs.spec import JobSpec
from fovea.platform.jobs.validation import JobLimits, check_spec
from fovea.platform.store import make_engine, session_factory, transaction, upgrade
from tests.support.specs import digits_spec


def spec(name: str = "j", *, workers: int = 1, cpus: float = 1.0, batch: int = 32) -> JobSpec:
    return JobSpec.model_validate(
        digits_spec(
            name=name, train={"batch_size": batch}, resources={"workers": workers, "cpus": cpus}
        )
    )


def test_workers_default_to_one_and_the_batch_is_global() -> None:
    assert spec().resources.workers == 1
    assert spec(workers=4, cpus=2).resources.total_cpus == 8
    with pytest.raises(ValidationError, match=r"batch_size \(30\) is the global batch"):
        spec(workers=4, batch=30)
    with pytest.raises(ValidationError, match="workers"):
        spec(workers=0)


def test_the_per_job_limit_counts_every_worker() -> None:
    limits = JobLimits(cpus=8, gpus=0, epochs=10, image_size=512)
    check_spec(spec(workers=4, cpus=2), data_roots=[], limits=limits)  # 8: at the limit
    with pytest.raises(SpecError) as refused:
        check_spec(spec(workers=3, cpus=3, batch=30), data_roots=[], limits=limits)
    assert refused.value.field == "resources.cpus"
    assert "9 (3 workers together)" in str(refused.value)


@pytest.fixture
def sessions(db_url: str):
    engine = make_engine(db_url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def test_admission_counts_workers_times_resources(sessions) -> None:
    with transaction(sessions) as s:
        job, _ = svc.create_job(session=s, spec=spec("wide", workers=2, cpus=2))
        svc.create_job(session=s, spec=spec("pair", workers=2, cpus=1))
        assert job.cpus == 4
    with transaction(sessions) as s:
        got = svc.claim_jobs(
            session=s, owner="o", free=svc.Capacity(3, 0), lease=timedelta(seconds=30)
        )
    assert [j.name for j in got] == ["pair"]  # 2 x 2 CPUs do not fit 3; 2 x 1 do
