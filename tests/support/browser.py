"""A real dashboard process and Debian's chromium driven by Playwright (the Python package,
pointed at `command -v chromium`; never `playwright install`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from fovea.cli import streamlit_launch as launch
from tests.support.servers import free_port

OUTPUT = Path(os.environ.get("FOVEA_TEST_OUTPUT", "test-output")) / "dashboard"
PAGES = ("jobs", "run", "models", "drift", "schedules")


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:  # CI installs it (.ci/run): fail loudly, never skip
        raise AssertionError("chromium not found: apt-get install -y chromium")
    return path


class Dashboard:
    """`streamlit run fovea/dashboard/app.py` as `fovea dashboard` starts it."""

    def __init__(self, *, api_url: str, token: str, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**launch.environment(api_url=api_url), "FOVEA_API_TOKEN": token}
        self._log = open(log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            launch.command(port=self.port), env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{self.url}/_stcore/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the dashboard did not start:\n{log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def settle(page: Any, timeout_s: float = 30) -> None:
    """Wait until Streamlit has finished the script run (its 'running' widget is gone)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_s * 1000)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
        timeout=timeout_s * 1000,
    )


def open_page(page: Any, url: str, title: str, timeout_s: float = 30) -> float:
    """Go to url; seconds until the page's title is shown and the script run has ended."""
    started = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name=title).first.wait_for(timeout=timeout_s * 1000)
    settle(page, timeout_s)
    return time.perf_counter() - started
