"""One error body for every failure: {"error", "message", "detail": [{"field", "problem"}]},
the exception -> status mapping, and the OpenAPI description of both.

Clients see no traceback, ever; anything unexpected is logged here and answered 500.
A busy or unreachable database or model registry is 503 with Retry-After: nothing was
written, and the same request may be sent again (with the same Idempotency-Key).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from fovea.platform.api.admission import EXEMPT_PATHS
from fovea.platform.api.deps import Unauthorized
from fovea.platform.errors import (
    BadImages,
    IdempotencyConflict,
    InvalidTransition,
    NoReference,
    NotFound,
    PayloadTooLarge,
    ScheduleConflict,
    SpecError,
    Unavailable,
    WeightsRefused,
)

log = logging.getLogger(__name__)

DB_RETRY_AFTER_S = 1
_HTTP_ERRORS = {404: "not_found", 405: "method_not_allowed"}  # routing's own answers


class ErrorDetail(BaseModel):
    field: str  # dotted path into the request ("train.epochs"), or "body", a header's name
    problem: str


class ErrorOut(BaseModel):
    error: str  # machine-readable: invalid_request, not_found, overloaded, ...
    message: str  # for people: every problem, each with its field
    detail: list[ErrorDetail] = []


def error_response(
    status: int,
    error: str,
    message: str,
    detail: list[dict[str, str]] | None = None,
    *,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": error, "message": message, "detail": detail or []}
    return JSONResponse(status_code=status, content=body, headers=headers)


def unavailable_response(message: str, *, retry_after_s: int) -> JSONResponse:
    return error_response(
        503, "unavailable", message, headers={"Retry-After": str(max(1, retry_after_s))}
    )


_DESCRIPTIONS = {
    401: "missing or wrong bearer token (header WWW-Authenticate: Bearer)",
    404: "nothing of that name or id (the path names it)",
    409: "the job's state does not allow it (e.g. cancelling a finished job)",
    413: "request body over the configured limit (FOVEA_API_MAX_BODY_BYTES)",
    422: "invalid request: every problem named with its field",
    503: "overloaded, or the database or model registry is busy: nothing was done; retry "
    "after Retry-After seconds (with the same Idempotency-Key)",
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these status codes, each with the error body."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        out[code] = {"model": ErrorOut, "description": _DESCRIPTIONS[code]}
        if code == 503:
            out[code]["headers"] = {
                "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
            }
        if code == 401:
            out[code]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return out


def document_errors(app: FastAPI) -> None:
    """Make the app's OpenAPI schema say what it answers: on every operation, each status
    it can send with the error body. The generic ones are added here (401 behind the token,
    503 from admission and the database, 422 where there is input, 413 where there is a
    body, 404 where the path names something); routes declare the rest (409) and their own
    descriptions. FastAPI's HTTPValidationError, which the app never sends, goes away."""
    base = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = base()
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                _add_generic(operation, path=path)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _add_generic(operation: dict[str, Any], *, path: str) -> None:
    codes = []
    if path not in EXEMPT_PATHS:  # admission control answers 503 for everything else
        codes.append(503)
    if operation.get("security"):  # behind the bearer token
        codes.append(401)
    if operation.get("parameters") or "requestBody" in operation:
        codes.append(422)
    if "requestBody" in operation:
        codes.append(413)
    if "{" in path:
        codes.append(404)
    responses = operation.setdefault("responses", {})
    ref = {"$ref": "#/components/schemas/ErrorOut"}
    for code, spec in error_responses(*codes).items():
        documented = responses.get(str(code))
        if documented is None:
            spec = {k: v for k, v in spec.items() if k != "model"}
            responses[str(code)] = {**spec, "content": {"application/json": {"schema": ref}}}
        elif code == 422:  # FastAPI's own default: the app's error body instead
            documented["content"] = {"application/json": {"schema": ref}}
            documented["description"] = _DESCRIPTIONS[422]


def _allowed(app: FastAPI, path: str) -> str | None:
    """The methods the OpenAPI schema gives `path` (its templates matched segment by
    segment), e.g. "GET, POST" for /jobs."""
    methods: set[str] = set()
    for template, operations in app.openapi()["paths"].items():
        pattern = "".join(
            "[^/]+" if part.startswith("{") else re.escape(part)
            for part in re.split(r"(\{[^/]+\})", template)
        )
        if re.fullmatch(pattern, path):
            methods.update(m.upper() for m in operations)
    return ", ".join(sorted(methods)) or None


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def _validation_detail(exc: RequestValidationError) -> list[dict[str, str]]:
    detail = []
    for err in exc.errors():
        problem = err.get("msg", "invalid")
        if err.get("type") == "json_invalid":
            problem = f"request body is not valid JSON: {err.get('ctx', {}).get('error', problem)}"
            detail.append({"field": "body", "problem": problem})
            continue
        detail.append({"field": _field(err.get("loc", ())), "problem": problem})
    return detail


def _message(detail: list[dict[str, str]]) -> str:
    return "; ".join(f"{d['field']}: {d['problem']}" for d in detail)


def _answer(
    status: int, error: str, detail: Callable[[Any], list[dict[str, str]]] | None = None
) -> Callable[[Request, Any], Awaitable[JSONResponse]]:
    """A handler answering `status` with error name `error`, the exception's text and its
    `detail` rows."""

    async def handler(_: Request, exc: Any) -> JSONResponse:
        return error_response(status, error, str(exc), detail(exc) if detail else None)

    return handler


# The control plane's errors (fovea.platform.errors), each to one status and error name.
_ANSWERS: dict[type[Exception], Callable[[Request, Any], Awaitable[JSONResponse]]] = {
    NotFound: _answer(404, "not_found"),
    InvalidTransition: _answer(409, "conflict"),
    NoReference: _answer(409, "no_reference"),
    ScheduleConflict: _answer(409, "conflict", lambda e: [{"field": "name", "problem": str(e)}]),
    PayloadTooLarge: _answer(413, "too_large"),
    SpecError: _answer(
        422, "invalid_request", lambda e: [{"field": e.field, "problem": e.problem}]
    ),
    IdempotencyConflict: _answer(
        422, "idempotency_conflict", lambda e: [{"field": "Idempotency-Key", "problem": str(e)}]
    ),
    BadImages: _answer(422, "invalid_images", lambda e: e.problems),
    WeightsRefused: _answer(422, "invalid_weights"),
}


def install_error_handlers(app: FastAPI) -> None:
    for kind, handler in _ANSWERS.items():
        app.add_exception_handler(kind, handler)

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return error_response(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_detail(exc)
        return error_response(422, "invalid_request", _message(detail), detail)

    @app.exception_handler(Unavailable)
    async def _unavailable(_: Request, exc: Unavailable) -> JSONResponse:
        return unavailable_response(str(exc), retry_after_s=exc.retry_after_s)

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _database(request: Request, exc: Exception) -> JSONResponse:
        # locked past busy_timeout, connection lost, pool exhausted: the transaction was
        # rolled back, so nothing of this request is stored
        log.error("database unavailable on %s %s: %s", request.method, request.url.path, exc)
        return unavailable_response(
            "the job store is busy or unreachable; nothing was stored, try again",
            retry_after_s=DB_RETRY_AFTER_S,
        )

    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal server error; see the server log")


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Routing's own answers (404, 405) and undecodable bodies, in the error body."""
    if exc.status_code == 400:  # a body FastAPI could not decode (e.g. not UTF-8)
        problem = "request body cannot be read as JSON (UTF-8)"
        return error_response(
            422, "invalid_request", f"body: {problem}", [{"field": "body", "problem": problem}]
        )
    error = _HTTP_ERRORS.get(exc.status_code, "http_error")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method of the path, not only the first route's
        headers["Allow"] = _allowed(request.app, request.url.path) or headers.get("Allow", "")
    return error_response(exc.status_code, error, str(exc.detail), headers=headers)
