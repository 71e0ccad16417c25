"""The `fovea` command: up, api, scheduler, submit, jobs, status, cancel, models, demo."""

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

from fovea import priority
from fovea.client import ApiError, Client
from fovea.config import Settings

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Fovea vision training platform")
console = Console(width=max(Console().width, 120))
TERMINAL = {"succeeded", "failed", "cancelled"}
# What `submit --wait`, `status` and `demo` exit with, so a script can tell (docs/training.md):
# 1 is also every error of the command itself; 2 is a usage error (click's own).
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 3}
EXIT_GAVE_UP = 4  # --timeout passed and the job had not ended


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
    dashboard: Annotated[
        bool, typer.Option(help="also start the dashboard (fovea dashboard) beside the API")
    ] = False,
    dashboard_port: Annotated[int, typer.Option(help="the dashboard's port")] = 8501,
) -> None:
    """Start the API and the scheduler (local Ray, SQLite, local MLflow) and keep running."""
    import logging

    priority.yield_to_training()  # the control plane never preempts a job (fovea.priority)

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
    child = _start_dashboard(port=dashboard_port, api_url=settings.base_url) if dashboard else None
    try:
        serve(settings, with_scheduler=scheduler)
    finally:
        if child is not None:
            child.terminate()
            child.wait(10)


def _start_dashboard(*, port: int, api_url: str) -> subprocess.Popen[bytes]:
    from fovea.dashboard import launch

    problem = launch.check_installed()
    if problem:
        _fail(problem)
    console.print(f"dashboard on [bold]http://127.0.0.1:{port}[/bold]")
    return launch.start(port=port, api_url=api_url)


@app.command("dashboard")
def dashboard_command(
    port: Annotated[int, typer.Option(help="port of the dashboard")] = 8501,
    url: Annotated[
        str | None, typer.Option(help="API base URL (default: this FOVEA_HOME's)")
    ] = None,
    host: Annotated[
        str, typer.Option(help="address to listen on; 0.0.0.0 only inside a container")
    ] = "127.0.0.1",
) -> None:
    """Start the Streamlit dashboard (on 127.0.0.1, usage statistics off), a client of the API."""
    from fovea.dashboard import launch

    priority.yield_to_training()
    problem = launch.check_installed()
    if problem:
        _fail(problem)
    api_url = url or Settings().base_url
    console.print(f"dashboard on [bold]http://{host}:{port}[/bold]  (API {api_url})")
    env = launch.environment(api_url=api_url)
    raise typer.Exit(subprocess.call(launch.command(port=port, host=host), env=env))


def _serving_settings(host: str | None, port: int | None) -> Settings:
    """`fovea api` and `fovea scheduler`: logging, settings, and the control plane's policy."""
    import logging

    priority.yield_to_training()

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, Any] = {k: v for k, v in {"host": host, "port": port}.items() if v}
    settings = Settings(**overrides)
    settings.ensure_home()
    return settings


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default 8742)")] = None,
) -> None:
    """Start the API alone (no scheduler, no Ray): run as many as you like, with
    `fovea scheduler` beside them, all configured by the same FOVEA_* environment."""
    from fovea.platform.server import serve

    settings = _serving_settings(host, port)
    settings.resolve_token(create=True)
    console.print(f"Fovea API on [bold]{settings.base_url}[/bold]; job store {settings.db_url}")
    serve(settings, with_scheduler=False)


@app.command()
def scheduler() -> None:
    """Start a scheduler alone (Ray at FOVEA_RAY_ADDRESS, or a local one); several may share
    a PostgreSQL store. SIGTERM drains: no new claims, running jobs finish or are handed back."""
    from fovea.platform.server import run_scheduler

    settings = _serving_settings(None, None)
    console.print(f"Fovea scheduler; job store {settings.db_url}, MLflow {settings.tracking_uri}")
    run_scheduler(settings)


@app.command()
def submit(
    spec_file: Annotated[Path, typer.Argument(help="job spec, YAML or JSON")],
    wait: Annotated[
        bool, typer.Option(help="follow the job to its end; exit code as `fovea status`")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="with --wait: give up after this many seconds (exit 4)")
    ] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    url: Annotated[str | None, typer.Option(help="API base URL")] = None,
) -> None:
    """Submit a job spec file. A relative `dataset.uri` is read against the spec file's
    folder and sent as an absolute path."""
    try:
        spec = yaml.safe_load(spec_file.read_text())
    except (OSError, yaml.YAMLError) as exc:
        _fail(f"cannot read {spec_file}: {exc}")
    if not isinstance(spec, dict):
        _fail(f"{spec_file} must hold a job spec mapping (name, task, dataset, model, train)")
    spec = with_absolute_paths(spec, base=spec_file.resolve().parent)
    client = _client(url)
    try:
        job = client.submit(spec, idempotency_key=idempotency_key)
    except ApiError as exc:
        _fail(str(exc))
    console.print(f"submitted job [bold]{job['id']}[/bold] ({job['state']})")
    if wait:
        _end(_wait(client, job["id"], timeout=timeout))


def with_absolute_paths(spec: dict[str, Any], *, base: Path) -> dict[str, Any]:
    """`dataset.uri` made absolute against `base` when it is a relative local path (the
    server resolves paths against its own working directory, which the client never sees);
    URIs with a scheme (builtin://, s3://) pass unchanged."""
    dataset = spec.get("dataset")
    uri = dataset.get("uri") if isinstance(dataset, dict) else None
    if not isinstance(uri, str) or not uri or "://" in uri:
        return spec
    path = Path(uri).expanduser()
    if path.is_absolute():
        return spec
    return {**spec, "dataset": {**dataset, "uri": str((base / path).resolve())}}


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
    timeout: Annotated[
        float | None, typer.Option(help="with --watch: give up after this many seconds (exit 4)")
    ] = None,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Show a job; with --watch (default) follow it live until it ends. Exit code: 0
    succeeded (or still queued/running with --no-watch), 1 failed, 3 cancelled, 4 gave up
    waiting (--timeout)."""
    client = _client(url)
    try:
        job = client.job(job_id)
    except ApiError as exc:
        _fail(str(exc))
    if watch and job["state"] not in TERMINAL:
        job = _wait(client, job_id, timeout=timeout)
    _end(job)


def _end(job: dict[str, Any]) -> None:
    """Print the job as it is now and exit with its code (EXIT_CODES; 0 while it runs)."""
    _print_job(job)
    code = EXIT_CODES.get(job["state"], 0)
    if code:
        raise typer.Exit(code)


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


@app.command()
def promote(
    name: Annotated[str, typer.Argument(help="registered model")],
    version: Annotated[int, typer.Argument(help="the version to make champion")],
    reason: Annotated[str, typer.Option(help="why (kept in the model's events)")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Make a version the champion by hand, overriding the promotion gate."""
    try:
        event = _client(url).promote(name, version=version, reason=reason)
    except ApiError as exc:
        _fail(str(exc))
    console.print(event["message"])


@app.command()
def rollback(
    name: Annotated[str, typer.Argument(help="registered model")],
    reason: Annotated[str, typer.Option(help="why (kept in the model's events)")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Give `champion` back to the version the current champion replaced."""
    try:
        event = _client(url).rollback(name, reason=reason)
    except ApiError as exc:
        _fail(str(exc))
    console.print(event["message"])


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


def _wait(client: Client, job_id: str, *, timeout: float | None) -> dict[str, Any]:
    """Follow the job to its end; past `timeout` seconds, say where it is and exit 4."""
    job = _follow(client, job_id, timeout=timeout)
    if job["state"] not in TERMINAL:
        _print_job(job)
        console.print(
            f"[yellow]gave up waiting after {timeout:.0f} s[/yellow]; the job goes on: "
            f"`fovea status {job_id}` follows it"
        )
        raise typer.Exit(EXIT_GAVE_UP)
    return job


def _follow(client: Client, job_id: str, *, timeout: float | None = None) -> dict[str, Any]:
    """Poll the job until it ends or `timeout` seconds pass; return it as last seen. On a
    terminal a live progress bar; otherwise (a pipe, a log file) a line per state change
    and per epoch."""
    deadline = None if timeout is None else time.monotonic() + timeout
    view = _Bar(job_id) if console.is_terminal else _Lines(job_id)
    job: dict[str, Any] = {"id": job_id, "state": "queued"}
    with view:
        while True:
            try:
                job = client.job(job_id)
            except Exception as exc:  # transient: the server restarting
                view.unreachable(exc)
            else:
                view.show(job)
                if job["state"] in TERMINAL:
                    return job
            if deadline is not None and time.monotonic() >= deadline:
                return job
            time.sleep(1.0)


def _detail(job: dict[str, Any]) -> str:
    """What the job is doing: the epoch and its metrics once training runs; before that
    what the worker said last (e.g. "decoding 4,317 images"), not a silent 0%."""
    p = job.get("progress") or {}
    if p.get("epoch") is not None and job["state"] == "running":
        m = p.get("metrics") or {}
        shown = " ".join(f"{k}={v:.3f}" for k, v in list(m.items())[:3])
        return f"epoch {p['epoch']}/{p.get('epochs')} step {p.get('step')}/{p.get('steps')} {shown}"
    if job["state"] == "running":
        said = [e["message"] for e in job.get("events") or [] if e.get("message")]
        return p.get("detail") or (said[-1] if said else "starting")
    return job["state"]


class _Bar:
    """A rich progress bar (terminals)."""

    def __init__(self, job_id: str) -> None:
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
        )
        self.progress = Progress(*columns, console=console, transient=False)
        self.bar = self.progress.add_task(job_id, total=1.0, detail="queued")

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def show(self, job: dict[str, Any]) -> None:
        fraction = float((job.get("progress") or {}).get("fraction") or 0.0)
        if job["state"] == "succeeded":
            fraction = 1.0
        self.progress.update(self.bar, completed=fraction, detail=_detail(job))

    def unreachable(self, exc: Exception) -> None:
        self.progress.update(self.bar, detail=f"[yellow]API unreachable: {exc}")


class _Lines:
    """One plain line per state change and per epoch (pipes and log files)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.last: tuple[Any, ...] | None = None

    def __enter__(self) -> _Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def show(self, job: dict[str, Any]) -> None:
        p = job.get("progress") or {}
        detail = _detail(job)
        # an epoch's line once, when it starts; other details whenever they change
        key = (job["state"], p.get("epoch") if p.get("epoch") is not None else detail)
        if key == self.last:
            return
        self.last = key
        said = job["state"] if detail == job["state"] else f"{job['state']}, {detail}"
        console.print(f"{time.strftime('%H:%M:%S')} job {self.job_id}: {said}", highlight=False)

    def unreachable(self, exc: Exception) -> None:
        console.print(f"{time.strftime('%H:%M:%S')} API unreachable: {exc}", highlight=False)


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
                    _fail(f"the server exited; see {log_path}")
                try:
                    client.health()
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        _fail(f"the API did not come up in {startup_s:g} s; see {log_path}")
                    time.sleep(1)
        job = client.submit(spec)
        console.print(f"submitted job [bold]{job['id']}[/bold]")
        job = _wait(client, job["id"], timeout=max(1.0, given_up_at - time.monotonic()))
        if job["state"] != "succeeded":
            _end(job)
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


# -- fovea schedules ... ----------------------------------------------------------------------

schedules_app = typer.Typer(no_args_is_help=True, help="Cron and drift-triggered retraining")
app.add_typer(schedules_app, name="schedules")


def _load_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        _fail(f"cannot read {path}: {exc}")
    if not isinstance(data, dict):
        _fail(f"{path} must hold a {what} mapping")
    return data


def _print_schedule(s: dict[str, Any]) -> None:
    state = "[green]enabled[/green]" if s["enabled"] else "[yellow]paused[/yellow]"
    console.print(f"schedule [bold]{s['name']}[/bold] ({s['id']}): {state}")
    if s["cron"]:
        console.print(f"  cron      {s['cron']}  ({s['cron_description']}, {s['timezone']})")
    if s["drift"]:
        d = s["drift"]
        console.print(
            f"  drift     of {d['model']}: cooldown {d['cooldown_hours']:g} h, "
            f"at most {d['max_per_day']} a day"
        )
    console.print(
        f"  overlap   {s['overlap']}; misfire grace {s['misfire_grace_s']} s; "
        f"skip if data unchanged: {s['skip_if_data_unchanged']}"
    )
    console.print(f"  next fire {s['next_fire_at'] or '-'}   last job {s['last_job_id'] or '-'}")
    for e in reversed(s.get("events") or []):
        console.print(f"  {e['at'][:19]} {e['kind']:<8} {e['message']}")


@schedules_app.command("list")
def schedules_list(url: Annotated[str | None, typer.Option()] = None) -> None:
    """List schedules with their next fire time."""
    try:
        items = _client(url).schedules()["items"]
    except ApiError as exc:
        _fail(str(exc))
    table = Table("id", "name", "cron", "timezone", "drift of", "state", "overlap", "next fire")
    for s in items:
        table.add_row(
            s["id"],
            s["name"],
            s["cron"] or "",
            s["timezone"],
            (s["drift"] or {}).get("model") or "",
            "enabled" if s["enabled"] else "paused",
            s["overlap"],
            s["next_fire_at"] or "",
        )
    console.print(table)


@schedules_app.command("create")
def schedules_create(
    spec_file: Annotated[Path, typer.Argument(help="schedule YAML/JSON; `template` may be a path")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create a schedule (name, template, cron, timezone, overlap, drift, ...)."""
    body = _load_mapping(spec_file, "schedule")
    if isinstance(body.get("template"), str):  # a job spec file, relative to this file
        body["template"] = _load_mapping(spec_file.parent / body["template"], "job spec")
    try:
        created = _client(url).create_schedule(body)
    except ApiError as exc:
        _fail(str(exc))
    _print_schedule(created)


@schedules_app.command("show")
def schedules_show(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    events: Annotated[int, typer.Option(help="newest events to show")] = 20,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """A schedule with its newest fires, skips and misfires."""
    try:
        _print_schedule(_client(url).schedule(schedule, events=events))
    except ApiError as exc:
        _fail(str(exc))


@schedules_app.command("update")
def schedules_update(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    cron: Annotated[str | None, typer.Option(help="new cron expression")] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone")] = None,
    overlap: Annotated[str | None, typer.Option(help="forbid | queue | replace")] = None,
    misfire_grace_s: Annotated[int | None, typer.Option()] = None,
    skip_if_data_unchanged: Annotated[bool | None, typer.Option()] = None,
    template: Annotated[Path | None, typer.Option(help="a new job spec file")] = None,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Change some fields of a schedule."""
    changes: dict[str, Any] = {
        k: v
        for k, v in {
            "cron": cron,
            "timezone": timezone,
            "overlap": overlap,
            "misfire_grace_s": misfire_grace_s,
            "skip_if_data_unchanged": skip_if_data_unchanged,
        }.items()
        if v is not None
    }
    if template is not None:
        changes["template"] = _load_mapping(template, "job spec")
    if not changes:
        _fail("nothing to change; see --help")
    _patch_schedule(schedule, changes, url)


@schedules_app.command("pause")
def schedules_pause(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Stop firing (cron and drift) until resumed."""
    _patch_schedule(schedule, {"enabled": False}, url)


@schedules_app.command("resume")
def schedules_resume(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Fire again from now on (fires and verdicts while paused are not made up)."""
    _patch_schedule(schedule, {"enabled": True}, url)


def _patch_schedule(schedule: str, changes: dict[str, Any], url: str | None) -> None:
    try:
        _print_schedule(_client(url).update_schedule(schedule, changes))
    except ApiError as exc:
        _fail(str(exc))


@schedules_app.command("delete")
def schedules_delete(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Delete a schedule and its events (the jobs it submitted stay)."""
    try:
        _client(url).delete_schedule(schedule)
    except ApiError as exc:
        _fail(str(exc))
    console.print(f"deleted schedule {schedule}")


@schedules_app.command("events")
def schedules_events(
    schedule: Annotated[str, typer.Argument(help="id or name")],
    kind: Annotated[str | None, typer.Option(help="fire | skip | misfire | error | ...")] = None,
    limit: Annotated[int, typer.Option()] = 50,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Fires, skips and misfires of a schedule, newest first, with their reasons."""
    try:
        found = _client(url).schedule_events(schedule, kind=kind, limit=limit)
    except ApiError as exc:
        _fail(str(exc))
    table = Table("at", "kind", "trigger", "fire time", "job", "reason")
    for e in found:
        table.add_row(
            e["at"][:19],
            e["kind"],
            e["trigger"] or "",
            (e["fire_time"] or "")[:19],
            e["job_id"] or "",
            e["message"],
        )
    console.print(table)


from fovea import cli_monitoring  # noqa: E402  (after `app`: it adds commands to it)

app.command("predict")(cli_monitoring.predict)
app.command("score")(cli_monitoring.score)
app.command("drift")(cli_monitoring.drift)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
