"""The compose topology as plain local processes, and a real job through it (slow).

infra/topology.py starts PostgreSQL databases, `mlflow server` (basic auth), a Ray head and
a second Ray node (token auth), `fovea api` and `fovea scheduler`, each a process of its own
configured by FOVEA_* variables only, submits a tiny job over HTTP and checks that it
succeeded, that its MLflow run on the server has metrics and that the model was registered.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.infra_checks import INFRA, REPO

pytestmark = pytest.mark.slow


def test_a_job_goes_through_the_multi_process_topology() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, str(INFRA / "topology.py"), "--timeout", "600"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0 and "topology: OK" in run.stdout, out[-6000:]
    assert "succeeded" in run.stdout
