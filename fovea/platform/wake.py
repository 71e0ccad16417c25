"""Wake the scheduler when there may be work, so an idle stack sleeps instead of polling.

A commit that wrote a job, a schedule or a model event (a submit, a cancel, a finished
attempt, a new schedule, a drift verdict) wakes every scheduler:

- in this process, through `LOCAL` (an Event set after the commit);
- in other processes on PostgreSQL, through NOTIFY (sent with the commit, never for a
  rolled-back transaction) to a thread of each scheduler that LISTENs;
- in other processes on SQLite, which has no notifications, through a thread that reads
  `PRAGMA data_version` every `sqlite_check_s` (a read of a few microseconds that changes
  whenever another connection commits).

The scheduler also sleeps no longer than its next deadline (a retry's backoff, a lease
about to expire, a schedule coming due), computed from the store.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

log = logging.getLogger(__name__)

CHANNEL = "fovea_work"
_FLAG = "fovea_wake"
_NOTIFIED = "fovea_wake_notified"
_QUIET = "fovea_wake_quiet"


class Wake:
    """An Event that remembers a notify until the next wait.

    A notify is `sure` when it follows a commit that wrote work (a local commit, a NOTIFY);
    SQLite's watcher cannot tell, as any commit, a running job's progress included, changes
    `data_version`: its notifies are not sure, and a busy scheduler does not act on them at
    once (fovea.platform.jobs.scheduler)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._sure = False
        self.sure = False  # whether the last wait saw a sure notify

    def notify(self, *, sure: bool = True) -> None:
        if sure:
            self._sure = True
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` s; True when woken by a notify (or one came meanwhile)."""
        woke = self._event.wait(max(0.0, timeout))
        self.sure, self._sure = woke and self._sure, False
        self._event.clear()
        return woke


LOCAL = Wake()


def quiet(session: Session) -> None:
    """This transaction writes nothing a scheduler acts on (e.g. the progress of a running
    job): it wakes no one, here or in other processes (no NOTIFY)."""
    session.info[_QUIET] = True


def _relevant(session: Session) -> bool:
    from fovea.platform.store import Job, ModelEvent, Schedule

    kinds = (Job, Schedule, ModelEvent)
    return any(
        isinstance(obj, kinds)
        for group in (session.new, session.dirty, session.deleted)
        for obj in group
    )


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: Any) -> None:
    if session.info.get(_FLAG) or session.info.get(_QUIET) or not _relevant(session):
        return
    session.info[_FLAG] = True
    conn = session.connection()
    if conn.dialect.name == "postgresql" and not session.info.get(_NOTIFIED):
        session.info[_NOTIFIED] = True
        conn.exec_driver_sql(f"NOTIFY {CHANNEL}")  # delivered at commit, dropped at rollback


@event.listens_for(Session, "after_commit")
def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a SAVEPOINT released: the transaction goes on
    session.info.pop(_NOTIFIED, None)
    session.info.pop(_QUIET, None)
    if session.info.pop(_FLAG, False):
        LOCAL.notify()


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    if session.in_nested_transaction():
        return  # back to a SAVEPOINT: what was flushed before it still counts
    session.info.pop(_FLAG, None)
    session.info.pop(_QUIET, None)
    session.info.pop(_NOTIFIED, None)


class Listener:
    """Forwards other processes' commits to `wake` (a thread; see the module doc)."""

    def __init__(self, url: str, wake: Wake, *, sqlite_check_s: float = 1.0) -> None:
        self.url = make_url(url)
        self.wake = wake
        self.sqlite_check_s = sqlite_check_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        backend = self.url.get_backend_name()
        target = self._listen_pg if backend == "postgresql" else self._watch_sqlite
        self._thread = threading.Thread(target=target, name="fovea-wake", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _listen_pg(self) -> None:
        import psycopg

        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.wake.notify()  # anything committed before LISTEN took effect
                    while not self._stop.is_set():
                        for _ in conn.notifies(timeout=5.0, stop_after=1):
                            self.wake.notify()
            except Exception:
                log.warning("LISTEN %s failed; retrying in 5 s", CHANNEL, exc_info=True)
                self.wake.notify()
                self._stop.wait(5.0)

    def _watch_sqlite(self) -> None:
        import sqlite3

        path = self.url.database or ":memory:"
        if path == ":memory:":
            return
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            last = None
            while not self._stop.wait(self.sqlite_check_s):
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error:
                    continue
                if last is not None and version != last:
                    self.wake.notify(sure=False)  # any commit, progress too: maybe work
                last = version
        finally:
            conn.close()
