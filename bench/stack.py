"""A real `fovea up` for benchmarks: its own home folder, port and token, stopped at exit."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Running:
    """A started stack: unpacks as (client, home); `pids` are its top processes."""

    http: httpx.Client
    home: Path
    pids: list[int]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.http, self.home))


@contextmanager
def running_stack(*, scheduler: bool = True, split: bool = False, **env: str) -> Iterator[Running]:
    """(a client with the token, the stack's home); extra FOVEA_* settings as keywords;
    `scheduler=False` starts the API alone (no Ray): jobs stay queued; `split=True` runs
    the API (`fovea api`) and the scheduler (`fovea scheduler`, with the local Ray) as two
    processes on one home instead of `fovea up`."""
    home = Path(tempfile.mkdtemp(prefix="fovea-bench-"))
    port = free_port()
    environ = {
        **os.environ,
        "FOVEA_HOME": str(home),
        "FOVEA_PORT": str(port),
        "FOVEA_API_TOKEN": TOKEN,
        "FOVEA_DATA_ROOTS": f"{REPO.parent}:{REPO}",
        **{f"FOVEA_{k.upper()}": v for k, v in env.items()},
    }
    if split:
        commands = [["api"], *([["scheduler"]] if scheduler else [])]
    else:
        commands = [["up", *([] if scheduler else ["--no-scheduler"])]]
    servers = []
    for command in commands:
        with open(home / f"{command[0]}.log", "wb") as log:
            servers.append(
                subprocess.Popen(
                    [sys.executable, "-m", "fovea", *command],
                    env=environ,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            )
    http = httpx.Client(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=120,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                http.get("/health")
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or any(s.poll() is not None for s in servers):
                    raise SystemExit(f"the stack did not start; see the logs in {home}") from None
                time.sleep(0.5)
        yield Running(http, home, [server.pid for server in servers])
    finally:
        for server in servers:
            server.send_signal(2)
        for server in servers:
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()


def train(http: httpx.Client, spec: dict[str, Any], *, poll_s: float = 0.5) -> dict[str, Any]:
    """Submit `spec` and wait for the job's end (asking every `poll_s`); exits when it did
    not succeed."""
    job = http.post("/jobs", json=spec).json()
    if "id" not in job:
        raise SystemExit(f"submit refused: {job}")
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(poll_s)
        job = http.get(f"/jobs/{job['id']}").json()
    if job["state"] != "succeeded":
        raise SystemExit(f"job {job['state']}: {job['error']}")
    return job
