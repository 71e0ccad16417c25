"""GET /jobs/{id}/metrics and /jobs/{id}/artifacts over real HTTP, on a real MLflow run."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.servers import LiveServer


def test_metric_history_by_step(api: LiveServer) -> None:
    body = api.http.get(f"/jobs/{api.job_id}/metrics").json()
    assert body["run_id"] == api.run_id
    assert [p["step"] for p in body["metrics"]["val/top1"]] == [1, 2, 3]
    assert [p["value"] for p in body["metrics"]["train/loss"]] == [1.2, 0.7, 0.4]
    only = api.http.get(f"/jobs/{api.job_id}/metrics", params={"key": "val/loss"}).json()
    assert list(only["metrics"]) == ["val/loss"]


def test_artifacts_listed_and_served(api: LiveServer) -> None:
    listing = api.http.get(f"/jobs/{api.job_id}/artifacts").json()
    names = [a["name"] for a in listing["items"]]
    assert names == ["training_curves.png", "confusion_matrix.png", "confusion_matrix.json"]
    png = api.http.get(f"/jobs/{api.job_id}/artifacts/confusion_matrix.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG")
    table = api.http.get(f"/jobs/{api.job_id}/artifacts/confusion_matrix.json").json()
    assert table["matrix"] == [[9, 1], [2, 8]]


@pytest.mark.parametrize(
    "name",
    [
        "card.json",  # a real file of some runs, not on the list
        "..%2Fmlflow.db",
        "plots%2Fconfusion_matrix.png",  # a path, even of an allowed file
        "%2Fetc%2Fpasswd",
        "model",
    ],
)
def test_only_allow_listed_names(api: LiveServer, name: str) -> None:
    r = api.http.get(f"/jobs/{api.job_id}/artifacts/{name}")
    assert r.status_code == 404, r.text
    assert not r.content.startswith(b"\x89PNG")


def test_allowed_name_the_run_lacks_is_404(api: LiveServer) -> None:
    r = api.http.get(f"/jobs/{api.job_id}/artifacts/pr_curves.png")
    assert r.status_code == 404 and "no artifact" in r.json()["message"]


def test_unknown_job_and_token(api: LiveServer) -> None:
    assert api.http.get("/jobs/nope/metrics").status_code == 404
    r = httpx.get(f"{api.url}/jobs/{api.job_id}/artifacts", headers={"Authorization": "Bearer x"})
    assert r.status_code == 401


def test_queued_job_has_no_run_yet(api: LiveServer) -> None:
    spec = json.loads(json.dumps(api.http.get(f"/jobs/{api.job_id}").json()["spec"]))
    spec["name"] = "still-queued"
    job = api.http.post("/jobs", json=spec).json()
    assert api.http.get(f"/jobs/{job['id']}/metrics").json() == {
        "job_id": job["id"],
        "run_id": None,
        "metrics": {},
    }
    assert api.http.get(f"/jobs/{job['id']}/artifacts").json()["items"] == []
