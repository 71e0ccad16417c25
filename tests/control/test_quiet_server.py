"""`fovea up` and `fovea api` serve with QuietServer: uvicorn ticking once a second instead
of ten times (an idle API costs nothing), still with a fresh Date header and a prompt stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn
from fastapi import FastAPI

from fovea.platform.server import QuietServer


def test_quiet_server_serves_ticks_once_a_second_and_stops() -> None:
    app = FastAPI()

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"pong": "yes"}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = QuietServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    ticks: list[int] = []
    on_tick = server.on_tick

    async def counted(counter: int) -> bool:
        ticks.append(counter)
        return await on_tick(counter)

    server.on_tick = counted  # type: ignore[method-assign]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.started
        answer = httpx.get(f"http://127.0.0.1:{port}/ping")
        assert answer.json() == {"pong": "yes"} and answer.headers["date"].endswith("GMT")
        first = len(ticks)
        time.sleep(3.0)
        assert 1 <= len(ticks) - first <= 5, ticks  # uvicorn's own loop: ~30 in 3 s
        assert all(counter % 10 == 0 for counter in ticks)  # each one refreshes the Date
    finally:
        asked = time.monotonic()
        server.should_exit = True
        thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - asked < 5.0


def test_fovea_up_on_a_port_in_use_says_so_before_starting_anything(tmp_path: Path) -> None:
    """The API's port is bound before the scheduler (and a local Ray its queued jobs would
    start) comes up: a port in use is refused at once, with the address in the message."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {
            **os.environ,
            "FOVEA_HOME": str(tmp_path / "home"),
            "FOVEA_PORT": str(port),
            "FOVEA_API_TOKEN": "t" * 32,
            "FOVEA_DATA_ROOTS": str(tmp_path),
        }
        run = subprocess.run(
            [sys.executable, "-m", "fovea", "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    out = run.stdout + run.stderr
    assert run.returncode != 0, out
    assert "address already in use" in out.lower() and str(port) in out, out
    assert "Started a local Ray" not in out and "Traceback" not in out, out
