"""A real API (uvicorn, SQLite job store, SQLite MLflow store) with one job whose MLflow run
holds curves, a confusion matrix and a table, written by the same RunLogger a worker uses.
No Ray: jobs submitted here stay queued (the slow tests use the whole stack)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fovea.config import Settings
from fovea.platform.api.app import create_app
from tests.support import LiveServer, free_port

TOKEN = "dashboard-token"
APP = Path(__file__).resolve().parents[2] / "fovea" / "dashboard" / "app.py"


def _seed_run(settings: Settings, job_id: str) -> str:
    """Log a run as workers.runtime does and point the job at it; returns the run id."""
    from fovea.platform.jobs import service as svc
    from fovea.platform.store import JobState, make_engine, session_factory
    from fovea.tasks.plots import confusion_matrix_png, training_curves_png
    from fovea.tracking.logger import RunLogger

    history = [
        {"epoch": 1, "train/loss": 1.2, "val/loss": 1.0, "val/top1": 0.55},
        {"epoch": 2, "train/loss": 0.7, "val/loss": 0.6, "val/top1": 0.81},
        {"epoch": 3, "train/loss": 0.4, "val/loss": 0.45, "val/top1": 0.9},
    ]
    with RunLogger(
        tracking_uri=settings.tracking_uri,
        experiment=settings.mlflow_experiment,
        artifact_root=settings.artifact_root,
    ) as logger:
        for row in history:
            logger.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        logger.log_figure_bytes("training_curves.png", training_curves_png(history))
        names = ["cat", "dog"]
        logger.log_figure_bytes(
            "confusion_matrix.png", confusion_matrix_png([[9, 1], [2, 8]], names)
        )
        logger.log_json("confusion_matrix.json", {"class_names": names, "matrix": [[9, 1], [2, 8]]})
        run_id = logger.run_id
    engine = make_engine(settings.db_url)
    with session_factory(engine)() as session, session.begin():
        job = svc.get_job(session=session, job_id=job_id)
        job.mlflow_run_id = run_id
        svc.transition(session=session, job=job, to=JobState.RUNNING, message="seeded")
        svc.transition(
            session=session,
            job=job,
            to=JobState.SUCCEEDED,
            message="seeded",
            metrics={"top1": 0.9, "loss": 0.45},
        )
    engine.dispose()
    return run_id


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
        spec = {
            "name": "seeded-run",
            "task": "classification",
            "dataset": {"uri": "builtin://digits", "format": "imagefolder"},
            "model": {"arch": "smallcnn"},
            "train": {"epochs": 3},
        }
        r = http.post("/jobs", json=spec)
        assert r.status_code == 201, r.text
        live.job_id = r.json()["id"]  # type: ignore[attr-defined]
        live.run_id = _seed_run(settings, live.job_id)  # type: ignore[attr-defined]
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
