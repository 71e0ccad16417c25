"""A real `fovea up` that dies mid-fire, and again between a fire and its job, then comes
back: exactly one job for the fire, and it runs."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fovea.platform.retraining.service import ScheduleSpec, create_schedule
from fovea.platform.store import (
    Job,
    Schedule,
    ScheduleEvent,
    make_engine,
    session_factory,
    transaction,
    upgrade,
    utcnow,
)
from tests.support.specs import digits_spec
from tests.support.stack import Stack

pytestmark = pytest.mark.slow

TEMPLATE = digits_spec(quick=True, name="digits-nightly", train={"epochs": 1})

# `fovea up` with a fault injected on purpose, then os._exit(137) as a kill -9 would.
DIE_MID_FIRE = """
    from fovea.platform.retraining import fires as schedule_fire
    real = schedule_fire.fire_due_schedules
    def fire_then_die(**kwargs):
        written = real(**kwargs)
        if any(e.kind == "fire" for e in written):
            os._exit(137)  # the job row is written, the transaction not committed
        return written
    schedule_fire.fire_due_schedules = fire_then_die
"""
DIE_BEFORE_DISPATCH = """
    from fovea.platform.jobs import scheduler
    real = scheduler.Scheduler._fire_schedules
    def fire_then_die(self):
        real(self)  # committed
        with self.sessions() as s:
            fired = select(func.count()).where(ScheduleEvent.kind == "fire")
            if s.scalar(fired.select_from(ScheduleEvent)):
                os._exit(137)  # before _dispatch starts the job
    scheduler.Scheduler._fire_schedules = fire_then_die
"""
PRELUDE = """
    import os, sys
    from sqlalchemy import func, select
    from fovea.platform.store import ScheduleEvent
"""


def crashing_up(stack: Stack, fault: str) -> int:
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(fault)
    code += "from fovea.cli import main\nsys.argv = ['fovea', 'up']\nmain()\n"
    with open(stack.home / "crash.log", "ab") as log:
        proc = subprocess.run(
            [sys.executable, "-c", code], env=stack.env, stdout=log, stderr=log, timeout=150
        )
    return proc.returncode


def counts(sessions) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        jobs = s.scalar(select(func.count()).select_from(Job)) or 0
        fires = s.scalar(
            select(func.count()).select_from(ScheduleEvent).where(ScheduleEvent.kind == "fire")
        )
    return jobs, fires or 0


def test_restart_between_a_fire_and_its_job_leaves_one_job(tmp_path: Path) -> None:
    home, data = tmp_path / "home", tmp_path / "data"
    data.mkdir()
    stack = Stack(home, data)
    home.mkdir()
    engine = make_engine(f"sqlite:///{home / 'fovea.db'}")
    upgrade(engine)
    sessions = session_factory(engine)
    # A daily schedule whose fire time was two minutes ago (within the misfire grace).
    due = (utcnow() - timedelta(minutes=2)).replace(second=0, microsecond=0)
    spec = ScheduleSpec.model_validate(
        {"name": "nightly", "template": TEMPLATE, "cron": f"{due.minute} {due.hour} * * *"}
    )
    with transaction(sessions) as s:
        schedule = create_schedule(
            session=s, spec=spec, data_roots=[data], now=due - timedelta(minutes=1)
        )
        assert schedule.next_fire_at == due

    assert crashing_up(stack, DIE_MID_FIRE) == 137, (home / "crash.log").read_text()[-3000:]
    assert counts(sessions) == (0, 0)  # nothing of the fire survived
    assert crashing_up(stack, DIE_BEFORE_DISPATCH) == 137, (home / "crash.log").read_text()[-3000:]
    assert counts(sessions) == (1, 1)  # the fire and its queued job, committed together
    with transaction(sessions) as s:
        (job,) = s.scalars(select(Job))
        assert (
            job.state == "queued"
            and job.idempotency_key == f"schedule:{schedule.id}:{due.isoformat()}"
        )
        assert s.get(Schedule, schedule.id).next_fire_at == due + timedelta(days=1)

    stack.start()  # a plain restart
    try:
        done = stack.wait(job.id, {"succeeded", "failed", "cancelled"}, timeout=300)
        assert done["state"] == "succeeded", (done["error"], done["events"])
        shown = stack.http.get("/schedules/nightly").json()
    finally:
        stack.stop()
    assert counts(sessions) == (1, 1)
    assert shown["last_job_id"] == job.id and [e["kind"] for e in shown["events"]] == [
        "fire",
        "created",
    ]
    assert re.search(r"\d+ min late", shown["events"][0]["message"]), shown["events"][0]
    engine.dispose()
