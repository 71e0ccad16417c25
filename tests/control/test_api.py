"""The HTTP API over real HTTP (uvicorn) against a real SQLite job store: every error case."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx
import pytest

from fovea.config import Settings
from fovea.platform.api.app import create_app
from tests.support.servers import LiveServer, free_port
from tests.support.specs import digits_spec

TOKEN = "test-token-123"


def body(**overrides):  # type: ignore[no-untyped-def]
    """A digits job; each override replaces its whole section (train={} has no epochs)."""
    spec = digits_spec(
        name="flowers", dataset={"format": "imagefolder"}, model={"arch": "resnet18"},
        train={"epochs": 3},
    )  # fmt: skip
    return {**spec, **overrides}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    data_root = tmp_path_factory.mktemp("data")
    for name in ("a", "b"):
        (data_root / "ds" / name).mkdir(parents=True)
        (data_root / "ds" / name / "x.png").write_bytes(b"an image by name: the scan lists")
    settings = Settings(home=home, data_roots=[data_root], api_token=TOKEN)
    with LiveServer(create_app(settings), free_port()) as live:
        live.data_root = data_root  # type: ignore[attr-defined]
        yield live


@pytest.fixture
def client(server: LiveServer):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    # the first /models call creates the MLflow store's tables: seconds on a busy machine
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as c:
        yield c


def test_health_needs_no_token(server: LiveServer) -> None:
    r = httpx.get(f"{server.url}/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/jobs"),
        ("POST", "/jobs"),
        ("GET", "/jobs/x"),
        ("POST", "/jobs/x/cancel"),
        ("GET", "/jobs/x/queue"),
        ("GET", "/catalog"),
        ("GET", "/models"),
        ("GET", "/models/x"),
        ("GET", "/models/x/predictions"),
        ("GET", "/models/x/predictions/1/image"),
    ],
)
@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic abc", f"bearer{TOKEN}"])
def test_every_route_needs_the_token(server: LiveServer, method: str, path: str, auth) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = httpx.request(method, f"{server.url}{path}", headers=headers, json=body())
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized" and "token" in r.json()["message"]


def test_submit_get_list_cancel(client: httpx.Client) -> None:
    r = client.post("/jobs", json=body(priority=3, project="vision"))
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "queued" and len(job["id"]) >= 8
    assert job["spec"]["train"]["batch_size"] == 32  # defaults filled in
    assert job["spec"]["register_as"] == "flowers"
    got = client.get(f"/jobs/{job['id']}").json()
    assert got["id"] == job["id"] and got["events"][0]["kind"] == "submitted"
    listed = client.get("/jobs", params={"project": "vision", "state": "queued"}).json()
    assert [j["id"] for j in listed["items"]] == [job["id"]] and listed["total"] == 1
    r = client.post(f"/jobs/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["state"] == "cancelled"
    r = client.post(f"/jobs/{job['id']}/cancel")
    assert r.status_code == 409 and "already ended" in r.json()["message"]


def test_list_is_newest_first_and_paginated(client: httpx.Client) -> None:
    ids = [
        client.post("/jobs", json=body(name=f"page{i}", project="pages")).json()["id"]
        for i in range(3)
    ]
    first = client.get("/jobs", params={"project": "pages", "limit": 2}).json()
    second = client.get("/jobs", params={"project": "pages", "limit": 2, "offset": 2}).json()
    assert [j["id"] for j in first["items"]] == ids[::-1][:2]
    assert [j["id"] for j in second["items"]] == ids[:1]
    assert first["total"] == 3


def test_idempotency_key(client: httpx.Client) -> None:
    h = {"Idempotency-Key": "abc-1"}
    a = client.post("/jobs", json=body(name="idem"), headers=h)
    b = client.post("/jobs", json=body(name="idem"), headers=h)
    assert a.status_code == 201 and b.status_code == 200 and a.json()["id"] == b.json()["id"]
    # defaults written out explicitly are the same spec
    c = client.post("/jobs", json=body(name="idem", priority=0), headers=h)
    assert c.status_code == 200 and c.json()["id"] == a.json()["id"]
    d = client.post("/jobs", json=body(name="idem2"), headers=h)
    assert d.status_code == 422 and "Idempotency-Key" in d.json()["message"]


@pytest.mark.parametrize(
    "payload,field,words",
    [
        (body(train={"epochs": 0}), "train.epochs", "greater than or equal to 1"),
        (body(train={}), "train.epochs", "Field required"),
        (body(task="painting"), "task", "valid tasks: classification"),
        (body(name="bad name!"), "name", "pattern"),
        (body(train={"epochs": 1, "optimizer": "adam"}), "train.optimizer", "adamw"),
        (body(train={"epochs": 1, "lr": -1}), "train.lr", "greater than 0"),
        (body(train={"epochs": 1, "bogus": 1}), "train.bogus", "Extra inputs"),
        (
            body(dataset={"uri": "builtin://cifar"}),
            "dataset.uri",
            "classification: builtin://digits",
        ),
        (body(dataset={"uri": "/etc"}), "dataset.uri", "outside the configured data roots"),
        (body(dataset={"uri": "../../../../etc"}), "dataset.uri", "outside the configured"),
        (
            body(dataset={"uri": "builtin://digits", "val_split": 1.5}),
            "dataset.val_split",
            "less than 1",
        ),
        (body(resources={"cpus": 0}), "resources.cpus", "greater than 0"),
        (body(model={"arch": "vit_h"}), "model.arch", "valid: smallcnn"),
        (body(priority="high"), "priority", "valid integer"),
        (body(model={"arch": "resnet18", "weights": "/etc/passwd"}), "model.weights", "outside"),
    ],
)
def test_invalid_specs_name_the_field(
    client: httpx.Client, payload, field: str, words: str
) -> None:
    r = client.post("/jobs", json=payload)
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "invalid_request"
    assert any(d["field"] == field for d in err["detail"]), err
    assert words in err["message"], err["message"]
    assert "Traceback" not in r.text


def test_dataset_path_inside_root_is_accepted(client: httpx.Client, server: LiveServer) -> None:
    r = client.post("/jobs", json=body(dataset={"uri": str(server.data_root / "ds")}))
    assert r.status_code == 201, r.text
    assert r.json()["spec"]["dataset"]["uri"] == str((server.data_root / "ds").resolve())
    r = client.post("/jobs", json=body(dataset={"uri": str(server.data_root / "nope")}))
    assert r.status_code == 422 and "does not exist" in r.json()["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"", b"[1, 2]", b'"text"'])
def test_malformed_bodies(client: httpx.Client, raw: bytes) -> None:
    r = client.post("/jobs", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text
    assert r.json()["error"] == "invalid_request"


def test_unknown_job_and_bad_filters(client: httpx.Client) -> None:
    r = client.get("/jobs/doesnotexist")
    assert r.status_code == 404 and "doesnotexist" in r.json()["message"]
    assert client.post("/jobs/doesnotexist/cancel").status_code == 404
    r = client.get("/jobs", params={"state": "sleeping"})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "state"
    r = client.get("/jobs", params={"limit": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == "limit"
    assert client.get("/nowhere").status_code == 404


def test_unknown_model_is_404(client: httpx.Client) -> None:
    r = client.get("/models/never-registered")
    assert r.status_code == 404 and "never-registered" in r.json()["message"]
    r = client.get("/models")
    assert r.status_code == 200 and isinstance(r.json()["items"], list)


def test_generated_token_file_is_private(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "h", api_token=None)
    token = settings.resolve_token(create=True)
    mode = stat.S_IMODE(os.stat(settings.token_file).st_mode)
    assert token and mode == 0o600
    assert Settings(home=tmp_path / "h").resolve_token(create=False) == token
