"""The prediction log and drift reports on real SQLite and PostgreSQL: windows, verdict
change events, the scheduled monitor, retention."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from fovea.platform.model_events import list_model_events
from fovea.platform.monitoring.service import (
    Monitor,
    NoReference,
    ReferenceCache,
    Retention,
    apply_retention,
    compute_report,
    log_predictions,
    versions_due,
)
from fovea.platform.monitoring.statistics import DriftSettings
from fovea.platform.store import (
    Prediction,
    make_engine,
    session_factory,
    transaction,
)
from tests.support.monitoring import reference, replica_results


@pytest.fixture
def sessions(db_url: str):  # type: ignore[no-untyped-def]
    from fovea.platform.store import upgrade

    engine = make_engine(db_url)
    upgrade(engine)
    yield session_factory(engine)
    engine.dispose()


def log(sessions, results: list[dict], *, version: int = 1) -> list[int]:  # type: ignore[no-untyped-def]
    with transaction(sessions) as session:
        return log_predictions(session=session, model_name="pets", version=version,
                               request_id="r", source="api", results=results)  # fmt: skip


def report(sessions, *, trigger: str = "request", window: int | None = 150, **over):  # type: ignore[no-untyped-def]
    settings = DriftSettings(**over)
    with transaction(sessions) as session:
        made = compute_report(session=session, model_name="pets", version=1,
                              reference=reference(), settings=settings, trigger=trigger,
                              window=window)  # fmt: skip
        return made.id, made.verdict, made.window_verdict, list(made.reasons), made.n_live


def test_clean_then_dark_windows_change_the_verdict_once(sessions) -> None:  # type: ignore[no-untyped-def]
    ids = log(sessions, replica_results(150, seed=1))
    assert len(ids) == 150  # the unreadable image leaves no row
    first = report(sessions)
    assert first[1] == "ok" and first[4] == 150
    log(sessions, replica_results(150, seed=2, brightness=0.2))
    second = report(sessions)
    assert second[1] == "drift" and any("statistics/brightness" in r for r in second[3])
    log(sessions, replica_results(150, seed=3, brightness=0.2))
    assert report(sessions)[1] == "drift"  # still drifting: no new event
    with transaction(sessions) as session:
        events = list_model_events(session=session, model_name="pets", kind="drift_verdict")
        assert [(e.value, e.data["previous"]) for e in events] == [("ok", None), ("drift", "ok")]
        assert events[1].data["report_id"] == second[0] and events[1].model_version == "1"


def test_small_windows_and_missing_references_say_so(sessions) -> None:  # type: ignore[no-untyped-def]
    log(sessions, replica_results(40, seed=1))
    _, verdict, _, reasons, n_live = report(sessions)
    assert verdict == "insufficient" and n_live == 40 and "below 100" in reasons[0]
    with transaction(sessions) as session:
        assert list_model_events(session=session, model_name="pets") == []  # no verdict, no event
    cache = ReferenceCache(lambda name, version: None)
    with pytest.raises(NoReference, match="'pets' version 3 has no drift reference"):
        cache.get("pets", 3)


def test_alarm_waits_for_k_of_m_windows(sessions) -> None:  # type: ignore[no-untyped-def]
    log(sessions, replica_results(150, seed=2, brightness=0.2))
    first = report(sessions, alarm_k=2, alarm_m=3)
    assert (first[1], first[2]) == ("warning", "drift")  # one drifted window: a warning
    log(sessions, replica_results(150, seed=3, brightness=0.2))
    assert report(sessions, alarm_k=2, alarm_m=3)[1] == "drift"


def test_the_monitor_reports_each_new_window_once(sessions) -> None:  # type: ignore[no-untyped-def]
    monitor = Monitor(
        sessions=sessions,
        references=ReferenceCache(lambda name, version: reference()),
        settings=DriftSettings(),
        retention=Retention(days=0, rows=0),
        interval_s=0,
    )
    log(sessions, replica_results(60, seed=1))
    assert monitor.tick() == []  # 60 new rows: below the minimum window
    log(sessions, replica_results(60, seed=2))
    [made] = monitor.tick()
    assert (made.trigger, made.n_live, made.verdict) == ("schedule", 120, "ok")
    assert monitor.tick() == []  # nothing new since
    log(sessions, replica_results(110, seed=3, brightness=0.2))
    with transaction(sessions) as session:
        assert versions_due(session=session, min_window=100) == [("pets", 1)]
    [second] = monitor.tick()
    assert second.n_live == 110 and second.verdict == "drift"
    assert second.first_prediction_id == made.last_prediction_id + 1


def test_retention_by_age_and_by_rows(sessions) -> None:  # type: ignore[no-untyped-def]
    ids = log(sessions, replica_results(30, seed=1))
    with transaction(sessions) as session:
        old = session.get(Prediction, ids[0])
        old.at = old.at - timedelta(days=10)
    with transaction(sessions) as session:
        assert apply_retention(session=session, retention=Retention(days=7, rows=0)) == 1
    with transaction(sessions) as session:
        assert apply_retention(session=session, retention=Retention(days=0, rows=20)) == 9
        kept = session.scalars(select(Prediction.id).order_by(Prediction.id)).all()
        assert kept == ids[-20:]
        assert session.scalar(select(func.count()).select_from(Prediction)) == 20
