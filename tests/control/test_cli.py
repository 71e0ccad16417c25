"""The `fovea` CLI as a user runs it (a subprocess) against the real API over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fovea.config import Settings
from fovea.platform.api.app import create_app
from tests.support.servers import LiveServer, free_port
from tests.support.specs import digits_spec

TOKEN = "cli-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("clihome")
    settings = Settings(home=home, data_roots=[home], api_token=TOKEN)
    with LiveServer(create_app(settings), free_port()) as live:
        yield live


def fovea(*args: str, url: str | None = None, token: str = TOKEN) -> subprocess.CompletedProcess:
    env = {**os.environ, "FOVEA_API_TOKEN": token, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "fovea", *args] + (["--url", url] if url else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


def test_submit_list_status_cancel(server: LiveServer, tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(digits_spec(name="cli-job", priority=4)))
    out = fovea("submit", str(spec), url=server.url)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split("submitted job ")[1].split()[0]
    listed = fovea("jobs", url=server.url)
    assert job_id in listed.stdout and "queued" in listed.stdout
    status = fovea("status", job_id, "--no-watch", url=server.url)
    assert "cli-job" in status.stdout and "queued" in status.stdout and "submitted" in status.stdout
    cancelled = fovea("cancel", job_id, url=server.url)
    assert cancelled.returncode == 0 and "cancelled" in cancelled.stdout


def test_errors_are_messages_not_tracebacks(server: LiveServer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(digits_spec(name="x", train={"epochs": 0})))
    out = fovea("submit", str(bad), url=server.url)
    assert out.returncode == 1 and "train.epochs" in out.stdout and "Traceback" not in out.stderr
    out = fovea("status", "nope", url=server.url)
    assert out.returncode == 1 and "no job with id 'nope'" in out.stdout
    out = fovea("jobs", url=server.url, token="wrong")
    assert out.returncode == 1 and "HTTP 401" in out.stdout
    out = fovea("jobs", url=f"http://127.0.0.1:{free_port()}")
    assert out.returncode == 1 and "is `fovea up` running?" in out.stdout
    assert "Traceback" not in out.stderr
    notyaml = tmp_path / "list.yaml"
    notyaml.write_text("- 1\n- 2\n")
    out = fovea("submit", str(notyaml), url=server.url)
    assert out.returncode == 1 and "must hold a job spec mapping" in out.stdout
