"""`fovea up`, `fovea api`, `fovea scheduler`, `fovea dashboard`: start parts of the stack."""

from __future__ import annotations

import logging
import subprocess
from typing import Annotated, Any

import typer

from fovea import priority
from fovea.cli import streamlit_launch
from fovea.cli.terminal import console, fail
from fovea.config import Settings


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
    problem = streamlit_launch.check_installed()
    if problem:
        fail(problem)
    console.print(f"dashboard on [bold]http://127.0.0.1:{port}[/bold]")
    return streamlit_launch.start(port=port, api_url=api_url)


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

    priority.yield_to_training()
    problem = streamlit_launch.check_installed()
    if problem:
        fail(problem)
    api_url = url or Settings().base_url
    console.print(f"dashboard on [bold]http://{host}:{port}[/bold]  (API {api_url})")
    env = streamlit_launch.environment(api_url=api_url)
    raise typer.Exit(subprocess.call(streamlit_launch.command(port=port, host=host), env=env))


def _serving_settings(host: str | None, port: int | None) -> Settings:
    """`fovea api` and `fovea scheduler`: logging, settings, and the control plane's policy."""

    priority.yield_to_training()

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides: dict[str, Any] = {k: v for k, v in {"host": host, "port": port}.items() if v}
    settings = Settings(**overrides)
    settings.ensure_home()
    return settings


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


def scheduler() -> None:
    """Start a scheduler alone (Ray at FOVEA_RAY_ADDRESS, or a local one); several may share
    a PostgreSQL store. SIGTERM drains: no new claims, running jobs finish or are handed back."""
    from fovea.platform.server import run_scheduler

    settings = _serving_settings(None, None)
    console.print(f"Fovea scheduler; job store {settings.db_url}, MLflow {settings.tracking_uri}")
    run_scheduler(settings)
