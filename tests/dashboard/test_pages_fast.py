"""Each page under streamlit.testing.v1.AppTest against a real API (uvicorn, SQLite, MLflow
store; no Ray), and the dashboard's answer when the API is down or the token is wrong."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.support.dashboard import APP
from tests.support.servers import LiveServer, free_port
from tests.support.specs import digits_spec

TIMEOUT = 60


def page(path: str | None = None, **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if path:
        at.switch_page(path)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.error] + [i.value for i in at.info]
    parts += [str(m.value) for m in at.metric] + [m.label for m in at.metric]
    return "\n".join(str(p) for p in parts)


def test_jobs_page_lists_the_job(dashboard_env: LiveServer) -> None:
    at = page()
    assert not at.exception, at.exception
    assert at.title[0].value == "Jobs"
    table = at.dataframe[0].value
    assert dashboard_env.job_id in set(table["id"])
    row = table[table["id"] == dashboard_env.job_id].iloc[0]
    assert row["state"] == "succeeded" and row["progress"] == 1.0


def test_jobs_page_filters_by_state(dashboard_env: LiveServer) -> None:
    at = page()
    at.selectbox(key="jobs_state").select("failed").run()
    assert not at.exception
    assert "No jobs match" in texts(at)


def test_submit_shows_the_validation_error_next_to_the_field(dashboard_env: LiveServer) -> None:
    at = page()
    at.text_input(key="f_uri").input("/not/under/a/data/root").run()
    at.button(key="f_submit").click().run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("dataset.uri" in e or "data root" in e for e in errors), errors


def test_submit_queues_a_job(dashboard_env: LiveServer) -> None:
    before = dashboard_env.http.get("/jobs").json()["total"]
    at = page()
    at.text_input(key="f_name").input("from-apptest").run()
    at.button(key="f_submit").click().run()
    assert not at.exception, at.exception
    assert any("Submitted job" in s.value for s in at.success)
    jobs = dashboard_env.http.get("/jobs").json()
    assert jobs["total"] == before + 1 and jobs["items"][0]["name"] == "from-apptest"


def test_the_form_follows_the_catalog_of_the_api(dashboard_env: LiveServer) -> None:
    at = page()
    at.selectbox(key="f_task").select("detection").run()
    assert not at.exception, at.exception
    assert at.text_input(key="f_uri").value == "builtin://shapes"  # digits is not for detection
    assert at.selectbox(key="f_arch").options == ["yolo_n", "yolo_s", "yolo_m"]
    assert at.selectbox(key="f_backbone").value == "tiny"  # yolo_n's default
    at.selectbox(key="f_backbone").select("tiny").run()
    at.text_input(key="f_name").input("detect-from-form").run()
    at.button(key="f_submit").click().run()
    assert not at.exception, at.exception
    assert any("Submitted job" in s.value for s in at.success), [e.value for e in at.error]
    newest = dashboard_env.http.get("/jobs").json()["items"][0]
    spec = dashboard_env.http.get(f"/jobs/{newest['id']}").json()["spec"]
    assert spec["task"] == "detection" and spec["model"]["backbone"] == "tiny"
    assert spec["dataset"]["uri"].startswith("builtin://shapes")


def test_a_queued_job_says_why_it_waits(dashboard_env: LiveServer) -> None:
    spec = digits_spec(name="waits", priority=-3)
    first = dashboard_env.http.post("/jobs", json={**spec, "name": "goes-first", "priority": 9})
    job = dashboard_env.http.post("/jobs", json=spec).json()
    at = page()
    at.selectbox(key="jobs_pick").select(job["id"]).run()
    assert not at.exception, at.exception
    shown = texts(at)
    queue = dashboard_env.http.get(f"/jobs/{job['id']}/queue").json()
    assert queue["position"] >= 2
    assert f"number {queue['position']} in line of {queue['queued']} queued jobs" in shown
    assert "go first (higher priority" in shown
    ahead = at.dataframe[-1].value
    assert list(ahead.columns) == ["id", "name", "priority", "project", "age"]
    assert ahead.iloc[0]["id"] == first.json()["id"]  # priority 9 goes first


def test_run_page_shows_state_curves_pictures(dashboard_env: LiveServer) -> None:
    at = page("views/run.py", job=dashboard_env.job_id)
    assert not at.exception, at.exception
    shown = texts(at)
    assert "State: **succeeded**" in shown
    assert len(at.get("vega_lite_chart")) >= 2  # loss and metrics
    assert len(at.get("image")) >= 2  # training curves and the confusion matrix
    matrices = [d.value for d in at.dataframe if list(d.value.columns) == ["cat", "dog"]]
    assert matrices and matrices[0].values.tolist() == [[9, 1], [2, 8]]


def test_models_page_without_models(dashboard_env: LiveServer) -> None:
    at = page("views/models.py")
    assert not at.exception, at.exception
    assert "No registered models yet" in texts(at)


def test_drift_and_schedules_pages_say_there_is_nothing(dashboard_env: LiveServer) -> None:
    at = page("views/drift.py")
    assert not at.exception, at.exception
    assert "No registered models yet" in texts(at)
    at = page("views/schedules.py")
    assert not at.exception, at.exception
    assert "No schedules yet" in texts(at)


@pytest.mark.parametrize("path", [None, "views/run.py", "views/models.py", "views/schedules.py"])
def test_api_down_is_a_message(monkeypatch: pytest.MonkeyPatch, path: str | None) -> None:
    monkeypatch.setenv("FOVEA_DASHBOARD_API_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("FOVEA_API_TOKEN", "whatever")
    at = page(path)
    assert not at.exception, at.exception
    assert any("does not answer" in e.value for e in at.error), [e.value for e in at.error]


def test_wrong_token_is_a_message(dashboard_env: LiveServer, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FOVEA_API_TOKEN", "not-the-token")
    at = page()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("refused the dashboard's token" in e for e in errors), errors
    assert not any("not-the-token" in t for t in texts(at).splitlines())
