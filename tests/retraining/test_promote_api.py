"""POST /models/{name}/promote and /rollback over real HTTP, audited in model_events; the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
import torch

from fovea.config import Settings
from fovea.platform.api.app import create_app
from fovea.tracking import RunLogger, log_model
from fovea.tracking.gate import on_validation_metrics
from tests.support.servers import LiveServer, free_port

TOKEN = "promote-token"
CARD = {"task": "classification", "arch": "smallcnn", "num_classes": 2, "image_size": 32}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("promote-home")
    settings = Settings(home=home, data_roots=[home], api_token=TOKEN)
    with LiveServer(create_app(settings), free_port()) as live:
        for top1 in (0.5, 0.4, 0.7):  # v1 champion, v2 kept (challenger), v3 champion
            with RunLogger(
                tracking_uri=settings.tracking_uri,
                experiment="e",
                artifact_root=settings.artifact_root,
            ) as run:
                log_model(
                    logger_or_run_id=run,
                    task_name="classification",
                    card=CARD,
                    state_dict={"w": torch.zeros(2)},
                    registered_name="flowers",
                    metrics={"top1": top1},
                    main_metric="top1",
                    decider=on_validation_metrics,
                )
        yield live


@pytest.fixture
def client(server: LiveServer):
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
    ) as c:
        yield c


def test_routes_need_the_token(server: LiveServer) -> None:
    for path in ("/models/flowers/promote", "/models/flowers/rollback"):
        assert httpx.post(f"{server.url}{path}", json={"reason": "x"}).status_code == 401
    assert httpx.get(f"{server.url}/models/flowers/events").status_code == 401


def test_rollback_and_promote_are_audited(client: httpx.Client) -> None:
    model = client.get("/models/flowers").json()
    assert model["champion_version"] == 3 and model["aliases"]["challenger"] == 2
    v2 = next(v for v in model["versions"] if v["version"] == 2)
    assert v2["champion_decision"] == "kept"

    r = client.post("/models/flowers/rollback", json={"reason": "v3 misclassifies roses"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert r.json()["kind"] == "rollback" and {k: data[k] for k in ("from", "to", "reason")} == {
        "from": 3,
        "to": 1,
        "reason": "v3 misclassifies roses",
    }
    # the gate's record of it: a manual decision with both recorded scores
    decision = data["decision"]
    assert decision["manual"] and decision["promote"] and decision["champion_version"] == 3
    assert (decision["candidate"], decision["champion"]) == (0.5, 0.7)
    assert decision["reasons"][0] == "rolled back by hand from v3: v3 misclassifies roses"
    assert client.get("/models/flowers").json()["champion_version"] == 1

    r = client.post("/models/flowers/promote", json={"version": 2, "reason": "won the A/B test"})
    assert r.status_code == 200, r.text
    assert r.json()["message"] == "champion v1 -> v2 by hand: won the A/B test"
    assert r.json()["data"]["decision"]["reasons"][0] == "promoted by hand: won the A/B test"
    after = client.get("/models/flowers").json()
    assert after["champion_version"] == 2 and "challenger" not in after["aliases"]

    events = client.get("/models/flowers/events").json()
    assert [(e["kind"], e["value"], e["model_version"]) for e in events] == [
        ("rollback", "manual", "1"),
        ("promotion", "manual", "2"),
    ]
    only = client.get("/models/flowers/events", params={"kind": "promotion"}).json()
    assert len(only) == 1


@pytest.mark.parametrize(
    "path,body,status,words",
    [
        ("/models/flowers/promote", {"version": 99, "reason": "x"}, 404, "no version 99"),
        ("/models/nope/promote", {"version": 1, "reason": "x"}, 404, "no registered model"),
        ("/models/nope/rollback", {"reason": "x"}, 404, "no registered model"),
        ("/models/flowers/promote", {"version": 1}, 422, "reason"),
        ("/models/flowers/promote", {"version": 0, "reason": "x"}, 422, "version"),
        ("/models/flowers/promote", {"version": 1, "reason": ""}, 422, "reason"),
    ],
)
def test_bad_requests(client: httpx.Client, path: str, body: dict, status: int, words: str) -> None:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert words in r.text


def test_cli(server: LiveServer) -> None:
    env = {**os.environ, "FOVEA_API_TOKEN": TOKEN, "COLUMNS": "200"}

    def fovea(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "fovea", *args, "--url", server.url]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

    champion = httpx.get(
        f"{server.url}/models/flowers", headers={"Authorization": f"Bearer {TOKEN}"}
    ).json()["champion_version"]
    target = 3 if champion != 3 else 1
    done = fovea("promote", "flowers", str(target), "--reason", "cli test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"-> v{target} by hand: cli test" in done.stdout
    again = fovea("promote", "flowers", str(target), "--reason", "twice")
    assert again.returncode == 1 and "champion already" in again.stdout
    back = fovea("rollback", "flowers", "--reason", "undo")
    assert back.returncode == 0 and f"v{target} rolled back to v{champion}" in back.stdout
