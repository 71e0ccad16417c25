"""Batch scoring: every image under a folder through a model version's replica on Ray.

For the common case where images arrive as files. The replica reads the files itself
(data roots are shared storage for every Ray node, as for training), predicts in chunks,
and the rows go to the prediction log with source "batch", exactly as live predictions
do. A thread of the API process drives it and records progress in `score_runs`; a run
whose driver stopped (the API restarted) shows as failed once it has made no progress
for STALE_AFTER.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from fovea.platform.monitoring.service import log_predictions
from fovea.platform.store import ScoreRun, transaction, utcnow

if TYPE_CHECKING:
    from fovea.tracking.versions import ResolvedVersion
    from fovea.workers.serving import ServingPool

log = logging.getLogger(__name__)

CHUNK = 32  # images per replica call
STALE_AFTER = timedelta(minutes=10)


def start_scoring(
    *,
    sessions: sessionmaker[Session],
    pool: ServingPool,
    resolved: ResolvedVersion,
    folder: Path,
    roots: list[Path],
) -> dict[str, Any]:
    """List the folder's images (each must resolve under the roots), record the run, and
    score it on a background thread; returns the run."""
    from fovea.tasks.data.files import RootGuard, image_files, relative_key

    guard = RootGuard(roots)
    files = [guard(path) for path in image_files(folder)]
    run = ScoreRun(
        id=uuid.uuid4().hex[:16],
        model_name=resolved.name,
        model_version=str(resolved.version),
        folder=str(folder),
        state="running" if files else "succeeded",
        total=len(files),
        done=0,
        failed_images=0,
        created_at=utcnow(),
        updated_at=utcnow(),
        finished_at=None if files else utcnow(),
    )
    with transaction(sessions) as session:
        session.add(run)
    names = [relative_key(path, folder) for path in files]
    if files:
        thread = threading.Thread(
            target=_score,
            args=(sessions, pool, resolved, run.id, files, names),
            name=f"fovea-score-{run.id}",
            daemon=True,
        )
        thread.start()
    return _view(run)


def _score(
    sessions: sessionmaker[Session],
    pool: ServingPool,
    resolved: ResolvedVersion,
    run_id: str,
    files: list[Path],
    names: list[str],
) -> None:
    from fovea.workers.serving import ImageInput

    try:
        for start in range(0, len(files), CHUNK):
            chunk = [
                ImageInput(name, path=str(path))
                for name, path in zip(
                    names[start : start + CHUNK], files[start : start + CHUNK], strict=True
                )
            ]
            results = pool.predict(resolved.name, resolved.version, chunk)
            with transaction(sessions) as session:
                log_predictions(
                    session=session,
                    model_name=resolved.name,
                    version=resolved.version,
                    request_id=run_id,
                    source="batch",
                    results=results,
                )
                run = session.get(ScoreRun, run_id)
                assert run is not None
                run.done += len(chunk)
                run.failed_images += sum(not r["ok"] for r in results)
                run.updated_at = utcnow()
        _finish(sessions, run_id, state="succeeded")
    except Exception as exc:
        log.exception("scoring run %s failed", run_id)
        _finish(sessions, run_id, state="failed", error=f"{type(exc).__name__}: {exc}")


def _finish(
    sessions: sessionmaker[Session], run_id: str, *, state: str, error: str | None = None
) -> None:
    with transaction(sessions) as session:
        run = session.get(ScoreRun, run_id)
        if run is not None:
            run.state, run.error = state, error
            run.finished_at = run.updated_at = utcnow()


def get_run(*, session: Session, model_name: str, run_id: str) -> dict[str, Any] | None:
    run = session.get(ScoreRun, run_id)
    if run is None or run.model_name != model_name:
        return None
    return _view(run)


def _view(run: ScoreRun) -> dict[str, Any]:
    state, error = run.state, run.error
    if state == "running" and utcnow() - run.updated_at > STALE_AFTER:
        state, error = "failed", f"no progress since {run.updated_at.isoformat()}: its API stopped"
    return {
        "id": run.id,
        "model": run.model_name,
        "version": int(run.model_version),
        "folder": run.folder,
        "state": state,
        "total": run.total,
        "done": run.done,
        "failed_images": run.failed_images,
        "error": error,
        "created_at": run.created_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }
