"""The dashboard's app file, and a finished job whose MLflow run holds what a worker logs."""

from __future__ import annotations

from pathlib import Path

from fovea.config import Settings

APP = Path(__file__).resolve().parents[2] / "fovea" / "dashboard" / "app.py"


def seed_run(settings: Settings, job_id: str) -> str:
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
