"""The retraining loop on the shared real stack (`fovea up`, local Ray, MLflow, SQLite) with
real photos: a drift verdict -> a retrain on the data folder as it is now -> the promotion gate
on the frozen evaluation set -> the champion moves, or stays with the reason.

Monitoring (issue 9) writes the drift verdicts in the full loop; here they are recorded
with the same service function it calls, `record_model_event`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from fovea.platform.model_events import record_model_event
from fovea.platform.store import make_engine, session_factory, transaction
from tests.support.stack import Stack

pytestmark = pytest.mark.slow

CLASSES = ("daisy", "rose", "sunflower")
FIRST, ADDED = 60, 150  # photos per class at the start, and added before the retrain


def spec(**train: Any) -> dict[str, Any]:
    return {
        "name": "flowers-loop",
        "task": "classification",
        "dataset": {"uri": "", "format": "imagefolder", "val_split": 0.34},
        "model": {"arch": "smallcnn"},
        "train": {"image_size": 32, "batch_size": 32, "warmup_epochs": 0, "seed": 0, **train},
        "resources": {"cpus": 1},
        "register_as": "flowers-loop",
    }


def copy_photos(src: Path, dst: Path, start: int, count: int) -> None:
    for cls in CLASSES:
        (dst / cls).mkdir(parents=True, exist_ok=True)
        for photo in sorted((src / cls).iterdir())[start : start + count]:
            shutil.copy(photo, dst / cls / photo.name)


@pytest.fixture(scope="module")
def loop(stack: Stack, datasets: Path):  # type: ignore[no-untyped-def]
    """flowers5's first photos in a folder of the stack's data root; sessions on its store."""
    flowers = datasets / "classification" / "flowers5"
    if not flowers.is_dir():
        pytest.fail(f"the shared flowers5 dataset is missing at {flowers}")
    folder = Path(stack.env["FOVEA_DATA_ROOTS"]) / "flowers"
    copy_photos(flowers, folder, 0, FIRST)
    engine = make_engine(f"sqlite:///{stack.home / 'fovea.db'}")
    try:
        yield flowers, folder, session_factory(engine)
    finally:
        engine.dispose()


def drift(sessions, *, version: int) -> None:  # type: ignore[no-untyped-def]
    with transaction(sessions) as s:
        record_model_event(
            session=s,
            model_name="flowers-loop",
            model_version=version,
            kind="drift_verdict",
            value="drift",
            data={"previous": "ok", "reasons": ["brightness moved (KS p < 1e-6)"]},
        )


def next_event(stack: Stack, kinds: set[str], after: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in stack.http.get("/schedules/retrain/events").json():
            if e["id"] > after and e["kind"] in kinds:
                return e
        time.sleep(0.3)
    raise AssertionError(f"no {kinds} event after {after}:\n{stack.log.read_text()[-3000:]}")


def test_drift_retrains_and_the_gate_decides(stack: Stack, loop) -> None:  # type: ignore[no-untyped-def]
    flowers, folder, sessions = loop
    # v1: a weak first model (2 epochs on 60 photos per class); its validation split
    # becomes the frozen evaluation set of "flowers-loop".
    first = spec(epochs=2, lr=0.002)
    first["dataset"]["uri"] = str(folder)
    job1 = stack.wait(stack.http.post("/jobs", json=first).json()["id"], {"succeeded", "failed"})
    assert job1["state"] == "succeeded", (job1["error"], job1["events"][-5:])
    assert job1["dataset"]["files"] == 3 * FIRST and job1["dataset"]["mode"] == "stat"
    assert job1["promotion"]["promote"] and "no champion yet" in job1["promotion"]["reasons"][0]
    frozen = next(e for e in job1["events"] if e["kind"] == "eval_set_frozen")["data"]
    assert frozen["size"] == 3 * round(FIRST * 0.34)

    retrain = spec(epochs=5, lr=0.003, early_stopping_patience=None)
    retrain["dataset"]["uri"] = str(folder)
    retrain["promotion"] = {"min_delta": 0.02}
    r = stack.http.post(
        "/schedules",
        json={
            "name": "retrain",
            "template": retrain,
            "drift": {"cooldown_hours": 0, "max_per_day": 10},
        },
    )
    assert r.status_code == 201, r.text

    # 1. Drift while the data folder is as v1 saw it: nothing new to learn from.
    drift(sessions, version=1)
    skip = next_event(stack, {"skip", "fire"}, after=0)
    assert skip["kind"] == "skip" and skip["data"]["reason"] == "data_unchanged", skip
    assert "data unchanged since champion flowers-loop v1" in skip["message"]

    # 2. New labelled photos arrive, then drift: a retrain on the folder as it is now.
    copy_photos(flowers, folder, FIRST, ADDED)
    drift(sessions, version=1)
    fired = next_event(stack, {"skip", "fire"}, after=skip["id"])
    assert fired["kind"] == "fire" and fired["trigger"] == "drift", fired
    job2 = stack.wait(fired["job_id"], {"succeeded", "failed"}, timeout=600)
    assert job2["state"] == "succeeded", (job2["error"], job2["events"][-5:])
    assert job2["dataset"]["files"] == 3 * (FIRST + ADDED)
    assert job2["dataset"]["digest"] != job1["dataset"]["digest"]
    split = next(e for e in job2["events"] if e["kind"] == "data")["data"]
    assert split["val"] == frozen["size"] and split["train"] == 3 * (FIRST + ADDED) - split["val"]
    gate = job2["promotion"]
    assert (
        gate["eval_set"]["digest"] == frozen["digest"] and gate["eval_set"]["used"] == split["val"]
    )
    assert gate["champion_version"] == 1 and gate["policy"]["min_delta"] == 0.02
    assert gate["promote"], gate["reasons"]
    assert gate["candidate"] >= gate["champion"] + 0.02, gate
    assert gate["ci_low"] is not None  # classification: per-image hits give the bootstrap CI
    model = stack.http.get("/models/flowers-loop").json()
    assert model["champion_version"] == 2
    triggered = stack.http.get(
        "/models/flowers-loop/events", params={"kind": "retrain_triggered"}
    ).json()
    assert [e["data"]["job_id"] for e in triggered] == [job2["id"]]

    # 3. A worse candidate (the template changed to a tiny learning rate): kept out.
    worse = spec(epochs=1, lr=1e-6)
    worse["dataset"]["uri"] = str(folder)
    assert stack.http.patch("/schedules/retrain", json={"template": worse}).status_code == 200
    copy_photos(flowers, folder, FIRST + ADDED, 3)  # a few more photos, so the data did change
    drift(sessions, version=2)
    fired3 = next_event(stack, {"skip", "fire"}, after=fired["id"])
    assert fired3["kind"] == "fire", fired3
    job3 = stack.wait(fired3["job_id"], {"succeeded", "failed"}, timeout=600)
    assert job3["state"] == "succeeded", (job3["error"], job3["events"][-5:])
    gate3 = job3["promotion"]
    assert not gate3["promote"] and gate3["champion_version"] == 2
    assert gate3["champion"] == pytest.approx(gate["candidate"], abs=1e-6)  # same set, same v2
    assert any("does not beat champion" in r for r in gate3["reasons"]), gate3["reasons"]
    model = stack.http.get("/models/flowers-loop").json()
    assert model["champion_version"] == 2 and model["aliases"]["challenger"] == 3
    v3 = next(v for v in model["versions"] if v["version"] == 3)
    assert v3["champion_decision"] == "kept"
