"""FastAPI dependencies as Annotated aliases, and the one way routes call MLflow."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from fovea.config import Settings
from fovea.platform.errors import Unavailable

if TYPE_CHECKING:
    from fovea.platform.monitoring.predictor import Predictor

_bearer = HTTPBearer(auto_error=False)

# The largest id or offset a query may name: PostgreSQL's `integer` (SQLite's is wider).
# Past it the database itself would refuse the number (a 500); the API answers 422.
MAX_ROW_ID = 2**31 - 1
MAX_BIG_ROW_ID = 2**63 - 1  # `bigint` ids: the prediction log, drift reports
MLFLOW_RETRY_AFTER_S = 5
T = TypeVar("T")


class Unauthorized(Exception):
    pass


# Dependencies that only compute are `async def`: FastAPI runs a plain `def` dependency in
# its thread pool, a hop per request that costs more than the check itself.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_predictor(request: Request) -> Predictor:
    return request.app.state.predictor


def get_session(request: Request) -> Iterator[Session]:
    """A write transaction, committed before the response is sent (scope="function" below):
    a 2xx means the row is stored, and a failed commit becomes an error response."""
    with request.app.state.sessions() as session, session.begin():
        yield session


def get_read_session(request: Request) -> Iterator[Session]:
    """A read-only transaction: on SQLite it never takes the write lock."""
    with request.app.state.read_sessions() as session, session.begin():
        yield session


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    expected: str = request.app.state.token
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)")
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Unauthorized("invalid bearer token")


# "function": commit before the response is sent, so a client that got 201 (or 204) and
# asks again at once sees the change; the default commits only after sending.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PredictorDep = Annotated["Predictor", Depends(get_predictor)]


async def off_the_loop(call: Callable[..., T], *, store: str, **kwargs: Any) -> T:
    """An MLflow call (registry or tracking `store`) run in the thread pool, never on the
    event loop; MLflow failing is a 503 with Retry-After, never a 500."""
    from mlflow.exceptions import MlflowException  # mlflow loads on first use, not at start

    try:
        return await run_in_threadpool(call, **kwargs)
    except MlflowException as exc:
        raise Unavailable(
            f"the {store} did not answer: {exc.message[:300]}",
            retry_after_s=MLFLOW_RETRY_AFTER_S,
        ) from exc
