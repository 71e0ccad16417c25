"""Jobs admitted per second by the scheduler, on SQLite and PostgreSQL, 10,000 queued.

The real Scheduler, store and policy; the cluster is a FakeBackend (fovea.workers.testing)
whose attempts end at the next poll, so what is measured is the control plane alone:
claim (priority order, capacity from the store, lease), dispatch, outcome, state events.
PostgreSQL runs with one and with two schedulers sharing the store.

    python bench/admission.py [--jobs 10000] [--cpus 16] [--pg-admin-url URL]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, func, select, text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fovea.config import Settings
from fovea.platform.jobs import service as svc
from fovea.platform.jobs.scheduler import Scheduler
from fovea.platform.jobs.spec import JobSpec
from fovea.platform.store import (
    Job,
    JobState,
    make_engine,
    session_factory,
    transaction,
    upgrade,
)
from fovea.platform.wake import Wake
from fovea.workers.testing import FakeBackend

SPEC = JobSpec.model_validate(
    {
        "name": "tiny",
        "task": "classification",
        "dataset": {"uri": "builtin://digits"},
        "model": {"arch": "smallcnn"},
        "train": {"epochs": 1},
        "resources": {"cpus": 1},
    }
)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def queue(url: str, n: int) -> None:
    sessions = session_factory(make_engine(url))
    for start in range(0, n, 1000):
        with transaction(sessions) as s:
            for _ in range(min(1000, n - start)):
                svc.create_job(session=s, spec=SPEC)


def admit(url: str, *, schedulers: int, jobs: int, cpus: float, home: Path) -> dict[str, float]:
    engine = make_engine(url)
    upgrade(engine)
    queue(url, jobs)
    cluster = FakeBackend(cpus=cpus, polls=1)
    settings = Settings(home=home, database_url=url, data_roots=[home], retry_backoff_s=0.0)
    pool = [
        Scheduler(
            settings=settings,
            sessions=session_factory(make_engine(url)),
            backend=cluster,
            wake=Wake(),
        )
        for _ in range(schedulers)
    ]
    done = threading.Event()

    def loop(scheduler: Scheduler) -> None:
        while not done.is_set():
            scheduler.tick()

    reads = session_factory(engine)
    load_before = load()
    started = time.perf_counter()
    threads = [threading.Thread(target=loop, args=(s,), daemon=True) for s in pool]
    for t in threads:
        t.start()
    while True:
        time.sleep(0.25)
        with reads() as s:
            left = s.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.state.in_([JobState.QUEUED, JobState.RUNNING]))
            )
        if not left:
            break
    elapsed = time.perf_counter() - started
    done.set()
    for t in threads:
        t.join(30)
    assert set(cluster.submits.values()) == {1} and len(cluster.submits) == jobs
    assert cluster.max_in_use[0] <= cpus
    return {
        "jobs_per_s": jobs / elapsed,
        "seconds": elapsed,
        "max_cpus_in_use": cluster.max_in_use[0],
        "load_before": load_before,  # type: ignore[dict-item]
        "load_after": load(),  # type: ignore[dict-item]
    }


def pg_database(admin_url: str) -> tuple[str, object]:
    name = f"fovea_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return admin_url.rsplit("/", 1)[0] + f"/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--cpus", type=float, default=16.0)
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "FOVEA_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    print(
        f"cores {os.cpu_count()}, load average {load()}; {args.jobs} jobs queued, "
        f"cluster of {args.cpus:g} CPUs, 1 CPU per job, attempts end at the next poll"
    )
    cases = [("sqlite", 1), ("postgresql", 1), ("postgresql", 2)]
    for backend, n in cases:
        home = Path(tempfile.mkdtemp(prefix="fovea-admission-"))
        drop = None
        if backend == "sqlite":
            url = f"sqlite:///{home / 'jobs.db'}"
        else:
            url, drop = pg_database(args.pg_admin_url)
        try:
            r = admit(url, schedulers=n, jobs=args.jobs, cpus=args.cpus, home=home)
        finally:
            if drop is not None:
                drop()  # type: ignore[operator]
        print(
            f"{backend:<10} {n} scheduler(s): {r['jobs_per_s']:7.1f} jobs admitted/s "
            f"({args.jobs} in {r['seconds']:.1f} s, at most {r['max_cpus_in_use']:g} CPUs in "
            f"use), load average before {r['load_before']}, after {r['load_after']}"
        )


if __name__ == "__main__":
    main()
