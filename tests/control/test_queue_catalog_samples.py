"""Routes the dashboard builds on, over real HTTP against a real SQLite store: why a queued
job waits (GET /jobs/{id}/queue), what a spec may name (GET /catalog), and the kept copies
of live images (GET /models/{name}/predictions?sampled=true, .../{id}/image)."""

from __future__ import annotations

import io
import re
from datetime import timedelta

import httpx
import pytest
from PIL import Image

from fovea.config import Settings
from fovea.platform.api.app import create_app
from fovea.platform.jobs import service as svc
from fovea.platform.monitoring.service import log_predictions
from fovea.platform.store import JobState, make_engine, session_factory, transaction, utcnow
from fovea.tasks.catalog import CATALOG, TASK_NAMES
from tests.support.monitoring import replica_results
from tests.support.servers import LiveServer, free_port
from tests.support.specs import digits_spec

TOKEN = "queue-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("home")
    settings = Settings(
        home=home, data_roots=[tmp_path_factory.mktemp("data")], api_token=TOKEN, project_quota=1
    )
    with LiveServer(create_app(settings), free_port()) as live:
        engine = make_engine(settings.db_url)
        live.settings = settings  # type: ignore[attr-defined]
        live.sessions = session_factory(engine)  # type: ignore[attr-defined]
        live.http = httpx.Client(  # type: ignore[attr-defined]
            base_url=live.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        )
        yield live
        live.http.close()  # type: ignore[attr-defined]
        engine.dispose()


def submit(http: httpx.Client, name: str, *, priority: int = 0, project: str = "vision") -> str:
    spec = digits_spec(name=name, project=project, priority=priority, resources={"cpus": 2})
    r = http.post("/jobs", json=spec)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_queue_says_place_in_line_quota_backoff_and_what_runs(server: LiveServer) -> None:
    http = server.http  # type: ignore[attr-defined]
    running = submit(http, "running-one")
    first = submit(http, "first")
    urgent = submit(http, "urgent", priority=5)
    last = submit(http, "last")
    other = submit(http, "other-project", project="elsewhere")
    with transaction(server.sessions) as session:  # type: ignore[attr-defined]
        job = svc.get_job(session=session, job_id=running)
        svc.transition(session=session, job=job, to=JobState.RUNNING, message="claimed in test")
        retry = svc.get_job(session=session, job_id=first)
        retry.not_before = utcnow() + timedelta(minutes=5)

    got = http.get(f"/jobs/{last}/queue").json()
    assert got["state"] == "queued" and got["position"] == 3 and got["queued"] == 4
    assert [j["id"] for j in got["ahead"]] == [urgent, first]  # priority first, then FIFO
    assert got["running"] == {"jobs": 1, "cpus": 2.0, "gpus": 0.0}
    assert got["project"] == {"name": "vision", "running": 1, "quota": 1}
    reasons = "\n".join(got["reasons"])
    assert "runs 1 jobs, its quota" in reasons and "2 queued jobs go first" in reasons
    assert "hold 2 CPUs and 0 GPUs; it needs 2 CPUs" in reasons
    assert got["not_before"] is None

    backoff = http.get(f"/jobs/{first}/queue").json()
    assert backoff["not_before"] is not None and backoff["position"] == 2
    assert any("backoff" in r and re.search(r"\(in (29\d|300) s\)", r) for r in backoff["reasons"])

    free = http.get(f"/jobs/{other}/queue").json()  # its project runs nothing
    assert free["project"] == {"name": "elsewhere", "running": 0, "quota": 1}
    assert not any("quota" in r for r in free["reasons"])
    assert free["position"] == 4

    busy = http.get(f"/jobs/{running}/queue").json()
    assert busy["position"] is None and busy["reasons"] == ["it is not waiting: the job is running"]
    missing = http.get("/jobs/no-such-job/queue")
    assert missing.status_code == 404 and "no-such-job" in missing.json()["message"]


def test_catalog_lists_what_a_spec_may_name(server: LiveServer) -> None:
    got = server.http.get("/catalog").json()  # type: ignore[attr-defined]
    assert tuple(got["tasks"]) == TASK_NAMES
    detection = got["tasks"]["detection"]
    assert detection["architectures"] == list(CATALOG["detection"].architectures)
    assert detection["default_backbone"] in detection["backbones"]
    assert detection["builtin_datasets"] == ["builtin://shapes"]
    assert got["tasks"]["classification"]["builtin_datasets"] == ["builtin://digits"]
    assert got["tasks"]["classification"]["pretrained"]["resnet18"] == "ResNet18_Weights"
    assert got["builtin_datasets"]["builtin://shapes"]["params"]["n"]["default"] == 500
    assert httpx.get(f"{server.url}/catalog").status_code == 401


def png(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_kept_live_images_are_served_from_the_samples_folder_only(server: LiveServer) -> None:
    http, settings = server.http, server.settings  # type: ignore[attr-defined]
    folder = settings.prediction_samples / "pets"
    folder.mkdir(parents=True)
    outside = settings.home / "not-a-sample.png"
    outside.write_bytes(png(7))
    kept = []
    for i in range(3):
        path = folder / f"sample{i}.png"
        path.write_bytes(png(40 * i))
        kept.append(str(path))
    results = replica_results(6, seed=3)  # 6 images and one that failed
    uris = [kept[0], None, kept[1], None, kept[2], str(outside), None]
    with transaction(server.sessions) as session:  # type: ignore[attr-defined]
        ids = log_predictions(session=session, model_name="pets", version=1, request_id="r",
                              source="api", results=results, image_uris=uris)  # fmt: skip

    every = http.get("/models/pets/predictions").json()["items"]
    assert [row["id"] for row in every] == ids[::-1]
    sampled = http.get("/models/pets/predictions", params={"sampled": "true"}).json()["items"]
    assert [row["id"] for row in sampled] == [ids[5], ids[4], ids[2], ids[0]]
    assert sampled[1]["image"] == f"/models/pets/predictions/{ids[4]}/image"
    window = http.get(
        "/models/pets/predictions",
        params={"sampled": "true", "from_id": ids[1], "before_id": ids[4] + 1},
    ).json()["items"]
    assert [row["id"] for row in window] == [ids[4], ids[2]]

    for position, index in ((0, 0), (1, 2), (2, 4)):
        r = http.get(f"/models/pets/predictions/{ids[index]}/image")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        assert r.content == png(40 * position)

    not_kept = http.get(f"/models/pets/predictions/{ids[1]}/image")
    assert not_kept.status_code == 404 and "kept no image" in not_kept.json()["message"]
    escaped = http.get(f"/models/pets/predictions/{ids[5]}/image")  # a row naming a file
    assert escaped.status_code == 404 and "is gone" in escaped.json()["message"]  # outside
    assert outside.read_bytes() == png(7)
    wrong_model = http.get(f"/models/cats/predictions/{ids[0]}/image")
    assert wrong_model.status_code == 404
    assert http.get("/models/pets/predictions/0/image").status_code == 422
    (folder / "sample2.png").unlink()  # retention took it
    gone = http.get(f"/models/pets/predictions/{ids[4]}/image")
    assert gone.status_code == 404 and "is gone" in gone.json()["message"]
