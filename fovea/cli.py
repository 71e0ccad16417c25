"""The `fovea` command: up, submit, jobs, status, cancel, models, demo."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fovea.client import ApiError, Client
from fovea.config import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fovea vision training platform")
console = Console(width=max(Console().width, 120))
TERMINAL = {"succeeded", "failed", "cancelled"}


def _client(url: str | None) -> Client:
    settings = Settings()
    client = Client.from_settings(settings, url)
    return client


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8742)")] = None,
    scheduler: Annotated[bool, typer.Option(help="run the scheduler in this process")] = True,
) -> None:
    """Start the API and the scheduler (local Ray, SQLite, local MLflow) and keep running."""
    import logging

    from fovea.platform.server import serve

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, Any] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    settings = Settings(**overrides)
    settings.ensure_home()
    settings.resolve_token(create=True)
    where = "FOVEA_API_TOKEN" if settings.api_token else str(settings.token_file)
    console.print(f"Fovea API on [bold]{settings.base_url}[/bold]  (token: {where})")
    console.print(f"job store {settings.db_url}\nMLflow    {settings.tracking_uri}")
    serve(settings, with_scheduler=scheduler)


@app.command()
def submit(
    spec_file: Annotated[Path, typer.Argument(help="job spec, YAML or JSON")],
    wait: Annotated[bool, typer.Option(help="follow the job with a progress bar")] = False,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    url: Annotated[str | None, typer.Option(help="API base URL")] = None,
) -> None:
    """Submit a job spec file."""
    try:
        spec = yaml.safe_load(spec_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        _fail(f"cannot read {spec_file}: {exc}")
    if not isinstance(spec, dict):
        _fail(f"{spec_file} must hold a job spec mapping (name, task, dataset, model, train)")
    client = _client(url)
    try:
        job = client.submit(spec, idempotency_key=idempotency_key)
    except ApiError as exc:
        _fail(str(exc))
    console.print(f"submitted job [bold]{job['id']}[/bold] ({job['state']})")
    if wait:
        _follow(client, job["id"])


@app.command()
def jobs(
    state: Annotated[str | None, typer.Option()] = None,
    project: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """List jobs, newest first."""
    try:
        page = _client(url).jobs(state=state, project=project, limit=limit)
    except ApiError as exc:
        _fail(str(exc))
    table = Table(
        "id", "name", "task", "project", "prio", "state", "attempt", "progress", "main metric"
    )
    for j in page["items"]:
        frac = (j.get("progress") or {}).get("fraction")
        metric = ""
        if j.get("metrics"):
            key = next((k for k in ("top1", "map", "miou") if k in j["metrics"]), None)
            metric = f"{key}={j['metrics'][key]:.4f}" if key else ""
        table.add_row(
            j["id"],
            j["name"],
            j["task"],
            j["project"],
            str(j["priority"]),
            j["state"],
            str(j["attempt"]),
            f"{frac:.0%}" if frac is not None else "",
            metric,
        )
    console.print(table)
    console.print(f"{len(page['items'])} of {page['total']} jobs")


@app.command()
def status(
    job_id: str,
    watch: Annotated[bool, typer.Option(help="live progress bar until the job ends")] = True,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Show a job; with --watch (default) follow it live until it ends."""
    client = _client(url)
    try:
        job = client.job(job_id)
    except ApiError as exc:
        _fail(str(exc))
    if watch and job["state"] not in TERMINAL:
        job = _follow(client, job_id)
    _print_job(job)


@app.command()
def cancel(job_id: str, url: Annotated[str | None, typer.Option()] = None) -> None:
    """Cancel a queued or running job."""
    try:
        job = _client(url).cancel(job_id)
    except ApiError as exc:
        _fail(str(exc))
    console.print(
        f"job {job_id}: {job['state']}" + (" (stopping)" if job["state"] == "running" else "")
    )


@app.command()
def models(
    name: Annotated[str | None, typer.Argument()] = None,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """List registered models, or show one with its versions."""
    client = _client(url)
    try:
        body = client.model(name) if name else client.models()
    except ApiError as exc:
        _fail(str(exc))
    console.print_json(json.dumps(body, default=str))


@app.command()
def export(
    model_uri: Annotated[str, typer.Argument(help="models:/<name>@<alias> or models:/<name>/<v>")],
    output: Annotated[Path, typer.Argument(help="the .onnx file to write")],
) -> None:
    """Export a registered model to ONNX (the model card travels in the file's metadata)."""
    import tempfile

    from safetensors.torch import load_file

    from fovea.tasks import get_task
    from fovea.tasks.export import export_onnx
    from fovea.tracking import ModelNotFoundError, download_weights

    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            weights, card = download_weights(
                tracking_uri=settings.tracking_uri, uri=model_uri, dst=Path(tmp)
            )
        except ModelNotFoundError as exc:
            _fail(str(exc))
        task = get_task(card["task"])
        model = task.load_for_inference(card, load_file(str(weights)))
        path = export_onnx(task, model, card, output)
    console.print(
        f"wrote {path} ({card['task']}, {card.get('arch')}, "
        f"input [N, 3, {card['image_size']}, {card['image_size']}])"
    )


def _print_job(job: dict[str, Any]) -> None:
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(
        job["state"], "cyan"
    )
    console.print(
        f"job [bold]{job['id']}[/bold] {job['name']} ({job['task']}): "
        f"[{colour}]{job['state']}[/{colour}], attempt {job['attempt']}"
    )
    if job.get("error"):
        console.print(f"[red]error:[/red] {job['error']}")
    if job.get("metrics"):
        table = Table("metric", "value")
        for k, v in sorted(job["metrics"].items()):
            if "/" not in k:
                table.add_row(k, f"{v:.4f}")
        console.print(table)
    if job.get("model_name"):
        console.print(f"model: [bold]{job['model_name']}[/bold] version {job['model_version']}")
    if job.get("mlflow_run_id"):
        console.print(f"MLflow run: {job['mlflow_run_id']}")
    for e in (job.get("events") or [])[-8:]:
        console.print(f"  {e['at'][11:19]} {e['kind']:<16} {e['message']}")


def _follow(client: Client, job_id: str) -> dict[str, Any]:
    """Poll the job and draw a progress bar until it reaches a terminal state."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(job_id, total=1.0, detail="queued")
        while True:
            try:
                job = client.job(job_id)
            except Exception as exc:  # transient: the server restarting
                progress.update(bar, detail=f"[yellow]API unreachable: {exc}")
                time.sleep(2)
                continue
            p = job.get("progress") or {}
            detail = job["state"]
            if p:
                m = p.get("metrics") or {}
                shown = " ".join(f"{k}={v:.3f}" for k, v in list(m.items())[:3])
                detail = (
                    f"epoch {p.get('epoch')}/{p.get('epochs')} "
                    f"step {p.get('step')}/{p.get('steps')} {shown}"
                )
            progress.update(bar, completed=float(p.get("fraction") or 0.0), detail=detail)
            if job["state"] in TERMINAL:
                if job["state"] == "succeeded":
                    progress.update(bar, completed=1.0, detail="succeeded")
                return job
            time.sleep(1.0)


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
    return {
        "name": "digits-demo",
        "task": "classification",
        "dataset": {"uri": "builtin://digits", "format": "imagefolder"},
        "model": {"arch": "smallcnn"},
        "train": {
            "epochs": 6,
            "batch_size": 64,
            "lr": 0.003,
            "image_size": 32,
            "augment": {"horizontal_flip": False},
        },
        "resources": {"cpus": os.cpu_count() or 1},
        "register_as": "digits-demo",
    }


@app.command()
def demo(
    port: Annotated[int, typer.Option()] = 8742,
    timeout: Annotated[float, typer.Option(help="seconds before giving up")] = 1200,
) -> None:
    """Start the embedded stack, train a classifier on real data, print the results."""
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
        deadline = time.monotonic() + 120
        with console.status("starting the stack (API, scheduler, local Ray) ..."):
            while True:
                if server.poll() is not None:
                    _fail(f"the server exited; see {log_path}")
                try:
                    client.health()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        _fail(f"the API did not come up in 120 s; see {log_path}")
                    time.sleep(1)
        job = client.submit(spec)
        console.print(f"submitted job [bold]{job['id']}[/bold]")
        job = _follow(client, job["id"])
        _print_job(job)
        if job["state"] != "succeeded":
            raise typer.Exit(1)
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


from fovea import cli_monitoring  # noqa: E402  (after `app`: it adds commands to it)

app.command("predict")(cli_monitoring.predict)
app.command("score")(cli_monitoring.score)
app.command("drift")(cli_monitoring.drift)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
