"""The local Ray of `fovea up` runs only while there is work: the scheduler stops it after
FOVEA_RAY_IDLE_STOP_S with no job and no served model, the next job starts it again, and
a model being served keeps it up (its replica lives there)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.specs import digits_spec
from tests.support.stack import Stack

pytestmark = pytest.mark.slow
IDLE_STOP_S = 3


def ray_daemons(root: int) -> set[str]:
    """Names of the Ray daemons (raylet, gcs_server) among root's descendants."""
    parents: dict[int, int] = {}
    names: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        names[int(entry.name)] = stat[stat.index("(") + 1 : stat.rindex(")")]
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = set()
    for pid, name in names.items():
        ancestor = parents.get(pid)
        while ancestor and ancestor != root:
            ancestor = parents.get(ancestor)
        if ancestor == root and name in ("raylet", "gcs_server"):
            found.add(name)
    return found


def wait_for(condition, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return condition()


@pytest.fixture(scope="module")
def idle_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("idle-ray")
    (root / "data").mkdir()
    s = Stack(root / "home", root / "data", env={"FOVEA_RAY_IDLE_STOP_S": str(IDLE_STOP_S)})
    s.start()
    yield s
    s.stop()


def test_ray_stops_when_idle_starts_for_a_job_and_stays_while_serving(idle_stack: Stack) -> None:
    stack = idle_stack  # a stack of its own: this one must be idle, and stop Ray when idle
    assert stack.proc is not None
    pid = stack.proc.pid
    assert wait_for(lambda: not ray_daemons(pid), 60), "Ray still up with nothing to do"

    spec = digits_spec(quick=True, name="after-idle", register_as="idle-served")
    job = stack.wait(stack.http.post("/jobs", json=spec).json()["id"], {"succeeded", "failed"})
    assert job["state"] == "succeeded", job["error"]  # Ray started again for it
    assert job["metrics"]["top1"] > 0.3  # 10 classes: chance is 0.1
    assert wait_for(lambda: not ray_daemons(pid), 60), "Ray still up after the job"

    picture = Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype("uint8")).resize((32, 32))
    png = io.BytesIO()
    picture.save(png, format="PNG")
    files = [("files", ("digit.png", png.getvalue()))]
    first = stack.http.post("/models/idle-served/predict", files=files)
    assert first.status_code == 200, first.text  # serving started Ray again
    time.sleep(2 * IDLE_STOP_S + 1)  # the scheduler woke past its idle stop twice: Ray stays
    assert ray_daemons(pid) == {"raylet", "gcs_server"}
    again = stack.http.post("/models/idle-served/predict", files=files)
    assert again.status_code == 200, again.text
    assert again.json()["predictions"][0]["label"] == first.json()["predictions"][0]["label"]
