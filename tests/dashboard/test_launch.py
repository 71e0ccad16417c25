"""`fovea dashboard` starts Streamlit on loopback with usage statistics off."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from tests.support.servers import free_port


def test_fovea_dashboard_serves_on_loopback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    env = {**os.environ, "FOVEA_HOME": str(tmp_path), "FOVEA_API_TOKEN": "t"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fovea", "dashboard", "--port", str(port),
         "--url", "http://127.0.0.1:9"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).is_success:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("the dashboard did not answer in 60 s")
        out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True)
        listening = out.stdout.split()
        assert any(a == f"127.0.0.1:{port}" for a in listening), out.stdout
    finally:
        proc.terminate()
        proc.wait(10)


def test_command_turns_usage_statistics_off() -> None:
    from fovea.cli import streamlit_launch as launch

    cmd = launch.command(port=8501)
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
