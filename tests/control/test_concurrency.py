"""Many clients at once against the real app (uvicorn) on real SQLite and PostgreSQL:
no 5xx but 503 + Retry-After, one job per Idempotency-Key, every 201 one row and every row
a response its client saw, and under overload refusals that leave nothing behind."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, text

from fovea.config import Settings
from fovea.platform.api.app import create_app
from tests.support.servers import LiveServer, free_port
from tests.support.specs import digits_spec

TOKEN = "many-clients"
HEADERS = {"Authorization": f"Bearer {TOKEN}"}
CLIENTS = 200
KEYS = 10  # 5 clients share each key
UNKEYED = 60
READS = 50
CANCELLED = 20  # 2 clients cancel each of these pre-created jobs


def job_spec(name: str) -> dict[str, Any]:
    return digits_spec(name=name, register_as=None)


@dataclass
class Seen:
    """What one client saw: every status (retries included) and the final response."""

    statuses: list[int] = field(default_factory=list)
    final: httpx.Response | None = None


async def call(http: httpx.AsyncClient, method: str, url: str, **kwargs: Any) -> Seen:
    """A well-behaved client: on 503 it waits Retry-After seconds and sends the same
    request again (same Idempotency-Key); it never gives up before the server answers."""
    seen = Seen()
    for _ in range(60):
        r = await http.request(method, url, **kwargs)
        seen.statuses.append(r.status_code)
        if r.status_code != 503:
            seen.final = r
            return seen
        assert r.headers["retry-after"].isdigit(), r.headers  # never a bare 503
        await asyncio.sleep(int(r.headers["retry-after"]) * random.uniform(0.5, 1.0))
    raise AssertionError(f"{method} {url}: still 503 after 60 tries")


def start(tmp_path: Path, db_url: str, **settings: Any) -> LiveServer:
    config = Settings(
        home=tmp_path / "home",
        database_url=db_url,
        data_roots=[tmp_path],
        api_token=TOKEN,
        **settings,
    )
    return LiveServer(create_app(config), free_port())


def stored_jobs(db_url: str) -> list[tuple[str, str | None]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, idempotency_key FROM jobs"))
            return [(r[0], r[1]) for r in rows]
    finally:
        engine.dispose()


async def two_hundred_clients(url: str) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=CLIENTS + 50, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=300, limits=limits) as http:
        existing = [
            (await http.post("/jobs", json=job_spec(f"pre{i}"))).json()["id"]
            for i in range(CANCELLED)
        ]
        work: list[tuple[str, Any]] = []
        for k in range(KEYS):
            headers = {"Idempotency-Key": f"key-{k}"}
            work += [
                ("keyed", (k, call(http, "POST", "/jobs", json=job_spec(f"k{k}"), headers=headers)))
                for _ in range(5)
            ]
        work += [
            ("unkeyed", call(http, "POST", "/jobs", json=job_spec(f"u{i}"))) for i in range(UNKEYED)
        ]
        work += [
            ("read", call(http, "GET", "/jobs", params={"limit": 50})) for _ in range(READS // 2)
        ]
        work += [
            ("read", call(http, "GET", f"/jobs/{existing[i % CANCELLED]}"))
            for i in range(READS // 2)
        ]
        work += [
            ("cancel", (job_id, call(http, "POST", f"/jobs/{job_id}/cancel")))
            for job_id in existing
            for _ in range(2)
        ]  # fmt: skip
        assert len(work) == CLIENTS
        random.Random(0).shuffle(work)

        async def run(kind: str, item: Any) -> tuple[str, Any, Seen]:
            tag, coro = item if kind in ("keyed", "cancel") else (None, item)
            return kind, tag, await coro

        results = await asyncio.gather(*(run(kind, item) for kind, item in work))
        return {"existing": existing, "results": results}


def test_two_hundred_concurrent_clients(db_url: str, tmp_path: Path) -> None:
    with start(tmp_path, db_url) as server:
        out = asyncio.run(two_hundred_clients(server.url))
    results: list[tuple[str, Any, Seen]] = out["results"]
    every = Counter(s for _, _, seen in results for s in seen.statuses)
    assert not [s for s in every if s >= 500 and s != 503], every  # 503s carried Retry-After

    created = {}  # id -> key, from the 201s the clients saw
    by_key: dict[int, set[str]] = {}
    for kind, tag, seen in results:
        final = seen.final
        assert final is not None
        if kind == "keyed":
            assert final.status_code in (200, 201), final.text
            by_key.setdefault(tag, set()).add(final.json()["id"])
            if final.status_code == 201:
                created[final.json()["id"]] = f"key-{tag}"
        elif kind == "unkeyed":
            assert final.status_code == 201, final.text
            created[final.json()["id"]] = None
        elif kind == "read":
            assert final.status_code == 200, final.text
    assert all(len(ids) == 1 for ids in by_key.values()) and len(by_key) == KEYS
    assert Counter(created.values())[None] == UNKEYED
    assert sorted(k for k in created.values() if k) == sorted(f"key-{k}" for k in range(KEYS))

    cancels = Counter(
        (tag, seen.final.status_code) for kind, tag, seen in results if kind == "cancel"
    )
    for job_id in out["existing"]:  # one cancel wins, the other finds it already ended
        assert cancels[(job_id, 202)] == 1 and cancels[(job_id, 409)] == 1, cancels

    rows = dict(stored_jobs(db_url))
    made_here = {i: k for i, k in rows.items() if i not in out["existing"]}
    assert made_here == created  # every row a 201 some client saw, every 201 one row


class WriteLock:
    """The job table's write lock, held from outside the app as a long writer would."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self._release: Any = None

    def acquire(self) -> None:
        if self.db_url.startswith("sqlite"):
            conn = sqlite3.connect(self.db_url.removeprefix("sqlite:///"), isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            self._release = lambda: (conn.execute("ROLLBACK"), conn.close())
            return
        engine = create_engine(self.db_url)
        pg = engine.connect()
        pg.begin()
        pg.exec_driver_sql("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE")  # reads still go
        self._release = lambda: (pg.rollback(), pg.close(), engine.dispose())

    def release(self) -> None:
        self._release()


@contextmanager
def write_lock(db_url: str) -> Iterator[None]:
    lock = WriteLock(db_url)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


@pytest.mark.parametrize("queue,wait_s", [(0, 30.0), (50, 0.3)])
def test_overload_is_503_with_retry_after_and_stores_nothing(
    db_url: str, tmp_path: Path, queue: int, wait_s: float
) -> None:
    """One request at work (held up by a lock); 30 more are refused at once (no queue) or
    after waiting their time in the queue: 503 + Retry-After, and no row for any of them."""
    lock = WriteLock(db_url)

    async def scenario(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=120) as http:
            lock.acquire()
            first = asyncio.ensure_future(http.post("/jobs", json=job_spec("first")))
            await asyncio.sleep(0.5)  # admitted, and now waiting for the lock
            rest = await asyncio.gather(
                *(http.post("/jobs", json=job_spec(f"n{i}")) for i in range(30))
            )
            lock.release()
            return [*rest, await first]

    settings = {"api_max_concurrency": 1, "api_max_queue": queue, "api_queue_timeout_s": wait_s}
    with start(tmp_path, db_url, **settings) as server:
        answers = asyncio.run(scenario(server.url))
    assert Counter(r.status_code for r in answers) == {503: 30, 201: 1}
    for r in answers[:-1]:
        assert r.headers["retry-after"] == "1" and r.json()["error"] == "overloaded", r.text
    assert [i for i, _ in stored_jobs(db_url)] == [answers[-1].json()["id"]]


def test_database_busy_is_503_and_stores_nothing(tmp_path: Path) -> None:
    """A write that cannot get the SQLite lock within busy_timeout is rolled back: 503 with
    Retry-After, never a 500 and never a row."""
    db_url = f"sqlite:///{tmp_path / 'busy.db'}"
    with start(tmp_path, db_url) as server:
        engine = server.app.state.engine
        event.listen(engine, "connect", lambda conn, _: conn.execute("PRAGMA busy_timeout=300"))
        engine.dispose()  # new connections get the short wait
        with write_lock(db_url):
            r = httpx.post(f"{server.url}/jobs", json=job_spec("busy"), headers=HEADERS, timeout=60)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1" and r.json()["error"] == "unavailable"
        ok = httpx.post(f"{server.url}/jobs", json=job_spec("later"), headers=HEADERS, timeout=60)
        assert ok.status_code == 201
    assert [i for i, _ in stored_jobs(db_url)] == [ok.json()["id"]]


def test_a_client_that_hangs_up_while_queued_creates_nothing(db_url: str, tmp_path: Path) -> None:
    lock = WriteLock(db_url)

    async def scenario(url: str) -> tuple[httpx.Response, dict[str, Any]]:
        async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=120) as http:
            lock.acquire()
            first = asyncio.ensure_future(http.post("/jobs", json=job_spec("first")))
            await asyncio.sleep(0.5)  # holds the only slot, waiting for the lock
            async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=1) as quitter:
                with pytest.raises(httpx.ReadTimeout):  # gives up while queued
                    await quitter.post("/jobs", json=job_spec("gave-up"))
            lock.release()
            # this read queues behind the one who hung up: once it answers, that one is done
            page = (await http.get("/jobs")).json()
            return await first, page

    with start(tmp_path, db_url, api_max_concurrency=1, api_queue_timeout_s=60) as server:
        first, page = asyncio.run(scenario(server.url))
    assert first.status_code == 201, first.text
    assert [j["name"] for j in page["items"]] == ["first"]
    assert [i for i, _ in stored_jobs(db_url)] == [first.json()["id"]]
