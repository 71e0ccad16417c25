"""One real `fovea up` for every end-to-end test (starting the stack costs ~15 s)."""

from __future__ import annotations

import pytest

from tests.support import Stack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    (data / "empty" / "someclass").mkdir(parents=True)  # a dataset with no images
    for name in ("cats", "dogs"):  # image files by name, none of them readable
        (data / "unreadable" / name).mkdir(parents=True)
        (data / "unreadable" / name / "x.jpg").write_bytes(b"not a jpeg")
    # every live image kept: the drift page shows those of a drifting window; progress
    # every 0.5 s: a fault test kills a worker at a given epoch of a short job
    env = {"FOVEA_PREDICTION_SAMPLE_RATE": "1", "FOVEA_SCHEDULER_INTERVAL_S": "0.5"}
    s = Stack(root / "home", data, env=env)
    s.start()
    yield s
    s.stop()
