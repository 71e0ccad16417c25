"""Monitoring services: the prediction log, drift reports over windows, verdict events.

- `log_predictions` writes one row per image a served model saw (the replica computed it).
- `compute_report` tests a window of a model version's log against the version's frozen
  reference (`statistics`), stores the report, and writes a "drift_verdict"
  model event when the verdict changes.
- `Monitor` runs reports on a schedule: for every version with at least `min_window` new
  predictions since its last scheduled report (non-overlapping windows), and enforces the
  log's retention.
Torch-free: reports run in the API and scheduler processes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from fovea.config import Settings
from fovea.platform.errors import NoReference
from fovea.platform.model_events import DRIFT_VERDICT, record_model_event
from fovea.platform.monitoring.statistics import DriftSettings, Samples, alarm, compare
from fovea.platform.store import DriftReport, Prediction, transaction, utcnow
from fovea.tasks.reference import STATISTICS, Reference

log = logging.getLogger(__name__)

VERDICT_EVENT = DRIFT_VERDICT


@dataclass(frozen=True)
class Retention:
    days: float  # rows older than this are deleted (0: keep)
    rows: int  # per model, the newest this many are kept (0: keep)


def log_predictions(
    *,
    session: Session,
    model_name: str,
    version: int,
    request_id: str,
    source: str,
    results: Sequence[dict[str, Any]],
    image_uris: Sequence[str | None] | None = None,
) -> list[int]:
    """A row per successfully predicted image of a replica's results; their ids."""
    rows = []
    for position, result in enumerate(results):
        if not result.get("ok"):
            continue
        entry = result["log"]
        rows.append(
            Prediction(
                at=utcnow(),
                model_name=model_name,
                model_version=str(version),
                request_id=request_id,
                source=source,
                file_name=str(result["file"])[:500],
                sha256=entry["sha256"],
                **{name: float(entry["stats"][name]) for name in STATISTICS},
                summary=entry["summary"],
                embedding=entry["embedding"],
                embedding_dim=int(entry["embedding_dim"]),
                image_uri=image_uris[position] if image_uris else None,
            )
        )
    session.add_all(rows)
    session.flush()
    return [row.id for row in rows]


def samples_of(rows: Sequence[Prediction]) -> Samples:
    dims = {row.embedding_dim for row in rows}
    if len(dims) > 1:
        raise ValueError(f"predictions with embeddings of different sizes {sorted(dims)}")
    embeddings = np.stack(
        [np.frombuffer(row.embedding, dtype=np.float16).astype(np.float32) for row in rows]
    ) if rows else np.zeros((0, 0), np.float32)  # fmt: skip
    stats = {name: np.array([getattr(row, name) for row in rows]) for name in STATISTICS}
    return Samples(stats, embeddings, [row.summary for row in rows])


def reference_samples(reference: Reference) -> Samples:
    return Samples(reference.stats, reference.embeddings, reference.summary)


def compute_report(
    *,
    session: Session,
    model_name: str,
    version: int,
    reference: Reference,
    settings: DriftSettings,
    trigger: str,
    window: int | None = None,
) -> DriftReport:
    """A report on the newest `window` predictions of the version (trigger "request"), or
    on those since its last scheduled report (trigger "schedule")."""
    started = time.perf_counter()
    rows = _window_rows(session, model_name, version, trigger=trigger, window=window)
    rows = [row for row in rows if row.embedding_dim == reference.embeddings.shape[1]]
    live = samples_of(rows)
    result = compare(
        reference_samples(reference),
        live,
        task=str(reference.meta["task"]),
        class_names=list(reference.meta["class_names"]),
        settings=settings,
        seed=rows[-1].id if rows else 0,
    )
    previous = _previous_reports(session, model_name, version, limit=settings.alarm_m)
    verdict = alarm([result.verdict] + [r.window_verdict for r in previous], settings)
    report = DriftReport(
        created_at=utcnow(),
        model_name=model_name,
        model_version=str(version),
        trigger=trigger,
        first_prediction_id=rows[0].id if rows else None,
        last_prediction_id=rows[-1].id if rows else None,
        n_live=result.n_live,
        n_reference=result.n_reference,
        window_verdict=result.verdict,
        verdict=verdict,
        reasons=result.reasons,
        result={**result.to_json(), "settings": settings.__dict__},
        seconds=time.perf_counter() - started,
    )
    before = session.scalar(
        select(DriftReport.verdict)
        .where(
            DriftReport.model_name == model_name,
            DriftReport.model_version == str(version),
            DriftReport.verdict != "insufficient",
        )
        .order_by(DriftReport.id.desc())
        .limit(1)
    )
    session.add(report)
    session.flush()
    if report.verdict not in ("insufficient", before):
        _record_verdict_change(session, report, before)
    return report


def _record_verdict_change(session: Session, report: DriftReport, before: str | None) -> None:
    record_model_event(
        session=session,
        model_name=report.model_name,
        model_version=report.model_version,
        kind=VERDICT_EVENT,
        value=report.verdict,
        message=f"drift verdict {before or 'none'} -> {report.verdict}: "
        + "; ".join(report.reasons[:3]),
        data={"previous": before, "report_id": report.id, "reasons": report.reasons},
    )


def _window_rows(
    session: Session, model_name: str, version: int, *, trigger: str, window: int | None
) -> list[Prediction]:
    stmt = select(Prediction).where(
        Prediction.model_name == model_name, Prediction.model_version == str(version)
    )
    if trigger == "schedule":
        last = session.scalar(
            select(func.max(DriftReport.last_prediction_id)).where(
                DriftReport.model_name == model_name,
                DriftReport.model_version == str(version),
                DriftReport.trigger == "schedule",
            )
        )
        if last is not None:
            stmt = stmt.where(Prediction.id > last)
    if window is not None:
        newest = list(session.scalars(stmt.order_by(Prediction.id.desc()).limit(window)))
        return newest[::-1]
    return list(session.scalars(stmt.order_by(Prediction.id)))


def _previous_reports(
    session: Session, model_name: str, version: int, *, limit: int
) -> list[DriftReport]:
    """The newest reports of this version before the one being made, newest first."""
    return list(
        session.scalars(
            select(DriftReport)
            .where(
                DriftReport.model_name == model_name,
                DriftReport.model_version == str(version),
            )
            .order_by(DriftReport.id.desc())
            .limit(limit)
        )
    )


def list_reports(*, session: Session, model_name: str, limit: int = 50) -> list[DriftReport]:
    """A model's reports, newest first (every version)."""
    return list(
        session.scalars(
            select(DriftReport)
            .where(DriftReport.model_name == model_name)
            .order_by(DriftReport.id.desc())
            .limit(limit)
        )
    )


def get_report(*, session: Session, model_name: str, report_id: int) -> DriftReport | None:
    report = session.get(DriftReport, report_id)
    return report if report is not None and report.model_name == model_name else None


def recent_predictions(
    *,
    session: Session,
    model_name: str,
    limit: int = 100,
    before_id: int | None = None,
    from_id: int | None = None,
    sampled: bool = False,
) -> list[Prediction]:
    """The newest rows, below `before_id` and from `from_id` on (a drift report's window is
    from its first_prediction_id to before last_prediction_id + 1); `sampled`: only rows
    whose image was kept."""
    stmt = select(Prediction).where(Prediction.model_name == model_name)
    if before_id is not None:
        stmt = stmt.where(Prediction.id < before_id)
    if from_id is not None:
        stmt = stmt.where(Prediction.id >= from_id)
    if sampled:
        stmt = stmt.where(Prediction.image_uri.is_not(None))
    return list(session.scalars(stmt.order_by(Prediction.id.desc()).limit(limit)))


def get_prediction(*, session: Session, model_name: str, prediction_id: int) -> Prediction | None:
    row = session.get(Prediction, prediction_id)
    return row if row is not None and row.model_name == model_name else None


def apply_retention(*, session: Session, retention: Retention) -> int:
    """Delete log rows older than the retention days, and beyond the newest `rows` per
    model; returns how many went."""
    deleted = 0
    if retention.days > 0:
        cutoff = utcnow() - timedelta(days=retention.days)
        deleted += session.execute(delete(Prediction).where(Prediction.at < cutoff)).rowcount or 0
    if retention.rows > 0:
        for model_name in session.scalars(select(Prediction.model_name).distinct()):
            keep_from = session.scalar(
                select(Prediction.id)
                .where(Prediction.model_name == model_name)
                .order_by(Prediction.id.desc())
                .offset(retention.rows - 1)
                .limit(1)
            )
            if keep_from is not None:
                deleted += (
                    session.execute(
                        delete(Prediction).where(
                            Prediction.model_name == model_name, Prediction.id < keep_from
                        )
                    ).rowcount
                    or 0
                )
    return deleted


def versions_due(*, session: Session, min_window: int) -> list[tuple[str, int]]:
    """(model, version) pairs with >= min_window predictions since their last scheduled
    report."""
    last = (
        select(
            DriftReport.model_name,
            DriftReport.model_version,
            func.max(DriftReport.last_prediction_id).label("last_id"),
        )
        .where(DriftReport.trigger == "schedule")
        .group_by(DriftReport.model_name, DriftReport.model_version)
        .subquery()
    )
    rows = session.execute(
        select(Prediction.model_name, Prediction.model_version, func.count())
        .outerjoin(
            last,
            (last.c.model_name == Prediction.model_name)
            & (last.c.model_version == Prediction.model_version),
        )
        .where((last.c.last_id.is_(None)) | (Prediction.id > last.c.last_id))
        .group_by(Prediction.model_name, Prediction.model_version)
    )
    return [(name, int(version)) for name, version, count in rows if count >= min_window]


class ReferenceCache:
    """References by (model, version), loaded once (they never change) through `load`."""

    def __init__(self, load: Callable[[str, int], Reference | None], *, size: int = 32) -> None:
        self.load = load
        self.size = size
        self._items: OrderedDict[tuple[str, int], Reference | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model_name: str, version: int) -> Reference:
        key = (model_name, version)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                found = self._items[key]
            else:
                found = self.load(model_name, version)
                self._items[key] = found
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        if found is None:
            raise NoReference(
                f"model {model_name!r} version {version} has no drift reference profile "
                "(it was trained before Fovea recorded them); retrain it to monitor drift"
            )
        return found


def drift_settings(settings: Settings) -> DriftSettings:
    return DriftSettings(
        alpha=settings.drift_alpha,
        min_window=settings.drift_min_window,
        max_window=settings.drift_max_window,
        permutations=settings.drift_permutations,
        alarm_k=settings.drift_alarm_k,
        alarm_m=settings.drift_alarm_m,
    )


def retention(settings: Settings) -> Retention:
    return Retention(
        days=settings.prediction_retention_days, rows=settings.prediction_retention_rows
    )


def reference_cache(tracking_uri: str) -> ReferenceCache:
    """References read from the MLflow run that trained each version."""
    from fovea.tracking.versions import download_reference, resolve_version

    def load(model_name: str, version: int) -> Reference | None:
        resolved = resolve_version(tracking_uri=tracking_uri, name=model_name, version=version)
        data = download_reference(tracking_uri=tracking_uri, run_id=resolved.run_id)
        return Reference.from_npz(data) if data is not None else None

    return ReferenceCache(load)


def monitor_for(settings: Settings, sessions: sessionmaker[Session]) -> Monitor:
    return Monitor(
        sessions=sessions,
        references=reference_cache(settings.tracking_uri),
        settings=drift_settings(settings),
        retention=retention(settings),
        interval_s=settings.drift_interval_s,
    )


class Monitor:
    """Scheduled drift reports and log retention, on a thread of the scheduler process."""

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        references: ReferenceCache,
        settings: DriftSettings,
        retention: Retention,
        interval_s: float,
    ) -> None:
        self.sessions = sessions
        self.references = references
        self.settings = settings
        self.retention = retention
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fovea-monitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        if self.interval_s <= 0:
            return  # reports on request only
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:
                log.exception("drift monitor tick failed; retrying next interval")

    def tick(self) -> list[DriftReport]:
        reports = []
        with transaction(self.sessions) as session:
            due = versions_due(session=session, min_window=self.settings.min_window)
        for model_name, version in due:
            try:
                reference = self.references.get(model_name, version)
            except NoReference as exc:
                log.warning("%s", exc)
                continue
            with transaction(self.sessions) as session:
                reports.append(
                    compute_report(
                        session=session,
                        model_name=model_name,
                        version=version,
                        reference=reference,
                        settings=self.settings,
                        trigger="schedule",
                    )
                )
        with transaction(self.sessions) as session:
            apply_retention(session=session, retention=self.retention)
        return reports
