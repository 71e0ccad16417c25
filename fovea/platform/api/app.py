"""The FastAPI application: routers, auth, admission control, and errors that never leak a
traceback (fovea.platform.api.http_errors)."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from fovea import __version__
from fovea.config import Settings
from fovea.platform.api import drift, jobs, models, predict, runs, schedules, weights
from fovea.platform.api.admission import Admission
from fovea.platform.api.deps import require_token
from fovea.platform.api.http_errors import document_errors, install_error_handlers
from fovea.platform.monitoring.predictor import Predictor
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
    app.state.predictor = Predictor(settings, app.state.sessions)
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

    for router in (jobs.router, runs.router, models.router, predict.router, drift.router):
        app.include_router(router, dependencies=auth)
    app.include_router(schedules.router, dependencies=auth)
    app.include_router(weights.router, dependencies=auth)
    install_error_handlers(app)
    app.add_middleware(
        Admission,
        limit=settings.api_max_concurrency,
        queue=settings.api_max_queue,
        wait_s=settings.api_queue_timeout_s,
        max_body_bytes=settings.api_max_body_bytes,
        max_upload_bytes=settings.predict_max_bytes,
    )

    document_errors(app)
    return app
