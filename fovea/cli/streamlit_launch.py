"""Starting the dashboard: `streamlit run` on its app.py, bound to loopback, usage stats off.

The dashboard is started as a process, never imported: it is a client of the HTTP API.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fovea.config import DASHBOARD_API_URL_ENV as API_URL_ENV

APP = Path(__file__).parents[1] / "dashboard" / "app.py"
DEFAULT_PORT = 8501


def command(*, port: int, host: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--server.fileWatcherType",
        "none",
        "--client.toolbarMode",
        "viewer",
    ]


def environment(*, api_url: str | None) -> dict[str, str]:
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    if api_url:
        env[API_URL_ENV] = api_url
    return env


def check_installed() -> str | None:
    """None, or why the dashboard cannot start."""
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        return "the dashboard needs Streamlit: pip install 'fovea[dashboard]'"
    return None


def start(*, port: int, api_url: str | None, host: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    """The dashboard as a child process (for `fovea up --dashboard` and tests)."""
    return subprocess.Popen(command(port=port, host=host), env=environment(api_url=api_url))
