"""The compose topology as plain local processes, and one real job through it.

    python infra/topology.py [--timeout 900] [--keep]

What infra/compose.yaml runs, without Docker: a PostgreSQL database pair (job store and
MLflow's store, on the server at --pg-admin-url), `mlflow server` with basic auth on
PostgreSQL, `ray start --head` (no CPUs for tasks) and a second `ray start` worker node, both
with token auth, `fovea api` and `fovea scheduler` as separate processes configured only by
FOVEA_* variables. Then a tiny classification job is submitted over HTTP and followed to the
end; the script checks that it succeeded, that its MLflow run on the server has metrics,
and that the model was registered. Everything listens on loopback; only the processes
started here are stopped (by process group), and the two databases are dropped.
Exit status 0 when the job went through, 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

from fovea.cli.demo import digits_spec

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]

JOB = digits_spec(name="topology-digits", epochs=1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, *, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:3]} exited {proc.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer in {timeout_s:.0f} s:\n{tail(log)}")


def tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"


class Processes:
    """Started in sessions of their own, stopped by process group, newest first."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.started.append(proc)
        print(f"started {name} (pid {proc.pid}): {' '.join(map(str, args[:4]))} ...", flush=True)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def databases(admin_url: str) -> Iterator[tuple[str, str]]:
    """Two fresh databases (job store, MLflow) on the server, dropped afterwards."""
    from sqlalchemy import create_engine, text

    suffix = uuid.uuid4().hex[:8]
    names = (f"fovea_topology_{suffix}", f"mlflow_topology_{suffix}")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = admin_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{names[0]}", f"{base}/{names[1]}"
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def base_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "FOVEA_", "MLFLOW_"))}
    home = root / "home"
    home.mkdir(exist_ok=True)
    # RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0: a Ray node stops at once on SIGTERM instead of
    # draining for 30 s (for Serve replicas on Kubernetes), which here never finished
    env.update(
        HOME=str(home),
        RAY_USAGE_STATS_ENABLED="0",
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
        PYTHONPATH=str(REPO),
    )
    return env


def start_mlflow(
    procs: Processes, root: Path, store_url: str, env: dict[str, str]
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start `mlflow server`; its URL and process (wait_http tells when it answers)."""
    port = free_port()
    ini = root / "basic_auth.ini"
    ini.write_text(
        textwrap.dedent(f"""\
            [mlflow]
            default_permission = NO_PERMISSIONS
            database_uri = sqlite:///{root / "mlflow-auth.db"}
            admin_username = admin
            authorization_function = mlflow.server.auth:authenticate_request_basic_auth
            grant_default_workspace_access = false
        """)
    )
    mlflow_env = env | {
        "MLFLOW_AUTH_CONFIG_PATH": str(ini),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    args = [
        str(BIN / "mlflow"),
        "server",
        "--app-name=basic-auth",
        "--host=127.0.0.1",
        f"--port={port}",
        "--workers=1",
        f"--backend-store-uri={store_url}",
        f"--allowed-hosts=127.0.0.1:{port},localhost:{port}",
        "--serve-artifacts",
        f"--artifacts-destination={root / 'mlartifacts'}",
    ]
    return f"http://127.0.0.1:{port}", procs.start("mlflow", args, mlflow_env)


def start_ray(procs: Processes, root: Path, env: dict[str, str]) -> str:
    """A head without CPUs and a worker node with 2: every job runs on the second node.
    The address is 127.0.0.2, loopback too: Ray replaces 127.0.0.1 by the host's address."""
    gcs = free_port()
    common = ["--block", "--disable-usage-stats", "--node-ip-address=127.0.0.1"]
    ray = str(BIN / "ray")
    head = procs.start(
        "ray-head",
        [
            ray,
            "start",
            "--head",
            f"--port={gcs}",
            "--num-cpus=0",
            "--include-dashboard=false",
            f"--temp-dir={root / 'ray'}",
            *common,
        ],
        env,
    )
    address = f"127.0.0.2:{gcs}"
    deadline = time.monotonic() + 120
    while (
        subprocess.run(
            [ray, "health-check", f"--address={address}"], env=env, capture_output=True
        ).returncode
        != 0
    ):
        if head.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the Ray head did not come up:\n{tail(procs.logs / 'ray-head.log')}"
            )
        time.sleep(1)
    procs.start("ray-worker", [ray, "start", f"--address={address}", "--num-cpus=2", *common], env)
    return address


def wait_for_workers(address: str, env: dict[str, str], cpus: int, timeout_s: float) -> None:
    probe = (
        f"import ray; ray.init(address='{address}'); print(ray.cluster_resources().get('CPU', 0))"
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
        if run.returncode == 0 and float(run.stdout.strip().splitlines()[-1]) >= cpus:
            return
        time.sleep(2)
    raise TimeoutError("the Ray worker node did not join")


def follow(client: object, job_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    state = None
    while time.monotonic() < deadline:
        job = client.job(job_id)  # type: ignore[attr-defined]
        if job["state"] != state:
            state = job["state"]
            print(f"job {job_id}: {state}", flush=True)
        if state in {"succeeded", "failed", "cancelled"}:
            return job
        time.sleep(2)
    raise TimeoutError(f"job {job_id} still {state} after {timeout_s:.0f} s")


def check_tracking(tracking_uri: str, job: dict) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    problems = []
    run = client.get_run(job["mlflow_run_id"])
    if run.info.status != "FINISHED" or not run.data.metrics:
        problems.append(f"MLflow run {run.info.run_id}: {run.info.status}, {run.data.metrics}")
    versions = client.search_model_versions(f"name='{JOB['register_as']}'")
    if not versions:
        problems.append(f"no registered model {JOB['register_as']}")
    print(
        f"MLflow run {run.info.run_id} {run.info.status}; metrics {sorted(run.data.metrics)};"
        f" model versions {[v.version for v in versions]}"
    )
    return problems


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pg-admin-url",
        default=os.environ.get(
            "FOVEA_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds for the job")
    parser.add_argument("--keep", action="store_true", help="keep the logs folder")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="fovea-topo-", dir="/tmp"))  # short: Ray's sockets
    (root / "logs").mkdir()
    procs = Processes(root / "logs")
    ok = False
    with ExitStack() as stack:
        stack.callback(lambda: None if args.keep else shutil.rmtree(root, ignore_errors=True))
        job_db, mlflow_db = stack.enter_context(databases(args.pg_admin_url))
        stack.callback(procs.stop_all)
        env = base_env(root)
        user, password = "admin", secrets.token_hex(16)
        tracking, mlflow = start_mlflow(
            procs,
            root,
            mlflow_db,
            env | {"MLFLOW_AUTH_ADMIN_USERNAME": user, "MLFLOW_AUTH_ADMIN_PASSWORD": password},
        )
        api_port, api_token = free_port(), secrets.token_urlsafe(24)
        env |= {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(32),
            "MLFLOW_TRACKING_USERNAME": user,
            "MLFLOW_TRACKING_PASSWORD": password,
            "FOVEA_HOME": str(root / "fovea"),
            "FOVEA_DATABASE_URL": job_db,
            "FOVEA_MLFLOW_TRACKING_URI": tracking,
            "FOVEA_MLFLOW_ARTIFACT_ROOT": str(root / "mlartifacts"),
            "FOVEA_CHECKPOINT_ROOT": str(root / "checkpoints"),
            "FOVEA_DATA_ROOTS": str(REPO),
            "FOVEA_API_TOKEN": api_token,
            # An idle `fovea scheduler` exits on SIGTERM only after one more idle sleep (up to
            # 30 s by default: its drain waits for two ticks, and an idle one ticks once per
            # sleep); a short sleep keeps the teardown short.
            "FOVEA_SCHEDULER_IDLE_S": "2",
        }
        address = start_ray(procs, root, env)  # while MLflow starts
        env["FOVEA_RAY_ADDRESS"] = address
        wait_for_workers(address, env, cpus=2, timeout_s=120)
        wait_http(f"{tracking}/health", proc=mlflow, log=procs.logs / "mlflow.log", timeout_s=180)
        fovea = str(BIN / "fovea")
        api = procs.start(
            "api", [fovea, "api", "--host", "127.0.0.1", "--port", str(api_port)], env
        )
        wait_http(
            f"http://127.0.0.1:{api_port}/health",
            proc=api,
            log=procs.logs / "api.log",
            timeout_s=180,
        )
        procs.start("scheduler", [fovea, "scheduler"], env)

        from fovea.client import Client

        os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
        client = Client(f"http://127.0.0.1:{api_port}", api_token)
        submitted = client.submit(JOB)
        job = follow(client, submitted["id"], args.timeout)
        problems = [] if job["state"] == "succeeded" else [f"job ended {job['state']}: {job}"]
        if not problems:
            problems = check_tracking(tracking, job)
        for problem in problems:
            print("PROBLEM:", problem)
        if problems:
            for name in ("scheduler", "api", "ray-worker", "mlflow"):
                print(f"--- {name}.log\n{tail(procs.logs / f'{name}.log', 2000)}")
        ok = not problems
    print("topology: OK" if ok else "topology: FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
