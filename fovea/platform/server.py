"""The control plane's processes: `fovea up` (API and scheduler in one, the embedded
default), `fovea api` (the API alone, any number of them) and `fovea scheduler` (one or
more, against a shared store: PostgreSQL when there are several). All read one Settings."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import FrameType

import uvicorn
from fastapi import FastAPI

from fovea.config import Settings
from fovea.platform.api.app import create_app

log = logging.getLogger(__name__)


def _prepare_tracking(settings: Settings) -> None:
    import fcntl

    from fovea.tracking import prepare_store

    # Schema and experiment before the first job: a one-time cost, not a per-job one.
    # Processes started together on one home (`fovea api` x n, `fovea scheduler`) take
    # turns: MLflow's SQLite schema migration is not safe to run twice at once.
    settings.ensure_home()
    with open(settings.home / ".prepare-tracking.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        prepare_store(
            tracking_uri=settings.tracking_uri,
            experiment=settings.mlflow_experiment,
            artifact_root=settings.artifact_root,
        )


def _ray_backend(settings: Settings):  # type: ignore[no-untyped-def]
    from fovea.workers.backend import RayBackend

    return RayBackend(
        address=settings.ray_address,
        num_cpus=settings.ray_num_cpus,
        num_gpus=settings.ray_num_gpus,
        idle_stop_s=settings.ray_idle_stop_s,
    )


def build(settings: Settings, *, with_scheduler: bool = True) -> FastAPI:
    app = create_app(settings)
    scheduler = monitor = None
    if with_scheduler:
        from fovea.platform.jobs.scheduler import Scheduler
        from fovea.platform.monitoring.service import monitor_for

        scheduler = Scheduler(
            settings=settings, sessions=app.state.sessions, backend=_ray_backend(settings)
        )
        monitor = monitor_for(settings, app.state.sessions)  # scheduled drift reports

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        _prepare_tracking(settings)
        if scheduler is not None:
            scheduler.start()
        if monitor is not None:
            monitor.start()
        try:
            yield
        finally:
            if monitor is not None:
                monitor.stop()
            if scheduler is not None:
                # Ray lives in this process: its jobs die with it. Hand them back now, so a
                # restart resumes them at once instead of a lease later.
                scheduler.stop(hand_back=True)
                scheduler.backend.shutdown()

    app.router.lifespan_context = lifespan
    app.state.scheduler = scheduler
    return app


class QuietServer(uvicorn.Server):
    """uvicorn's server with its housekeeping tick once a second instead of ten times.

    The tick only refreshes the Date header (once a second either way) and looks for a
    shutdown request, but its ten wake-ups a second cost CPU, idle or not, a
    share taken from training on a small machine (bench/overhead.py). A Ctrl-C or SIGTERM
    is now noticed within `TICK_S` instead of 0.1 s."""

    TICK_S = 1.0

    async def main_loop(self) -> None:
        counter = 0  # on_tick's count of 0.1 s ticks: it acts when counter % 10 == 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000
            await asyncio.sleep(self.TICK_S)


def serve(settings: Settings, *, with_scheduler: bool = True) -> None:
    """`fovea up` (with the scheduler) or `fovea api` (without): uvicorn in this process."""
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    # Bind first: building the app with its scheduler may start the local Ray, whose
    # daemons take ephemeral ports, the API's among them if it is not bound yet ("address
    # already in use" on a restart). A port in use is refused before anything started.
    sock = _listen_socket(settings.host, settings.port)
    app = build(settings, with_scheduler=with_scheduler)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning")
    QuietServer(config).run(sockets=[sock])


def _listen_socket(host: str, port: int) -> socket.socket:
    """The API's socket, bound (as uvicorn binds it) and not inherited by child processes."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"error: cannot serve the API on {host}:{port}: {exc.strerror}") from None
    return sock


def run_scheduler(settings: Settings, *, backend=None) -> None:  # type: ignore[no-untyped-def]
    """`fovea scheduler`: the scheduler (and the drift monitor) without the API.

    SIGTERM or SIGINT drains: no new claims or fires; running jobs are left to finish for
    up to `drain_timeout_s`, then asked to stop and handed back to the queue (their attempt
    not counted), to resume from their checkpoint under another scheduler. A second signal
    hands back at once.
    """
    from fovea.platform.jobs.scheduler import Scheduler
    from fovea.platform.monitoring.service import monitor_for
    from fovea.platform.store import make_engine, session_factory, upgrade

    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    settings.ensure_home()
    engine = make_engine(settings.db_url, pool_size=4, max_overflow=4)
    upgrade(engine)
    sessions = session_factory(engine)
    _prepare_tracking(settings)
    scheduler = Scheduler(
        settings=settings, sessions=sessions, backend=backend or _ray_backend(settings)
    )
    monitor = monitor_for(settings, sessions)
    signals = threading.Event()
    hurry = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signals.is_set():
            hurry.set()
        signals.set()
        scheduler.drain()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, on_signal)
    scheduler.start()
    monitor.start()
    log.info("scheduler %s started (store %s)", scheduler.owner, settings.db_url)
    while not signals.wait(1.0):
        pass
    log.info("draining: running jobs get up to %.0f s to finish", settings.drain_timeout_s)
    deadline = settings.drain_timeout_s
    while deadline > 0 and not hurry.is_set():
        if scheduler.wait_drained(min(1.0, deadline)):
            break
        deadline -= 1.0
    monitor.stop()
    scheduler.stop(hand_back=True)
    scheduler.backend.shutdown()
    engine.dispose()
    log.info("scheduler %s stopped", scheduler.owner)
