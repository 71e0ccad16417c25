"""/schedules over real HTTP against the real app and database, and `fovea schedules`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from fovea.config import Settings
from fovea.platform.api.app import create_app
from tests.support.schedules import TEMPLATE
from tests.support.servers import LiveServer, free_port

TOKEN = "sched-token"
# For what never reaches the store (the token check, request validation, the CLI, which
# speaks only HTTP): one database is enough; what the store does runs on both.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def server(db_url: str, tmp_path: Path):
    data_root = tmp_path / "data"
    (data_root / "flowers" / "daisy").mkdir(parents=True)
    settings = Settings(
        home=tmp_path / "home", database_url=db_url, data_roots=[data_root], api_token=TOKEN
    )
    with LiveServer(create_app(settings), free_port()) as live:
        live.data_root = data_root  # type: ignore[attr-defined]
        yield live


@pytest.fixture
def client(server: LiveServer):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def body(**over):  # type: ignore[no-untyped-def]
    spec = {"name": "nightly", "template": TEMPLATE, "cron": "0 3 * * *", "timezone": "UTC"}
    spec.update(over)
    return spec


@SQLITE_ONLY
@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/schedules"),
        ("POST", "/schedules"),
        ("GET", "/schedules/x"),
        ("GET", "/schedules/x/events"),
        ("PATCH", "/schedules/x"),
        ("DELETE", "/schedules/x"),
    ],
)
def test_every_route_needs_the_token(server: LiveServer, method: str, path: str) -> None:
    r = httpx.request(method, f"{server.url}{path}", json=body())
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"


def test_create_show_pause_resume_delete(client: httpx.Client) -> None:
    r = client.post("/schedules", json=body(timezone="Asia/Tokyo", drift={"cooldown_hours": 12}))
    assert r.status_code == 201, r.text
    s = r.json()
    assert s["cron_description"] == "At 03:00 every day"
    assert s["next_fire_at"].endswith(":00:00Z") and s["next_fire_at"][11:13] == "18"  # 03 JST
    assert s["drift"] == {"model": "digits", "cooldown_hours": 12.0, "max_per_day": 2}
    assert s["overlap"] == "forbid" and s["misfire_grace_s"] == 3600
    assert s["template"]["train"]["batch_size"] == 32  # the JobSpec, defaults filled
    by_name = client.get("/schedules/nightly").json()
    assert by_name["id"] == s["id"] and by_name["events"][0]["kind"] == "created"
    assert [x["id"] for x in client.get("/schedules").json()["items"]] == [s["id"]]

    paused = client.patch(f"/schedules/{s['id']}", json={"enabled": False}).json()
    assert paused["enabled"] is False and paused["next_fire_at"] is None
    resumed = client.patch(f"/schedules/{s['id']}", json={"enabled": True, "cron": "30 4 * * 1"})
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["cron_description"] == "At 04:30 on Monday"
    events = client.get(f"/schedules/{s['id']}/events").json()
    assert [e["kind"] for e in events] == ["updated", "updated", "created"]
    assert "enabled" in events[1]["data"]["fields"]

    assert client.delete(f"/schedules/{s['id']}").status_code == 204
    gone = client.get(f"/schedules/{s['id']}")
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"


@SQLITE_ONLY
@pytest.mark.parametrize(
    "over,field,words",
    [
        ({"cron": "0 25 * * *"}, "cron", "Bad hour"),
        ({"cron": "@daily"}, "cron", "5 fields"),
        ({"timezone": "Europe/Atlantis"}, "timezone", "unknown IANA time zone"),
        ({"overlap": "sometimes"}, "overlap", "forbid"),
        ({"misfire_grace_s": -1}, "misfire_grace_s", "greater than or equal"),
        ({"cron": None}, "body", "drift trigger"),
        ({"template": {**TEMPLATE, "train": {"epochs": 0}}}, "template.train.epochs", "equal to 1"),
        ({"drift": {"max_per_day": 0}}, "drift.max_per_day", "greater than or equal"),
        ({"colour": "red"}, "colour", "not permitted"),
    ],
)
def test_bad_input_is_a_422_naming_the_field(client: httpx.Client, over, field, words) -> None:
    r = client.post("/schedules", json=body(**over))
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "invalid_request"
    assert err["detail"][0]["field"] == field and words in err["detail"][0]["problem"], err


def test_template_paths_are_checked_against_the_data_roots(
    client: httpx.Client, server: LiveServer
) -> None:
    outside = {**TEMPLATE, "dataset": {"uri": "/etc"}}
    r = client.post("/schedules", json=body(template=outside))
    assert r.status_code == 422
    assert r.json()["detail"][0]["field"] == "template.dataset.uri"
    inside = {**TEMPLATE, "dataset": {"uri": str(server.data_root / "flowers")}}  # type: ignore[attr-defined]
    r = client.post("/schedules", json=body(template=inside))
    assert r.status_code == 201, r.text


def test_name_taken_and_bad_patch(client: httpx.Client) -> None:
    assert client.post("/schedules", json=body()).status_code == 201
    again = client.post("/schedules", json=body())
    assert again.status_code == 409 and "exists already" in again.json()["message"]
    bad = client.patch("/schedules/nightly", json={"cron": "99 * * * *"})
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "cron"
    assert client.get("/schedules/nightly").json()["cron"] == "0 3 * * *"  # unchanged
    assert client.patch("/schedules/nope", json={"enabled": False}).status_code == 404


def fovea(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FOVEA_API_TOKEN": TOKEN, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "fovea", *args, "--url", url]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)


@SQLITE_ONLY
def test_cli(server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(TEMPLATE))
    (tmp_path / "sched.yaml").write_text(
        yaml.safe_dump({"name": "cli-nightly", "template": "job.yaml", "cron": "15 2 * * *"})
    )
    made = fovea("schedules", "create", str(tmp_path / "sched.yaml"), url=server.url)
    assert made.returncode == 0, made.stdout + made.stderr
    assert "cli-nightly" in made.stdout and "At 02:15 every day" in made.stdout
    listed = fovea("schedules", "list", url=server.url)
    assert "cli-nightly" in listed.stdout and "enabled" in listed.stdout
    paused = fovea("schedules", "pause", "cli-nightly", url=server.url)
    assert paused.returncode == 0 and "paused" in paused.stdout
    changed = fovea("schedules", "update", "cli-nightly", "--overlap", "replace", url=server.url)
    assert "overlap   replace" in changed.stdout
    events = fovea("schedules", "events", "cli-nightly", url=server.url)
    assert events.stdout.count("updated") == 2 and "created" in events.stdout
    bad = fovea("schedules", "update", "cli-nightly", "--cron", "nope", url=server.url)
    assert bad.returncode == 1 and "5 fields" in bad.stdout and "Traceback" not in bad.stderr
    gone = fovea("schedules", "delete", "cli-nightly", url=server.url)
    assert gone.returncode == 0
    missing = fovea("schedules", "show", "cli-nightly", url=server.url)
    assert missing.returncode == 1 and "no schedule" in missing.stdout
