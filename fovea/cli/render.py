"""Following a job from the shell: a live progress bar on a terminal, a line per change in a
pipe, and the exit code that tells a script how the job ended."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fovea.cli.terminal import console
from fovea.client import Client

TERMINAL = {"succeeded", "failed", "cancelled"}
# What `submit --wait`, `status` and `demo` exit with, so a script can tell (docs/training.md):
# 1 is also every error of the command itself; 2 is a usage error (click's own).
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 3}
EXIT_GAVE_UP = 4  # --timeout passed and the job had not ended


def end(job: dict[str, Any]) -> None:
    """Print the job as it is now and exit with its code (EXIT_CODES; 0 while it runs)."""
    print_job(job)
    code = EXIT_CODES.get(job["state"], 0)
    if code:
        raise typer.Exit(code)


def print_job(job: dict[str, Any]) -> None:
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


def wait(client: Client, job_id: str, *, timeout: float | None) -> dict[str, Any]:
    """Follow the job to its end; past `timeout` seconds, say where it is and exit 4."""
    job = follow(client, job_id, timeout=timeout)
    if job["state"] not in TERMINAL:
        print_job(job)
        console.print(
            f"[yellow]gave up waiting after {timeout:.0f} s[/yellow]; the job goes on: "
            f"`fovea status {job_id}` follows it"
        )
        raise typer.Exit(EXIT_GAVE_UP)
    return job


def follow(client: Client, job_id: str, *, timeout: float | None = None) -> dict[str, Any]:
    """Poll the job until it ends or `timeout` seconds pass; return it as last seen. On a
    terminal a live progress bar; otherwise (a pipe, a log file) a line per state change
    and per epoch."""
    deadline = None if timeout is None else time.monotonic() + timeout
    view = Bar(job_id) if console.is_terminal else Lines(job_id)
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


def describe(job: dict[str, Any]) -> str:
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


class Bar:
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

    def __enter__(self) -> Bar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def show(self, job: dict[str, Any]) -> None:
        fraction = float((job.get("progress") or {}).get("fraction") or 0.0)
        if job["state"] == "succeeded":
            fraction = 1.0
        self.progress.update(self.bar, completed=fraction, detail=describe(job))

    def unreachable(self, exc: Exception) -> None:
        self.progress.update(self.bar, detail=f"[yellow]API unreachable: {exc}")


class Lines:
    """One plain line per state change and per epoch (pipes and log files)."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.last: tuple[Any, ...] | None = None

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def show(self, job: dict[str, Any]) -> None:
        p = job.get("progress") or {}
        detail = describe(job)
        # an epoch's line once, when it starts; other details whenever they change
        key = (job["state"], p.get("epoch") if p.get("epoch") is not None else detail)
        if key == self.last:
            return
        self.last = key
        said = job["state"] if detail == job["state"] else f"{job['state']}, {detail}"
        console.print(f"{time.strftime('%H:%M:%S')} job {self.job_id}: {said}", highlight=False)

    def unreachable(self, exc: Exception) -> None:
        console.print(f"{time.strftime('%H:%M:%S')} API unreachable: {exc}", highlight=False)
