"""The FastAPI application: routers, auth, admission control, and errors that never leak a
traceback (fovea.platform.api.http_errors)."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from fovea import __version__
from fovea.config import Settings
from fovea.platform.api import jobs, models, monitoring, schedules
from fovea.platform.api.admission import Admission
from fovea.platform.api.deps import require_token
from fovea.platform.api.http_errors import document_errors, error_response, install_error_handlers
from fovea.platform.api.runs import router as runs_router
from fovea.platform.retraining.service import ScheduleConflict
from fovea.platform.store import make_engine, read_session_factory, session_factory, upgrade
from fovea.tasks.catalog import catalog_json

# connections beyond the admitted requests: the scheduler thread of `fovea up`, and slack
EXTRA_CONNECTIONS = 4
POOL_TIMEOUT_S = 10.0


def create_app(settings: Settings | None = None, *, token: str | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.ensure_home()
    # every admitted request holds at most one connection: the pool never runs dry
    engine = make_engine(
        settings.db_url,
        pool_size=settings.api_max_concurrency + EXTRA_CONNECTIONS,
        max_overflow=0,
        pool_timeout=POOL_TIMEOUT_S,
    )
    upgrade(engine)

    app = FastAPI(title="Fovea", version=__version__)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    app.state.read_sessions = read_session_factory(engine)
    resolved = token or settings.resolve_token(create=True)
    assert resolved
    app.state.token = resolved

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    auth = [Depends(require_token)]

    @app.get("/catalog", tags=["catalog"], dependencies=auth)
    def catalog() -> dict[str, object]:
        """What a job spec may name: per task its architectures, backbones, dataset
        formats, main metric and builtin datasets (forms build their choices from it)."""
        return catalog_json()

    app.include_router(jobs.router, dependencies=auth)
    app.include_router(models.router, dependencies=auth)
    app.include_router(monitoring.router, dependencies=auth)
    app.include_router(schedules.router, dependencies=auth)
    app.include_router(runs_router, dependencies=auth)
    install_error_handlers(app)
    monitoring.register_errors(app)
    app.add_middleware(
        Admission,
        limit=settings.api_max_concurrency,
        queue=settings.api_max_queue,
        wait_s=settings.api_queue_timeout_s,
        max_body_bytes=settings.api_max_body_bytes,
        max_upload_bytes=settings.predict_max_bytes,
    )

    @app.exception_handler(ScheduleConflict)
    async def _taken(_: Request, exc: ScheduleConflict) -> JSONResponse:
        detail = [{"field": "name", "problem": str(exc)}]
        return error_response(409, "conflict", str(exc), detail)

    document_errors(app)
    return app
