"""What every page shares: the API client, error display, small formatting helpers.

The dashboard is a client of the HTTP API only (fovea.client.Client, bearer token from
FOVEA_API_TOKEN or <home>/api_token). The token never reaches a URL or a page.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar

import streamlit as st

from fovea.client import ApiError, Client
from fovea.config import DASHBOARD_API_URL_ENV as API_URL_ENV
from fovea.config import Settings

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
T = TypeVar("T")


@st.cache_resource(show_spinner=False)
def _client(url: str, token: str) -> Client:
    return Client(url, token, timeout=20.0)


def api_url() -> str:
    return os.environ.get(API_URL_ENV) or Settings().base_url


def client() -> Client:
    """The one client of this dashboard process; stops the page when no token is known."""
    settings = Settings()
    url = os.environ.get(API_URL_ENV) or settings.base_url
    token = settings.resolve_token(create=False)
    if not token:
        st.error(
            "No API token: set FOVEA_API_TOKEN, or run the dashboard where the API's "
            f"token file is ({settings.token_file})."
        )
        st.stop()
    return _client(url, token)


def explain(exc: ApiError) -> str:
    """A sentence for people, never a traceback."""
    if exc.status == 0:
        return (
            f"The Fovea API at {api_url()} does not answer. Start it with `fovea up` "
            "(or point the dashboard at it with `fovea dashboard --url ...`)."
        )
    if exc.status == 401:
        return (
            "The API refused the dashboard's token. Set FOVEA_API_TOKEN (or the token file "
            "under FOVEA_HOME) to the token the API was started with."
        )
    if exc.status == 503:
        return f"The API is busy or a store behind it is down; try again shortly. ({exc})"
    return str(exc)


def fail(exc: ApiError) -> NoReturn:
    st.error(explain(exc))
    st.stop()


def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args, **kwargs), or the page stops with a plain message on an API error."""
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        fail(exc)


def try_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[T | None, ApiError | None]:
    """fn(...) and no error, or None and the error (for calls a page can live without)."""
    try:
        return fn(*args, **kwargs), None
    except ApiError as exc:
        return None, exc


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def age(text: str | None, *, now: datetime | None = None) -> str:
    """'42s', '5m', '3h', '2d' since an ISO time."""
    when = parse_time(text)
    if when is None:
        return ""
    seconds = max(0, int(((now or datetime.now(UTC)) - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def progress_of(job: dict[str, Any]) -> tuple[float, str]:
    """(fraction 0..1, a short text) of a job's progress."""
    progress = job.get("progress") or {}
    if job["state"] == "succeeded":
        return 1.0, "done"
    fraction = float(progress.get("fraction") or 0.0)
    if "epoch" in progress and "epochs" in progress:
        text = f"epoch {progress['epoch']}/{progress['epochs']}"
        if progress.get("step") is not None and progress.get("steps"):
            text += f", step {progress['step']}/{progress['steps']}"
    else:
        text = str(progress.get("detail") or progress.get("phase") or job["state"])
    return min(max(fraction, 0.0), 1.0), text


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 0.1}} -> {"train.lr": 0.1}"""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
