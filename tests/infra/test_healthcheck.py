"""docker/healthcheck.py, the images' health check, against real sockets and processes."""

from __future__ import annotations

import http.server
import importlib.util
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.infra_checks import DOCKER

SCRIPT = DOCKER / "healthcheck.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("fovea_healthcheck", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hc = _load()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_http(server: str) -> None:
    assert hc.check_http(f"http://{server}/health") is None
    assert "status 503" in hc.check_http(f"http://{server}/sick")
    assert hc.check_http(f"http://127.0.0.1:{_closed_port()}/health") is not None


def test_tcp(server: str) -> None:
    assert hc.check_tcp(server) is None
    assert hc.check_tcp(f"127.0.0.1:{_closed_port()}") is not None
    assert "expected HOST:PORT" in hc.check_tcp("no-port")


def test_process() -> None:
    marker = f"fovea-test-{uuid.uuid4().hex}"
    assert hc.check_process(marker) is not None
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        deadline = time.monotonic() + 10  # /proc/PID/cmdline is empty until exec completes
        while hc.check_process(marker) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hc.check_process(marker) is None
    finally:
        proc.kill()
        proc.wait()
    assert hc.check_process(marker) is not None


def test_command_line_all_checks_must_pass(server: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=30
        )

    assert run("http", f"http://{server}/health", "tcp", server).returncode == 0
    failed = run("tcp", server, "tcp", f"127.0.0.1:{_closed_port()}")
    assert failed.returncode == 1 and "tcp 127.0.0.1:" in failed.stderr
    assert run("ping", "x").returncode == 2
    assert run("http").returncode == 2
    # the check does not find itself: its own command line names the process it looks for
    assert run("process", f"no-such-{uuid.uuid4().hex}").returncode == 1


def test_script_is_executable() -> None:
    assert Path(SCRIPT).stat().st_mode & 0o111
