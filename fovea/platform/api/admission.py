"""Admission control in front of the routes: a bounded body, a bounded number of requests
at work, a bounded queue, and 503 + Retry-After for the rest.

Each request admitted holds one database connection and one worker thread for its whole
life, so bounding them here keeps the connection pool and the thread pool from ever
running dry (which used to surface as 500s). Refusals happen before any work: a 503 or
413 never leaves anything behind. A request whose client hangs up while it waits is
dropped unseen, so a client that gave up never creates a job it does not know about.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

OVERLOAD_RETRY_AFTER_S = 1
UPLOAD_SUFFIX = "/predict"  # POST /models/{name}/predict: images
EXEMPT_PATHS = frozenset({"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})


class Admission:
    """ASGI middleware: at most `limit` requests in the app at once; up to `queue` more
    wait, each at most `wait_s`; request bodies over `max_body_bytes` get 413."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        queue: int,
        wait_s: float,
        max_body_bytes: int,
        max_upload_bytes: int | None = None,
    ) -> None:
        self.app = app
        # image uploads (paths ending in UPLOAD_SUFFIX) may be larger than other bodies
        self.max_upload_bytes = max(max_upload_bytes or max_body_bytes, max_body_bytes)
        self.limit = limit
        self.queue = queue
        self.wait_s = wait_s
        self.max_body_bytes = max_body_bytes
        self.waiting = 0
        self._slots: asyncio.Semaphore | None = None  # made in the server's event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        body = await self._read_body(scope, receive, send)
        if body is None:
            return
        # resolves with http.disconnect when the client hangs up (or once we have answered)
        hangup = asyncio.ensure_future(receive())
        try:
            if await self._admit(send):
                try:
                    if not hangup.done():
                        await self.app(scope, _replay(body, hangup), send)
                finally:
                    self._slots_now().release()
        finally:
            hangup.cancel()

    def _slots_now(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limit)
        return self._slots

    async def _admit(self, send: Send) -> bool:
        slots = self._slots_now()
        if slots.locked() and self.waiting >= self.queue:
            await _overloaded(send, f"{self.limit} requests at work and {self.waiting} waiting")
            return False
        self.waiting += 1
        try:
            await asyncio.wait_for(slots.acquire(), self.wait_s)
        except TimeoutError:
            await _overloaded(send, f"a request waited {self.wait_s:g} s for a free slot")
            return False
        finally:
            self.waiting -= 1
        return True

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> list[Message] | None:
        """The request's body messages, or None after answering 413."""
        upload = scope["path"].endswith(UPLOAD_SUFFIX)
        limit = self.max_upload_bytes if upload else self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await self._too_large(send, limit, upload)
            return None
        messages, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                return None
            size += len(message.get("body", b""))
            if size > limit:
                await self._too_large(send, limit, upload)
                return None
            messages.append(message)
            if not message.get("more_body", False):
                return messages

    async def _too_large(self, send: Send, limit: int, upload: bool) -> None:
        setting = "FOVEA_PREDICT_MAX_BYTES" if upload else "FOVEA_API_MAX_BODY_BYTES"
        problem = f"request body over {limit} bytes ({setting})"
        body = {
            "error": "too_large",
            "message": f"body: {problem}",
            "detail": [{"field": "body", "problem": problem}],
        }
        # the rest of the body is never read: the connection cannot be reused
        await _send_error(send, 413, body, headers=[(b"connection", b"close")])


def _replay(
    body: list[Message], hangup: asyncio.Future[Message]
) -> Callable[[], Awaitable[Message]]:
    """A receive() that hands the buffered body to the app, then waits for the hang-up."""
    pending = list(body)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await asyncio.shield(hangup)

    return receive


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _overloaded(send: Send, why: str) -> None:
    message = f"the API is at capacity ({why}); nothing was done, retry after Retry-After seconds"
    await _send_error(
        send,
        503,
        {"error": "overloaded", "message": message, "detail": []},
        headers=[(b"retry-after", str(OVERLOAD_RETRY_AFTER_S).encode())],
    )


async def _send_error(
    send: Send, status: int, body: dict[str, object], *, headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body).encode()
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": payload})
