"""`fovea demo`: the embedded stack started, a classifier trained on real data, results shown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fovea.cli import render
from fovea.cli.terminal import console, fail
from fovea.client import Client
from fovea.config import Settings


def demo_spec(shared: Path) -> dict[str, Any]:
    flowers = shared / "classification" / "flowers5"
    if flowers.is_dir():
        return {
            "name": "flowers-demo",
            "task": "classification",
            "dataset": {"uri": str(flowers), "format": "imagefolder", "val_split": 0.2},
            "model": {"arch": "resnet18"},
            "train": {
                "epochs": 6,
                "batch_size": 64,
                "lr": 0.002,
                "image_size": 64,
                "warmup_epochs": 0.5,
            },
            "resources": {"cpus": os.cpu_count() or 1},
            "register_as": "flowers-demo",
        }
    return digits_spec(name="digits-demo", cpus=os.cpu_count() or 1)


def digits_spec(
    *,
    name: str,
    epochs: int = 6,
    cpus: int = 1,
    register_as: str | None = "",
    val_split: float | None = None,
    **train: Any,
) -> dict[str, Any]:
    """The smallest real job: a small CNN on the digits the package ships (no download),
    registered under `name` unless `register_as` says otherwise (None: not registered).
    Used by the demo on a machine without the shared datasets, infra/topology.py, the
    benchmarks and the tests; `train` overrides training fields (lr, seed, ...)."""
    dataset: dict[str, Any] = {"uri": "builtin://digits", "format": "imagefolder"}
    if val_split is not None:
        dataset["val_split"] = val_split
    spec: dict[str, Any] = {
        "name": name,
        "task": "classification",
        "dataset": dataset,
        "model": {"arch": "smallcnn"},
        "train": {
            "epochs": epochs,
            "batch_size": 64,
            "lr": 0.003,
            "image_size": 32,
            "augment": {"horizontal_flip": False},  # digits are not mirror-symmetric
            **train,
        },
        "resources": {"cpus": cpus},
    }
    if register_as is not None:
        spec["register_as"] = register_as or name
    return spec


def demo(
    port: Annotated[int, typer.Option()] = 8742,
    timeout: Annotated[
        float,
        typer.Option(help="seconds for the whole demo, start-up included; past it exit 4"),
    ] = 1200,
) -> None:
    """Start the embedded stack, train a classifier on real data, print the results."""
    given_up_at = time.monotonic() + timeout
    settings = Settings(port=port)
    settings.ensure_home()
    token = settings.resolve_token(create=True)
    spec = demo_spec(Path.cwd().parent / "shared" / "datasets")
    console.rule("[bold]Fovea demo")
    console.print(f"dataset: {spec['dataset']['uri']}  model: {spec['model']['arch']}")
    log_path = settings.home / "demo-server.log"
    env = {**os.environ, "FOVEA_PORT": str(port)}
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "fovea", "up"],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        client = Client(f"http://127.0.0.1:{port}", token)
        startup_s = min(120.0, timeout)
        deadline = time.monotonic() + startup_s
        with console.status("starting the stack (API, scheduler, local Ray) ..."):
            while True:
                if server.poll() is not None:
                    fail(f"the server exited; see {log_path}")
                try:
                    client.health()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        fail(f"the API did not come up in {startup_s:g} s; see {log_path}")
                    time.sleep(1)
        job = client.submit(spec)
        console.print(f"submitted job [bold]{job['id']}[/bold]")
        job = render.wait(client, job["id"], timeout=max(1.0, given_up_at - time.monotonic()))
        if job["state"] != "succeeded":
            render.end(job)
        console.rule("[bold]Results")
        m = job["metrics"]
        console.print(
            f"validation top-1 accuracy {m['top1']:.3f}, macro F1 {m.get('f1_macro', 0):.3f}"
        )
        console.print(
            f"registered model [bold]{job['model_name']}[/bold] version {job['model_version']}"
        )
        console.print(
            "open the MLflow UI with:\n  "
            f".venv/bin/mlflow ui --backend-store-uri {settings.tracking_uri} "
            "--host 127.0.0.1 --port 5000\n  then browse http://127.0.0.1:5000"
        )
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
