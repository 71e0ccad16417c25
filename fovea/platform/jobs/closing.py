"""End the MLflow runs of attempts that ended badly, so none stays RUNNING.

A worker that returns ends its own run. One that died (SIGKILL, OOM, node lost), or that
could not reach MLflow, cannot: the policy marks the job (`run_end_pending`), and this
closer, a thread of the scheduler process, sets such runs FAILED or KILLED. It only ends a
run that is still RUNNING, clears the mark only when done, and retries while MLflow is
down: the mark is in the store, so a restarted scheduler finishes what a dead one began.
It never blocks the scheduling loop on MLflow.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from fovea.config import Settings
from fovea.platform.jobs import service as svc
from fovea.platform.store import transaction

log = logging.getLogger(__name__)


class RunCloser:
    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        reads: sessionmaker[Session],
        settings: Settings,
        retry_s: float = 30.0,
    ) -> None:
        self.sessions = sessions
        self.reads = reads
        self.tracking_uri = settings.tracking_uri
        self.retry_s = retry_s
        self._client: Any = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._wake.set()  # a sweep at start: marks a dead scheduler left behind
        self._thread = threading.Thread(target=self._loop, name="fovea-run-closer", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()  # until a mark is written, or a failed sweep's retry is due
            self._wake.clear()
            if self._stop.is_set():
                return
            if not self.sweep():
                self._stop.wait(self.retry_s)
                self._wake.set()

    def sweep(self) -> bool:
        """End every marked run; True when none is left to retry."""
        with self.reads() as session:
            todo = svc.runs_to_end(session=session)
        ok = True
        for job_id, run_id, status in todo:
            try:
                self._end(run_id, status)
            except Exception as exc:
                log.warning("could not end MLflow run %s (%s): %s; retrying", run_id, status, exc)
                ok = False
                continue
            with transaction(self.sessions) as session:
                svc.run_ended(session=session, job_id=job_id, status=status)
        return ok

    def _end(self, run_id: str, status: str) -> None:
        if self._client is None:
            from fovea.tracking._mlflow import make_client

            self._client = make_client(self.tracking_uri)
        run = self._client.get_run(run_id)
        if run.info.status == "RUNNING":
            self._client.set_terminated(run_id, status)
            log.info("MLflow run %s of a dead attempt ended %s", run_id, status)
