"""`fovea up`: the API and the scheduler in one process (the embedded default)."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI

from fovea.config import Settings
from fovea.platform.api.app import create_app

log = logging.getLogger(__name__)


def build(settings: Settings, *, with_scheduler: bool = True) -> FastAPI:
    app = create_app(settings)
    scheduler = monitor = None
    if with_scheduler:
        from fovea.platform.scheduler import Scheduler
        from fovea.workers.backend import RayBackend

        backend = RayBackend(
            address=settings.ray_address,
            num_cpus=settings.ray_num_cpus,
            num_gpus=settings.ray_num_gpus,
        )
        scheduler = Scheduler(settings=settings, sessions=app.state.sessions, backend=backend)
        from fovea.platform.monitoring import monitor_for

        monitor = monitor_for(settings, app.state.sessions)  # scheduled drift reports

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        from fovea.tracking import prepare_store

        # Schema and experiment before the first job: a one-time cost, not a per-job one.
        prepare_store(
            tracking_uri=settings.tracking_uri,
            experiment=settings.mlflow_experiment,
            artifact_root=settings.artifact_root,
        )
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
                scheduler.stop()
                scheduler.backend.shutdown()

    app.router.lifespan_context = lifespan
    app.state.scheduler = scheduler
    return app


def serve(settings: Settings, *, with_scheduler: bool = True) -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
    app = build(settings, with_scheduler=with_scheduler)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
