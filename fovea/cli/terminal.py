"""What every `fovea` command shares: the console, the API client, failing with a message."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import yaml
from rich.console import Console

from fovea.client import Client
from fovea.config import Settings

console = Console(width=max(Console().width, 120))

UrlOption = Annotated[str | None, typer.Option(help="API base URL")]


def client_for(url: str | None) -> Client:
    """The API client for `url`, or for this FOVEA_HOME's API (token from its settings)."""
    return Client.from_settings(Settings(), url)


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def load_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        fail(f"cannot read {path}: {exc}")
    if not isinstance(data, dict):
        fail(f"{path} must hold a {what} mapping")
    return data
