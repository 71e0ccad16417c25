"""The FastAPI application: routers, auth, and errors that never leak a traceback."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fovea import __version__
from fovea.config import Settings
from fovea.platform import jobs as svc
from fovea.platform.api import jobs, models, monitoring
from fovea.platform.api.deps import Unauthorized, require_token
from fovea.platform.store import make_engine, session_factory, upgrade

log = logging.getLogger(__name__)


def _error(status: int, error: str, message: str, detail: Any = None) -> JSONResponse:
    body: dict[str, Any] = {"error": error, "message": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(status_code=status, content=body)


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def create_app(settings: Settings | None = None, *, token: str | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.ensure_home()
    engine = make_engine(settings.db_url)
    upgrade(engine)

    app = FastAPI(title="Fovea", version=__version__)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = session_factory(engine)
    resolved = token or settings.resolve_token(create=True)
    assert resolved
    app.state.token = resolved

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    auth = [Depends(require_token)]
    app.include_router(jobs.router, dependencies=auth)
    app.include_router(models.router, dependencies=auth)
    app.include_router(monitoring.router, dependencies=auth)
    monitoring.register_errors(app)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        resp = _error(401, "unauthorized", str(exc))
        resp.headers["WWW-Authenticate"] = "Bearer"
        return resp

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = []
        for err in exc.errors():
            field = _field(err.get("loc", ()))
            msg = err.get("msg", "invalid")
            if err.get("type") == "json_invalid":
                msg = f"request body is not valid JSON: {err.get('ctx', {}).get('error', msg)}"
            detail.append({"field": field, "problem": msg})
        message = "; ".join(f"{d['field']}: {d['problem']}" for d in detail)
        return _error(422, "invalid_request", message, detail)

    @app.exception_handler(svc.SpecError)
    async def _spec(_: Request, exc: svc.SpecError) -> JSONResponse:
        return _error(
            422, "invalid_request", str(exc), [{"field": exc.field, "problem": exc.problem}]
        )

    @app.exception_handler(svc.IdempotencyConflict)
    async def _idem(_: Request, exc: svc.IdempotencyConflict) -> JSONResponse:
        return _error(
            422,
            "idempotency_conflict",
            str(exc),
            [{"field": "Idempotency-Key", "problem": str(exc)}],
        )

    @app.exception_handler(svc.NotFound)
    async def _missing(_: Request, exc: svc.NotFound) -> JSONResponse:
        return _error(404, "not_found", str(exc))

    @app.exception_handler(svc.InvalidTransition)
    async def _conflict(_: Request, exc: svc.InvalidTransition) -> JSONResponse:
        return _error(409, "conflict", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error(500, "internal_error", "internal server error; see the server log")

    return app
