"""The dashboard in a real browser against the whole stack (the session's shared `fovea up`:
API, scheduler, local Ray, MLflow): submit a job from the form, watch its progress move, open
the finished run, and screenshot every page under test-output/dashboard/.

Other tests register models and create schedules on the same stack; "browser-digits" and
"nightly" sort first among their names, so the pages that show the first model or schedule
by default show these."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.browser import OUTPUT, Dashboard, chromium_path, open_page, settle
from tests.support.servers import TOKEN
from tests.support.stack import Stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def browser_page(stack: Stack) -> Iterator[tuple[Dashboard, object]]:
    from playwright.sync_api import sync_playwright

    OUTPUT.mkdir(parents=True, exist_ok=True)
    dashboard = Dashboard(api_url=stack.url, token=TOKEN, log=stack.home / "dashboard.log")
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            yield dashboard, page
            browser.close()
    finally:
        dashboard.stop()


def _progress(page) -> float | None:  # type: ignore[no-untyped-def]
    bar = page.locator('[data-testid="stProgress"] [role="progressbar"]')
    if bar.count() == 0:
        return None
    value = bar.first.get_attribute("aria-valuenow")
    return float(value) if value is not None else None


def test_submit_watch_and_open_the_run(stack: Stack, browser_page) -> None:  # type: ignore[no-untyped-def]
    dashboard, page = browser_page
    open_page(page, f"{dashboard.url}/", "Jobs")  # the default page
    page.get_by_label("Name", exact=True).fill("browser-digits")
    page.get_by_label("Register as (model name, optional)").fill("browser-digits")
    page.get_by_label("Register as (model name, optional)").press("Enter")
    settle(page)
    page.get_by_role("button", name="Submit", exact=True).click()
    success = page.get_by_text(re.compile(r"Submitted job [0-9a-f]+"))
    success.wait_for(timeout=30_000)
    job_id = re.search(r"Submitted job ([0-9a-f]+)", success.inner_text()).group(1)  # type: ignore[union-attr]
    page.screenshot(path=str(OUTPUT / "jobs.png"), full_page=True)

    page.goto(f"{dashboard.url}/run?job={job_id}")
    page.get_by_role("heading", name="Job / run").wait_for(timeout=30_000)
    seen: list[float] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        value = _progress(page)
        if value is not None and (not seen or value != seen[-1]):
            seen.append(value)
        if (
            page.get_by_text("State: succeeded").count()
            or page.get_by_text("State: failed").count()
        ):
            break
        time.sleep(0.5)
    settle(page, 60)
    assert page.get_by_text("State: succeeded").count() == 1, stack.log.read_text()[-3000:]
    assert len(seen) >= 2 and seen[-1] == 100, seen  # the bar moved without a reload
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for(timeout=30_000)  # a curve
    page.get_by_text("confusion_matrix.png").first.wait_for(timeout=30_000)
    page.screenshot(path=str(OUTPUT / "run.png"), full_page=True)

    open_page(page, f"{dashboard.url}/models?model=browser-digits", "Models")
    page.screenshot(path=str(OUTPUT / "models.png"), full_page=True)
    page.get_by_text("Champion version: v1").wait_for(timeout=30_000)  # exactly one, or raises

    open_page(page, f"{dashboard.url}/drift", "Drift")
    page.locator("text=/No drift reports for this model yet|Latest verdict/").first.wait_for(
        timeout=30_000
    )
    shown = page.locator("body").inner_text()
    # the chosen model: shown as the text of the select box or the value of its input
    chosen = page.locator('[data-testid="stSelectbox"]').first.evaluate(
        "el => el.innerText + ' ' + Array.from(el.querySelectorAll('input')).map(i => i.value)"
        ".join(' ')"
    )
    assert "browser-digits" in chosen, chosen
    page.screenshot(path=str(OUTPUT / "drift.png"), full_page=True)
    assert "No drift reports for this model yet" in shown or "Latest verdict" in shown, shown

    r = stack.http.post(
        "/schedules",
        json={"name": "nightly", "template": stack.http.get(f"/jobs/{job_id}").json()["spec"],
              "cron": "0 3 * * *"},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    open_page(page, f"{dashboard.url}/schedules", "Schedules")
    page.get_by_text("nightly").first.wait_for(state="attached", timeout=30_000)  # a grid cell
    page.get_by_role("button", name="Pause").click()
    page.get_by_role("button", name="Resume").wait_for(timeout=30_000)
    assert stack.http.get(f"/schedules/{r.json()['id']}").json()["enabled"] is False
    page.screenshot(path=str(OUTPUT / "schedules.png"), full_page=True)
    assert all(Path(OUTPUT / f"{p}.png").stat().st_size > 10_000 for p in ("jobs", "run"))


# -- AppTest per page on the same stack, after the browser test trained and registered -------


def _apptest(stack: Stack, monkeypatch: pytest.MonkeyPatch, path: str | None, **query: str):  # type: ignore[no-untyped-def]
    from streamlit.testing.v1 import AppTest

    from tests.support.dashboard import APP

    monkeypatch.setenv("FOVEA_DASHBOARD_API_URL", stack.url)
    monkeypatch.setenv("FOVEA_API_TOKEN", TOKEN)
    at = AppTest.from_file(str(APP), default_timeout=120)
    if path:
        at.switch_page(path)
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def test_apptest_run_and_models_pages_on_the_stack(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = stack.http.get("/jobs", params={"state": "succeeded", "limit": 500}).json()["items"]
    ours = [j for j in jobs if j["name"] == "browser-digits"]
    assert ours, "the browser test trains the job these pages show"
    job = ours[0]
    at = _apptest(stack, monkeypatch, "views/run.py", job=job["id"])
    assert not at.exception, at.exception
    assert any(m.value == "State: **succeeded**" for m in at.markdown)
    assert len(at.get("vega_lite_chart")) >= 2 and len(at.get("image")) >= 2
    matrices = [d.value for d in at.dataframe if d.value.shape == (10, 10)]
    # one epoch of a small CNN: beats chance (0.1) by a margin, far from converged
    assert matrices and matrices[0].values.trace() > matrices[0].values.sum() * 0.15

    at = _apptest(stack, monkeypatch, "views/models.py", model="browser-digits")
    assert not at.exception, at.exception
    assert any("Champion version: v1" in c.value for c in at.caption)
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    picture = Image.fromarray((load_digits().images[0] * 15).astype("uint8")).resize((32, 32))
    png = io.BytesIO()
    picture.save(png, format="PNG")
    at.file_uploader(key="try_file").upload("zero.png", png.getvalue(), "image/png").run()
    assert not at.exception, at.exception
    predicted = [m for m in at.metric if m.label == "Predicted"]
    assert predicted and predicted[0].value, [e.value for e in at.error]


def test_apptest_drift_and_schedules_pages_on_the_stack(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    at = _apptest(stack, monkeypatch, "views/drift.py")
    assert not at.exception, at.exception
    assert at.title[0].value == "Drift"
    at = _apptest(stack, monkeypatch, "views/schedules.py")
    assert not at.exception, at.exception
    names = at.dataframe[0].value["name"].tolist()
    assert "nightly" in names
