"""`fovea weights`: the weights store (import, pull, list, verify, remove).

These commands work on the store's folder (FOVEA_WEIGHTS_ROOT, default <home>/weights)
directly, like `export` on the model registry: the API only reads it (GET /weights).
Importing reads the file with torch (weights_only=True, or safetensors) to record its keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fovea.cli.terminal import console, fail
from fovea.config import Settings
from fovea.platform.errors import NotFound, WeightsRefused
from fovea.platform.weights.service import WeightsEntry, WeightsStore

app = typer.Typer(no_args_is_help=True, help="The weights store: pretrained files to start from")


def _store() -> WeightsStore:
    return WeightsStore(Settings().weights_dir)


def _shown(entry: WeightsEntry) -> str:
    return f"{entry.name} ({entry.arch}, {entry.keys} tensors, sha256 {entry.sha256[:12]}...)"


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="a .pth/.pt or .safetensors state dict")],
    arch: Annotated[str, typer.Option(help="its architecture, e.g. resnet18")],
    name: Annotated[str | None, typer.Option(help="<arch>/<tag>; default <arch>/<stem>")] = None,
    source: Annotated[str, typer.Option(help="where it came from (provenance)")] = "",
    licence: Annotated[str, typer.Option(help="its licence")] = "",
) -> None:
    """Copy a weights file into the store (hash-checked, keys checked against --arch)."""
    if not file.is_file():
        fail(f"{file} is not a file")
    try:
        entry = _store().add(file, arch=arch, name=name, source=source, licence=licence)
    except WeightsRefused as exc:
        fail(str(exc))
    console.print(f"imported {_shown(entry)}")


@app.command()
def pull(
    name: Annotated[str, typer.Argument(help="resnet18/imagenet1k-v1 or ResNet18_Weights.X")],
) -> None:
    """Download a torchvision weights enum's published file into the store (when online)."""
    from fovea.platform.weights.pull import pull as pull_weights

    try:
        entry = pull_weights(_store(), name)
    except WeightsRefused as exc:
        fail(str(exc))
    console.print(f"pulled {_shown(entry)}")


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Every entry of the store."""
    entries = _store().entries()
    if as_json:
        console.print_json(json.dumps([e.as_dict() for e in entries]))
        return
    table = Table("name", "arch", "classes", "MB", "sha256", "source")
    for e in entries:
        classes = "-" if e.classes is None else str(e.classes)
        table.add_row(e.name, e.arch, classes, f"{e.size / 1e6:.1f}", e.sha256[:12], e.source)
    console.print(table)


@app.command()
def verify(
    names: Annotated[list[str] | None, typer.Argument(help="default: every entry")] = None,
) -> None:
    """Re-hash stored files; exit 1 when any changed since import."""
    store = _store()
    bad = 0
    for name in names or [e.name for e in store.entries()]:
        try:
            console.print(f"ok {_shown(store.verify(name))}")
        except (NotFound, WeightsRefused) as exc:
            console.print(f"[red]refused[/red] {exc}")
            bad += 1
    if bad:
        raise typer.Exit(1)


@app.command()
def remove(name: Annotated[str, typer.Argument()]) -> None:
    """Drop an entry (its file goes when no other name holds it)."""
    try:
        entry = _store().remove(name)
    except NotFound as exc:
        fail(str(exc))
    console.print(f"removed {_shown(entry)}")
