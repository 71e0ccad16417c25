"""A real `fovea up` process (API, scheduler, local Ray, SQLite, MLflow) for end-to-end tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from tests.support.servers import TOKEN, free_port


class Stack:
    """A real `fovea up` process (API, scheduler, local Ray, SQLite, MLflow) in `home`."""

    def __init__(self, home: Path, data_root: Path, env: dict[str, str] | None = None) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "FOVEA_HOME": str(home),
            "FOVEA_PORT": str(self.port),
            "FOVEA_API_TOKEN": TOKEN,
            "FOVEA_DATA_ROOTS": str(data_root),
            "FOVEA_SCHEDULER_INTERVAL_S": "0.3",
            **(env or {}),
        }
        self.log = home / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.http = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
        )

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fovea", "up"],
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"fovea up did not answer in 120 s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def wait(self, job_id: str, states: set[str], timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.http.get(f"/jobs/{job_id}").json()
            if job["state"] in states:
                return job
            time.sleep(0.5)
        raise AssertionError(
            f"job {job_id} not in {states} after {timeout}s: {job}\n{self.log.read_text()[-4000:]}"
        )

    def load_model(self, name: str, alias: str = "champion") -> Any:
        """The registered model `name@alias` as `mlflow.pyfunc.load_model` loads it, in this
        process (seconds cheaper than predict_plain's fresh one; no global MLflow URI set)."""
        from mlflow import MlflowClient, pyfunc

        uri = f"sqlite:///{self.home / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        version = client.get_model_version_by_alias(name, alias).version
        return pyfunc.load_model(client.get_model_version_download_uri(name, version))

    def predict_plain(self, model_uri: str, batches: dict[str, np.ndarray]) -> dict[str, dict]:
        """`mlflow.pyfunc.load_model(model_uri).predict(batch)` for each named batch, in a
        fresh Python process that imports only numpy and mlflow (as a user's client would);
        each result comes back as {column: [one JSON value per image]}."""
        paths = {}
        for name, batch in batches.items():
            paths[name] = str(self.home / f"predict-{name}.npy")
            np.save(paths[name], batch)
        code = textwrap.dedent(f"""
            import json, numpy as np, mlflow
            mlflow.set_tracking_uri({("sqlite:///" + str(self.home / "mlflow.db"))!r})
            m = mlflow.pyfunc.load_model({model_uri!r})
            out = {{}}
            for name, path in {paths!r}.items():
                frame = m.predict(np.load(path))
                out[name] = {{c: [np.asarray(x).tolist() for x in frame[c]] for c in frame.columns}}
            print(json.dumps(out))
        """)
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=self.home,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    def export_onnx(self, model_uri: str, path: Path) -> None:
        """`fovea export <model_uri> <path>` as a user runs it."""
        proc = subprocess.run(
            [sys.executable, "-m", "fovea", "export", model_uri, str(path)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
