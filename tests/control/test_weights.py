"""The weights store end to end: the `fovea weights` CLI (a subprocess) on a store that the
real API (over HTTP) reads, submit-time checks of model.weights, and the worker's use of
the stored file. Weights files are made here (random-init torchvision state dicts)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch
import torchvision

from fovea.config import Settings
from fovea.platform.api.app import create_app
from fovea.platform.jobs.scheduler import Scheduler
from fovea.platform.store import make_engine, session_factory
from fovea.workers.testing import FakeBackend
from tests.support.servers import LiveServer, free_port

TOKEN = "weights-token"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weightshome")


@pytest.fixture(scope="module")
def server(home: Path):
    settings = Settings(home=home, data_roots=[home], api_token=TOKEN)
    with LiveServer(create_app(settings), free_port()) as live:
        yield live


@pytest.fixture(scope="module")
def http(server: LiveServer):
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as client:
        yield client


def fovea(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "FOVEA_HOME": str(home), "COLUMNS": "200", **env}
    cmd = [sys.executable, "-m", "fovea", "weights", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=300)


def torchvision_style(folder: Path, arch: str) -> Path:
    """A state dict saved as torchvision names its files: <arch>-<first 8 hex of SHA-256>."""
    torch.manual_seed(0)
    raw = folder / f"{arch}.tmp"
    torch.save(torchvision.models.get_model(arch, weights=None).state_dict(), raw)
    digest = hashlib.sha256(raw.read_bytes()).hexdigest()
    return raw.rename(folder / f"{arch}-{digest[:8]}.pth")


def spec(weights: str, **model: str) -> dict:
    return {
        "name": "ft",
        "task": "classification",
        "dataset": {"uri": "builtin://digits"},
        "model": {"arch": "resnet18", "weights": weights, **model},
        "train": {"epochs": 2, "image_size": 32},
    }


def test_import_list_verify_use_tamper_remove(home: Path, http: httpx.Client, tmp_path: Path):
    file = torchvision_style(tmp_path, "resnet18")
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    out = fovea(home, "import", str(file), "--arch", "resnet18", "--name",
                "resnet18/test-v1", "--source", "made in the test", "--licence", "MIT")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "imported resnet18/test-v1 (resnet18, 122 tensors" in out.stdout
    listed = fovea(home, "list")
    assert "resnet18/test-v1" in listed.stdout and sha[:12] in listed.stdout

    # over HTTP: the entry, what it fits, and a verified re-hash
    body = http.get("/weights").json()
    assert [w["name"] for w in body["weights"]] == ["resnet18/test-v1"]
    entry = http.get("/weights/resnet18/test-v1", params={"verify": "true"}).json()
    assert (entry["sha256"], entry["classes"], entry["keys"]) == (sha, 1000, 122)
    assert entry["verified"] is True and entry["source"] == "made in the test"
    assert entry["fits"] == [
        "classification:resnet18",
        "detection:resnet18",
        "segmentation:resnet18",
    ]
    assert http.get("/weights/resnet18/nothing").status_code == 404

    # submit: accepted for resnet18 and pinned to the file's content; the fine-tuning
    # defaults are the worker's (the spec leaves them out)
    job = http.post("/jobs", json=spec("resnet18/test-v1")).json()
    assert job["spec"]["model"]["weights"] == f"resnet18/test-v1@sha256:{sha}"
    detector = spec("resnet18/test-v1")
    detector.update(task="detection", dataset={"uri": "builtin://shapes?n=8"})
    detector["model"] = {"arch": "yolo_n", "backbone": "resnet18", "weights": "resnet18/test-v1"}
    assert http.post("/jobs", json=detector).status_code == 201

    # the scheduler hands the worker the stored file and its hash
    settings = Settings(home=home, data_roots=[home], api_token=TOKEN)
    backend = FakeBackend(cpus=8)
    sessions = session_factory(make_engine(settings.db_url))
    Scheduler(settings=settings, sessions=sessions, backend=backend)._start(
        job["id"], 1, job["spec"], None
    )
    worker_job = backend.jobs[job["id"]]
    blob = home / "weights" / "blobs" / f"{sha}.pth"
    assert (worker_job.model.weights, worker_job.weights_sha256) == (str(blob), sha)
    assert worker_job.weights_source == f"resnet18/test-v1@sha256:{sha}"

    # an architecture mismatch: 422 naming the keys and how many
    wrong = http.post("/jobs", json=spec("resnet18/test-v1", arch="resnet34"))
    assert wrong.status_code == 422
    problem = wrong.json()["detail"][0]
    assert problem["field"] == "model.weights"
    assert (
        "do not fit resnet34: 96 missing, 0 unexpected and 0 differently shaped"
        in (problem["problem"])
    )
    assert "'layer1.2.conv1.weight'" in problem["problem"]
    encoder = http.post(
        "/jobs", json={**detector, "model": {**detector["model"], "backbone": "resnet50"}}
    )
    assert encoder.status_code == 422 and "encoder resnet50" in encoder.text

    # one byte changed: refused by verify, at submit and over HTTP
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    refused = fovea(home, "verify", "resnet18/test-v1")
    assert refused.returncode == 1 and "were changed after import" in refused.stdout
    tampered = http.post("/jobs", json=spec("resnet18/test-v1"))
    assert tampered.status_code == 422 and "changed after import" in tampered.text
    again = http.get("/weights/resnet18/test-v1", params={"verify": "true"})
    assert again.status_code == 422 and again.json()["error"] == "invalid_weights"

    removed = fovea(home, "remove", "resnet18/test-v1")
    assert removed.returncode == 0 and not blob.exists()
    assert http.get("/weights").json()["weights"] == []
    gone = http.post("/jobs", json=spec("resnet18/test-v1"))
    assert gone.status_code == 422 and "no weights named 'resnet18/test-v1'" in gone.text


def test_import_refuses_a_wrong_hash_prefix_and_a_wrong_arch(home: Path, tmp_path: Path):
    file = torchvision_style(tmp_path, "resnet18")
    renamed = file.rename(tmp_path / "resnet18-00000000.pth")
    out = fovea(home, "import", str(renamed), "--arch", "resnet18")
    assert out.returncode == 1 and "the name promises SHA-256 00000000" in out.stdout
    plain = renamed.rename(tmp_path / "mine.pth")
    out = fovea(home, "import", str(plain), "--arch", "resnet34")
    assert out.returncode == 1
    assert "not a resnet34 state dict: 96 missing" in out.stdout.replace("\n", "")


def test_pull_refuses_clearly_when_offline(home: Path, tmp_path: Path):
    dead = "http://127.0.0.1:9"  # nothing listens: every download fails at once
    out = fovea(home, "pull", "resnet18/imagenet1k-v1", TORCH_HOME=str(tmp_path),
                https_proxy=dead, HTTPS_PROXY=dead, http_proxy=dead)  # fmt: skip
    text = " ".join(out.stdout.split())
    assert out.returncode == 1
    assert (
        "this machine looks offline" in text
        and "fovea weights import resnet18-f37072fd.pth" in text
    )
    unknown = fovea(home, "pull", "resnet18/imagenet9k")
    assert unknown.returncode == 1 and "unknown torchvision weights" in unknown.stdout
