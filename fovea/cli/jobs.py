"""`fovea submit`, `fovea jobs`, `fovea status`, `fovea cancel`: jobs from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fovea.cli import render
from fovea.cli.terminal import client_for, console, fail, load_mapping
from fovea.client import ApiError


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
    spec = load_mapping(spec_file, "job spec")  # name, task, dataset, model, train
    spec = with_absolute_paths(spec, base=spec_file.resolve().parent)
    client = client_for(url)
    try:
        job = client.submit(spec, idempotency_key=idempotency_key)
    except ApiError as exc:
        fail(str(exc))
    console.print(f"submitted job [bold]{job['id']}[/bold] ({job['state']})")
    if wait:
        render.end(render.wait(client, job["id"], timeout=timeout))


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


def jobs(
    state: Annotated[str | None, typer.Option()] = None,
    project: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option()] = 20,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """List jobs, newest first."""
    try:
        page = client_for(url).jobs(state=state, project=project, limit=limit)
    except ApiError as exc:
        fail(str(exc))
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
    client = client_for(url)
    try:
        job = client.job(job_id)
    except ApiError as exc:
        fail(str(exc))
    if watch and job["state"] not in render.TERMINAL:
        job = render.wait(client, job_id, timeout=timeout)
    render.end(job)


def cancel(job_id: str, url: Annotated[str | None, typer.Option()] = None) -> None:
    """Cancel a queued or running job."""
    try:
        job = client_for(url).cancel(job_id)
    except ApiError as exc:
        fail(str(exc))
    console.print(
        f"job {job_id}: {job['state']}" + (" (stopping)" if job["state"] == "running" else "")
    )
