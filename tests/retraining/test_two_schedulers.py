"""Two real scheduler processes firing the same schedules: exactly one job per fire."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from fovea.platform.store import Job, ScheduleEvent, transaction
from tests.support.schedules import job_count, make_schedule

T0 = datetime(2026, 3, 2, 9, 0, 10, tzinfo=UTC)

# One scheduler process: step a fake clock over ten minutes in lockstep with the other
# (the test says which minute it is in the file `clock`; both tick that minute three times,
# as fast ticks would, and say they are done), then print its fires. Lockstep matters: a
# scheduler whose clock ran ahead would rightly coalesce the fires the other still holds
# locked into one misfire, and the count would test the misfire policy, not the race.
WORKER = textwrap.dedent("""
    import sys, time
    from datetime import datetime, UTC
    from pathlib import Path
    from fovea.platform.retraining.fires import fire_due_schedules
    from fovea.platform.store import make_engine, session_factory, transaction

    url, folder, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    sessions = session_factory(make_engine(url))
    (folder / f"ready-{me}").touch()
    fired = 0
    for minute in range(1, 11):
        while not (folder / "clock").exists() or (folder / "clock").read_text() != str(minute):
            time.sleep(0.005)
        now = datetime(2026, 3, 2, 9, minute, 1, tzinfo=UTC)
        for _ in range(3):
            with transaction(sessions) as s:
                fired += sum(e.kind == "fire" for e in fire_due_schedules(session=s, now=now))
        (folder / f"done-{me}-{minute}").touch()
    print(fired)
""")


def test_two_processes_make_exactly_100_jobs_from_100_fires(
    sessions, db_url: str, tmp_path: Path
) -> None:
    for i in range(10):  # 10 schedules x 10 minutes = 100 due fires
        make_schedule(sessions, now=T0, name=f"every-minute-{i}", cron="* * * * *")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, db_url, str(tmp_path), str(me)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for me in range(2)
    ]
    for minute in range(11):  # 0: both imported and connected; then each minute in turn
        names = [f"ready-{me}" if minute == 0 else f"done-{me}-{minute}" for me in range(2)]
        deadline = time.monotonic() + 120
        while not all((tmp_path / n).exists() for n in names):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
                p.stderr.read()[-3000:] for p in procs if p.poll() is not None and p.stderr
            ]
            time.sleep(0.005)
        if minute < 10:
            (tmp_path / "clock.tmp").write_text(str(minute + 1))
            (tmp_path / "clock.tmp").replace(tmp_path / "clock")
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    per_process = [int(out.strip()) for out, _ in outputs]
    assert sum(per_process) == 100, per_process
    assert job_count(sessions) == 100
    with transaction(sessions) as s:
        fires = s.scalar(
            select(func.count()).select_from(ScheduleEvent).where(ScheduleEvent.kind == "fire")
        )
        keys = s.scalar(select(func.count(func.distinct(Job.idempotency_key))))
    assert fires == 100 and keys == 100
