"""A real API (uvicorn, SQLite job store, SQLite MLflow store) with one job whose MLflow run
holds curves, a confusion matrix and a table, written by the same RunLogger a worker uses.
No Ray: jobs submitted here stay queued (the slow tests use the whole stack)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fovea.config import Settings
from fovea.platform.api.app import create_app
from tests.support.dashboard import seed_run
from tests.support.servers import LiveServer, free_port
from tests.support.specs import digits_spec

TOKEN = "dashboard-token"


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("dashboard-home")
    data_root = tmp_path_factory.mktemp("dashboard-data")
    settings = Settings(home=home, data_roots=[data_root], api_token=TOKEN)
    with LiveServer(create_app(settings), free_port()) as live:
        import httpx

        http = httpx.Client(
            base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        )
        spec = digits_spec(
            name="seeded-run", dataset={"format": "imagefolder"}, train={"epochs": 3}
        )
        r = http.post("/jobs", json=spec)
        assert r.status_code == 201, r.text
        live.job_id = r.json()["id"]  # type: ignore[attr-defined]
        live.run_id = seed_run(settings, live.job_id)  # type: ignore[attr-defined]
        live.http = http  # type: ignore[attr-defined]
        yield live
        http.close()


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, api: LiveServer, tmp_path: Path):
    """The dashboard's environment pointing at `api` with the right token."""
    monkeypatch.setenv("FOVEA_DASHBOARD_API_URL", api.url)
    monkeypatch.setenv("FOVEA_API_TOKEN", TOKEN)
    monkeypatch.setenv("FOVEA_HOME", str(tmp_path / "client-home"))
    return api
