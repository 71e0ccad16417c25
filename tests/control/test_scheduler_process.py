"""`fovea scheduler`'s process (run_scheduler) with a FakeBackend injected: SIGTERM drains.

The same process as the CLI command, on a real SQLite store, without Ray (the Ray side of
the drain is in tests/e2e/test_restart.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fovea.platform.jobs import service as svc
from fovea.platform.store import JobState, transaction
from tests.support.scheduling import submit
from tests.support.stores import make_sessions

SCHEDULER = textwrap.dedent("""
    import logging, sys
    from fovea.config import Settings
    from fovea.platform.server import run_scheduler
    from fovea.workers.testing import FakeBackend

    logging.basicConfig(level=logging.INFO)
    home = sys.argv[1]
    settings = Settings(home=home, data_roots=[home], scheduler_interval_s=0.2)
    run_scheduler(settings, backend=FakeBackend(polls=25))  # each attempt runs ~5 s
""")


def state(sessions, job_id: str) -> JobState:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        return svc.get_job(session=s, job_id=job_id).state


def test_sigterm_lets_the_running_job_finish_and_claims_nothing_more(tmp_path: Path) -> None:
    sessions = make_sessions(f"sqlite:///{tmp_path / 'fovea.db'}")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    log = open(tmp_path / "scheduler.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-c", SCHEDULER, str(tmp_path)], env=env, stdout=log, stderr=log
    )
    try:
        (first,) = submit(sessions, 1)
        deadline = time.monotonic() + 60
        while state(sessions, first) is not JobState.RUNNING:
            assert proc.poll() is None, (tmp_path / "scheduler.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        (second,) = submit(sessions, 1)
        assert proc.wait(60) == 0, (tmp_path / "scheduler.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    assert state(sessions, first) is JobState.SUCCEEDED  # drained, not handed back
    assert state(sessions, second) is JobState.QUEUED  # never claimed
