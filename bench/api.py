"""API latency under concurrency: p50/p99 of `POST /jobs` and `GET /jobs` with 50 clients
at once, against a real `fovea up` (the API alone, `--no-scheduler`: jobs stay queued, so
nothing but the API and its database is measured), on SQLite and on PostgreSQL.

Each client sends its requests one after another; a 503 is waited out (Retry-After) and
sent again, as a client should, and its latency counts from the first try. Prints the load
average before and after each run: on a shared machine the figures mean little without it.
Run: `python bench/api.py` (`--help` for the knobs; `--pg-admin-url` for another server).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from stack import TOKEN, running_stack  # bench/stack.py (the script's folder)

SPEC = {
    "task": "classification",
    "dataset": {"uri": "builtin://digits"},
    "model": {"arch": "smallcnn"},
    "train": {"epochs": 1},
    "register_as": None,
}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min, {os.cpu_count()} cores)"


async def one_call(
    http: httpx.AsyncClient, method: str, url: str, **kw: object
) -> tuple[float, int, int]:
    """(seconds from the first try to the final answer, final status, 503s waited out)"""
    started, refused = time.perf_counter(), 0
    while True:
        r = await http.request(method, url, **kw)  # type: ignore[arg-type]
        if r.status_code != 503:
            return time.perf_counter() - started, r.status_code, refused
        refused += 1
        await asyncio.sleep(float(r.headers.get("retry-after", "1")))


async def phase(base_url: str, clients: int, per_client: int, kind: str) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=120, limits=limits
    ) as http:

        async def client(i: int) -> list[tuple[float, int, int]]:
            out = []
            for j in range(per_client):
                if kind == "submit":
                    body = {**SPEC, "name": f"bench-{i}-{j}"}
                    out.append(await one_call(http, "POST", "/jobs", json=body))
                else:
                    out.append(await one_call(http, "GET", "/jobs", params={"limit": 50}))
            return out

        started = time.perf_counter()
        results = [
            r for rs in await asyncio.gather(*(client(i) for i in range(clients))) for r in rs
        ]
        wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    return {
        "requests": len(results),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "max_ms": 1000 * latencies[-1],
        "per_s": len(results) / wall,
        "statuses": dict(Counter(r[1] for r in results)),
        "retried_503": sum(r[2] for r in results),
    }


@contextmanager
def postgres(admin_url: str) -> Iterator[str]:
    from sqlalchemy import create_engine, text

    name = f"fovea_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(db: str, database_url: str | None, args: argparse.Namespace) -> None:
    env = {"database_url": database_url} if database_url else {}
    with running_stack(scheduler=False, **env) as (http, _home):
        base_url = str(http.base_url)
        print(f"\n{db}: {args.clients} clients x {args.requests} requests each, per phase")
        print(f"  load average before: {load()}")
        for kind in ("submit", "list"):
            r = asyncio.run(phase(base_url, args.clients, args.requests, kind))
            print(
                f"  {kind:<6} p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  "
                f"max {r['max_ms']:7.1f} ms  {r['per_s']:6.1f} req/s  "
                f"statuses {r['statuses']}  503s waited out {r['retried_503']}"
            )
            bad = {s: n for s, n in r["statuses"].items() if s >= 500}  # type: ignore[union-attr]
            if bad:
                raise SystemExit(f"{db} {kind}: server errors {bad}")
        print(f"  load average after:  {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20, help="per client and phase")
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "FOVEA_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a server where a scratch database may be created and dropped",
    )
    args = parser.parse_args()
    if args.db in ("sqlite", "both"):
        run("SQLite", None, args)
    if args.db in ("postgresql", "both"):
        with postgres(args.pg_admin_url) as url:
            run("PostgreSQL", url, args)


if __name__ == "__main__":
    main()
