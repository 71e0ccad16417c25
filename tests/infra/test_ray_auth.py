"""Ray token auth, as compose and KubeRay configure it, on a real local cluster.

`ray start --head` with RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (what infra/env/ray.env and
KubeRay's authOptions give every node): a driver or a node without the token, or with a
wrong one, is refused; with it, a driver runs a task and a second node joins; the dashboard
answers 401 without the token. Everything listens on 127.0.0.1, in a temp dir of its own,
and only the processes this test started are stopped (never `ray stop`, which would end
every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import free_port

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
DRIVER = """
import ray
ray.init(address="{address}", log_to_driver=False)

@ray.remote(num_cpus=1)
def answer():
    return 42

print("CPUS", int(ray.cluster_resources().get("CPU", 0)))
print("RESULT", ray.get(answer.remote(), timeout=120))
"""


@dataclass
class Head:
    address: str
    dashboard: str
    token: str
    root: Path


def _env(root: Path, *, node: bool = False, **extra: str) -> dict[str, str]:
    """A clean environment: no token from the caller's environment or ~/.ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    home = root / "home"
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        RAY_USAGE_STATS_ENABLED="0",
        # SIGTERM stops a node at once: Ray would first drain it for 30 s (for Serve
        # replicas on Kubernetes), and a node whose GCS is gone never finishes draining
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        **extra,
    )
    if not node:
        # a driver's "127.0.0.1" stays the loopback address (Ray would swap in the host's
        # address); a node cannot use this switch: it refuses to join a cluster with it
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    return env


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """`ray start ... --block` in a session of its own, so that it and its children can be
    stopped by process group."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [RAY, "start", "--block", "--disable-usage-stats", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # ray start --block stops its node on SIGTERM
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
    proc.wait()


def _wait_http(url: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers (401 without the token)
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def head() -> Iterator[Head]:
    # short: Ray's unix socket paths must stay under 107 characters
    root = Path(tempfile.mkdtemp(prefix="fovea-ra-", dir="/tmp"))
    token = secrets.token_hex(32)
    gcs, dashboard = free_port(), free_port()
    proc = _start(
        [
            "--head",
            f"--port={gcs}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            f"--temp-dir={root / 'ray'}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
        ],
        # node=True: a head started with Ray's single-host switch serves loopback only
        _env(root, node=True, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token),
        root / "head.log",
    )
    try:
        _wait_http(f"http://127.0.0.1:{dashboard}/api/version")
        yield Head(f"127.0.0.1:{gcs}", f"http://127.0.0.1:{dashboard}", token, root)
    finally:
        _stop(proc)
        shutil.rmtree(root, ignore_errors=True)


# For a driver or node the head must refuse: connect 5 times (one a second), not Ray's
# default 20; each attempt is refused for the token, so fewer prove the same.
REFUSED_SOON = {"RAY_gcs_server_port_wait_time_s": "5"}


def _drive(head: Head, **auth: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", DRIVER.format(address=head.address)],
        env=_env(head.root, **auth),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_driver_without_the_token_is_refused(head: Head) -> None:
    run = _drive(head, **REFUSED_SOON)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "RESULT" not in out, out[-3000:]
    assert re.search(r"auth", out, re.I), out[-3000:]


def test_driver_with_a_wrong_token_is_refused(head: Head) -> None:
    run = _drive(head, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), **REFUSED_SOON)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "RESULT" not in out, out[-3000:]
    assert re.search(r"auth", out, re.I), out[-3000:]


def test_driver_with_the_token_runs_a_task(head: Head) -> None:
    run = _drive(head, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "RESULT 42" in run.stdout


def test_dashboard_needs_the_token(head: Head) -> None:
    url = f"{head.dashboard}/api/jobs/"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)
    assert refused.value.code == 401
    wrong = urllib.request.Request(url, headers={"Authorization": "Bearer nope"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(wrong, timeout=10)
    assert refused.value.code in (401, 403)
    right = urllib.request.Request(url, headers={"Authorization": f"Bearer {head.token}"})
    with urllib.request.urlopen(right, timeout=10) as response:
        assert response.status == 200


def test_health_check_of_compose_needs_the_token(head: Head) -> None:
    def check(**auth: str) -> int:
        args = [RAY, "health-check", f"--address={head.address}"]
        env = _env(head.root, **auth)
        return subprocess.run(args, env=env, capture_output=True, timeout=120).returncode

    assert check() != 0
    assert check(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token) == 0


def test_a_node_joins_only_with_the_token(head: Head) -> None:
    # 127.0.0.2: loopback too, but not a name Ray replaces by the host's address
    port = head.address.rpartition(":")[2]
    node_args = [f"--address=127.0.0.2:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1"]
    stranger_env = _env(head.root, node=True, **REFUSED_SOON)
    stranger = _start(node_args, stranger_env, head.root / "stranger.log")
    try:
        # Refused, it either gives up or keeps retrying: either way it never joins.
        with contextlib.suppress(subprocess.TimeoutExpired):
            stranger.wait(timeout=45)
        run = _drive(head, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token)
        assert "CPUS 1" in run.stdout, run.stdout + run.stderr
    finally:
        _stop(stranger)
    log = (head.root / "stranger.log").read_text()
    assert re.search(r"auth|token", log, re.I), log[-3000:]

    env = _env(head.root, node=True, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token)
    worker = _start(node_args, env, head.root / "worker.log")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            run = _drive(head, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=head.token)
            if "CPUS 2" in run.stdout:
                break
            assert worker.poll() is None, (head.root / "worker.log").read_text()[-3000:]
            time.sleep(2)
        assert "CPUS 2" in run.stdout and "RESULT 42" in run.stdout, run.stdout + run.stderr
    finally:
        _stop(worker)
