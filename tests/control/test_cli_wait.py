"""`fovea submit --wait` and `fovea status` as a script sees them: exit codes per outcome,
a line per epoch when piped, what the worker is doing before the first step, the final
metrics and model, and a relative dataset path read against the spec file's folder.

The real CLI (a subprocess) against the real API over HTTP; the job moves through its
states by the store's own transition function, as the scheduler moves it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from fovea.config import Settings
from fovea.platform.api.app import create_app
from fovea.platform.jobs import service as svc
from fovea.platform.store import JobState, transaction
from tests.support.servers import LiveServer, free_port
from tests.support.specs import digits_spec

TOKEN = "wait-token"
SPEC = digits_spec(name="waited", train={"epochs": 2})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("waithome")
    settings = Settings(home=home, data_roots=[home], api_token=TOKEN)
    with LiveServer(create_app(settings), free_port()) as live:
        yield live


def fovea(server: LiveServer, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "FOVEA_API_TOKEN": TOKEN, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "fovea", *args, "--url", server.url]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd
    )


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=120)
    return proc.returncode, out


def spec_file(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump({**SPEC, **changes}))
    return path


def newest_job(server: LiveServer, name: str) -> str:
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        items = [j for j in http.get("/jobs").json()["items"] if j["name"] == name]
        if items:
            return items[0]["id"]
        time.sleep(0.2)
    raise AssertionError(f"no job named {name}")


def move(server: LiveServer, job_id: str, to: JobState | None = None, **fields: Any) -> None:
    """What the scheduler does: a state change (with its fields), or progress/events."""
    with transaction(server.app.state.sessions) as session:
        job = svc.get_job(session=session, job_id=job_id)
        if "event" in fields:
            kind, message = fields.pop("event")
            svc.add_event(session=session, job_id=job_id, kind=kind, message=message)
        if to is None:
            for name, value in fields.items():
                setattr(job, name, value)
        else:
            svc.transition(session=session, job=job, to=to, **fields)


def progress(epoch: int, epochs: int, loss: float) -> dict[str, Any]:
    fraction = (epoch - 0.5) / epochs
    return {"epoch": epoch, "epochs": epochs, "step": 5, "steps": 10, "fraction": fraction,
            "metrics": {"loss": loss}}  # fmt: skip


def test_wait_piped_prints_epochs_then_metrics_and_model(server: LiveServer, tmp_path: Path):
    proc = fovea(server, "submit", str(spec_file(tmp_path, name="piped")), "--wait")
    job_id = newest_job(server, "piped")
    move(server, job_id, JobState.RUNNING, message="dispatched")
    move(server, job_id, event=("decoding", "decoding 4,317 images"))
    time.sleep(2.5)  # the CLI polls once a second
    for epoch, loss in ((1, 0.9), (2, 0.4)):
        move(server, job_id, progress=progress(epoch, 2, loss))
        time.sleep(2.5)
    move(
        server,
        job_id,
        JobState.SUCCEEDED,
        message="done",
        metrics={"top1": 0.9125, "loss": 0.4},
        model_name="digits-waited",
        model_version="3",
    )
    code, out = finish(proc)
    assert code == 0, out
    lines = out.splitlines()
    assert sum("running, decoding 4,317 images" in line for line in lines) == 1, out
    assert "0%" not in out, out  # piped: no progress bar
    assert sum("epoch 1/2" in line for line in lines) == 1, out  # one line per epoch
    assert sum("epoch 2/2" in line for line in lines) == 1, out
    assert "succeeded" in out and "0.9125" in out and "top1" in out, out
    assert "model: digits-waited version 3" in out, out


def test_exit_codes_failed_cancelled_gave_up(server: LiveServer, tmp_path: Path) -> None:
    # failed: --wait exits 1 and says why
    proc = fovea(server, "submit", str(spec_file(tmp_path, name="doomed")), "--wait")
    job_id = newest_job(server, "doomed")
    move(server, job_id, JobState.RUNNING)
    move(server, job_id, JobState.FAILED, error="dataset: no images under /x")
    code, out = finish(proc)
    assert code == 1 and "no images under /x" in out and "failed" in out, out
    code, out = finish(fovea(server, "status", job_id))
    assert code == 1 and "failed" in out, out

    # cancelled while waited on: 3
    proc = fovea(server, "submit", str(spec_file(tmp_path, name="stopped")), "--wait")
    job_id = newest_job(server, "stopped")
    code, out = finish(fovea(server, "cancel", job_id))
    assert code == 0, out
    code, out = finish(proc)
    assert code == 3 and "cancelled" in out, out
    code, out = finish(fovea(server, "status", job_id, "--no-watch"))
    assert code == 3, out

    # still queued after --timeout: 4, and the job goes on
    code, out = finish(fovea(server, "submit", str(spec_file(tmp_path, name="slow")),
                             "--wait", "--timeout", "2"))  # fmt: skip
    assert code == 4 and "gave up waiting" in out, out
    job_id = newest_job(server, "slow")
    code, out = finish(fovea(server, "status", job_id, "--timeout", "1"))
    assert code == 4 and "queued" in out, out
    code, out = finish(fovea(server, "status", job_id, "--no-watch"))
    assert code == 0 and "queued" in out, out


def test_relative_dataset_uri_is_read_against_the_spec_file(server: LiveServer) -> None:
    home = Path(server.app.state.settings.home)
    for label in ("a", "b"):
        folder = home / "data" / "shapes" / label
        folder.mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / f"{i}.png")
    specs = home / "specs"
    specs.mkdir()
    path = specs / "job.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "name": "relative",
                                    "dataset": {"uri": "../data/shapes"}}))  # fmt: skip
    code, out = finish(fovea(server, "submit", str(path), cwd=Path("/")))
    assert code == 0, out
    job_id = out.split("submitted job ")[1].split()[0]
    http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"})
    sent = http.get(f"/jobs/{job_id}").json()["spec"]["dataset"]["uri"]
    assert sent == str((home / "data" / "shapes").resolve())
