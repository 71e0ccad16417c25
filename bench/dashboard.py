"""Dashboard page render times in a real browser on a real store of 1,000 jobs and 50
models (150 versions). Goal: every page under 2 s.

    PYTHONPATH=. python bench/dashboard.py [--jobs 1000] [--models 50] [--repeats 3]

The API runs in this process (uvicorn thread, SQLite job store, SQLite MLflow store), the
dashboard as `fovea dashboard` starts it, and Debian's chromium under Playwright measures
from navigation until the page's title is shown and Streamlit's script run has ended.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fovea.config import Settings
from fovea.platform.api.app import create_app
from tests.support.browser import Dashboard, chromium_path, open_page
from tests.support.dashboard import seed_run
from tests.support.servers import LiveServer, free_port

TOKEN = "bench-token"
TITLES = {"jobs": "Jobs", "run": "Job / run", "models": "Models", "drift": "Drift",
          "schedules": "Schedules"}  # fmt: skip


def seed_jobs(http: httpx.Client, settings: Settings, n: int) -> str:
    """n jobs through POST /jobs, most of them moved on to an end state; one with a run."""
    from fovea.platform.jobs import service as svc
    from fovea.platform.store import JobState, make_engine, session_factory

    ids = []
    for i in range(n):
        spec = {
            "name": f"job-{i:04d}",
            "task": "classification",
            "project": f"project-{i % 7}",
            "priority": i % 5,
            "dataset": {"uri": "builtin://digits", "format": "imagefolder"},
            "model": {"arch": ("smallcnn", "resnet18", "mobilenet_v3_small")[i % 3]},
            "train": {"epochs": 3},
        }
        r = http.post("/jobs", json=spec)
        r.raise_for_status()
        ids.append(r.json()["id"])
    run_job = ids[-1]
    engine = make_engine(settings.db_url)
    with session_factory(engine)() as session, session.begin():
        for i, job_id in enumerate(ids[:-1]):
            if i % 10 == 9:
                continue  # stays queued
            job = svc.get_job(session=session, job_id=job_id)
            svc.transition(session=session, job=job, to=JobState.RUNNING, message="bench")
            end = JobState.FAILED if i % 10 == 8 else JobState.SUCCEEDED
            if i % 10 != 7:  # running
                svc.transition(session=session, job=job, to=end, message="bench")
    engine.dispose()
    seed_run(settings, run_job)
    return run_job


def seed_models(settings: Settings, n: int, versions: int = 3) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    for i in range(n):
        name = f"model-{i:02d}"
        client.create_registered_model(name, tags={"fovea.task": "classification"})
        for v in range(versions):
            tags = {
                "fovea.task": "classification",
                "fovea.main_metric": "top1",
                "fovea.main_metric_value": str(0.8 + v / 100),
                "fovea.metrics": '{"top1": %.3f}' % (0.8 + v / 100),
            }
            client.create_model_version(name, source=f"file:///nowhere/{name}/{v}", tags=tags)
        client.set_registered_model_alias(name, "champion", str(versions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="fovea-bench-dash-") as tmp:
        home, data = Path(tmp) / "home", Path(tmp) / "data"
        data.mkdir()
        settings = Settings(home=home, data_roots=[data], api_token=TOKEN)
        with LiveServer(create_app(settings), free_port()) as api:
            http = httpx.Client(
                base_url=api.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
            )
            started = time.perf_counter()
            run_job = seed_jobs(http, settings, args.jobs)
            seed_models(settings, args.models)
            print(f"seeded {args.jobs} jobs and {args.models} models in "
                  f"{time.perf_counter() - started:.1f} s")  # fmt: skip
            dashboard = Dashboard(api_url=api.url, token=TOKEN, log=home / "dashboard.log")
            urls = {p: f"{dashboard.url}/{p}" for p in TITLES}
            urls["jobs"] = f"{dashboard.url}/"  # the default page lives at the root
            urls["run"] += f"?job={run_job}"
            times: dict[str, list[float]] = {p: [] for p in TITLES}
            try:
                with sync_playwright() as pw:
                    browser = pw.chromium.launch(
                        executable_path=chromium_path(), args=["--no-sandbox"]
                    )
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    open_page(page, urls["jobs"], "Jobs", timeout_s=60)  # warm-up
                    for _ in range(args.repeats):
                        for name, url in urls.items():
                            times[name].append(open_page(page, url, TITLES[name], timeout_s=60))
                    browser.close()
            finally:
                dashboard.stop()
    load = os.getloadavg()
    print(f"page render in chromium, {args.repeats} loads each (s); load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")  # fmt: skip
    for name, values in times.items():
        verdict = "ok" if max(values) < 2.0 else "over 2 s"
        print(f"  {name:10s} median {statistics.median(values):.2f}  max {max(values):.2f}  "
              f"{verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
