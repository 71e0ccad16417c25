"""`fovea predict`, `fovea score`, `fovea drift`: serving and monitoring from the shell.

Registered on the `fovea` command in fovea/cli/__init__.py; every command talks to the HTTP API.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fovea.cli.terminal import UrlOption, client_for, console, fail
from fovea.client import ApiError

VERDICT_COLOURS = {"ok": "green", "warning": "yellow", "drift": "red", "insufficient": "cyan"}

AliasOption = Annotated[str | None, typer.Option(help="alias (default champion)")]
VersionOption = Annotated[int | None, typer.Option(help="a version instead of an alias")]


def predict(
    model: Annotated[str, typer.Argument(help="registered model name")],
    files: Annotated[list[Path], typer.Argument(help="image files")],
    alias: AliasOption = None,
    version: VersionOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the API's JSON")] = False,
    url: UrlOption = None,
) -> None:
    """Predict images with a registered model (served on the Ray cluster; logged)."""
    payload = []
    for path in files:
        try:
            payload.append((path.name, path.read_bytes()))
        except OSError as exc:
            fail(f"cannot read {path}: {exc}")
    try:
        out = client_for(url).predict(model, payload, alias=alias, version=version)
    except ApiError as exc:
        fail(str(exc))
    if as_json:
        console.print_json(json.dumps(out))
        return
    table = Table("file", "answer", title=f"{model} v{out['version']} ({out['task']})")
    for item in out["predictions"]:
        table.add_row(item["file"], _answer(item))
    console.print(table)
    if not all(item["ok"] for item in out["predictions"]):
        raise typer.Exit(1)


def _answer(item: dict[str, Any]) -> str:
    if not item["ok"]:
        return f"[red]{item['error']}[/red]"
    if "label" in item:
        return f"{item['label']} ({item['score']:.3f})"
    if "boxes" in item:
        return f"{len(item['boxes'])} boxes: " + ", ".join(
            f"{n} {s:.2f}" for n, s in zip(item["class_names"], item["scores"], strict=False)
        )
    fractions = item.get("class_fractions") or {}
    return ", ".join(f"{n} {f:.1%}" for n, f in fractions.items() if f > 0)


def score(
    model: Annotated[str, typer.Argument(help="registered model name")],
    folder: Annotated[Path, typer.Argument(help="a folder of images under a data root")],
    alias: AliasOption = None,
    version: VersionOption = None,
    wait: Annotated[bool, typer.Option(help="follow it to the end")] = True,
    url: UrlOption = None,
) -> None:
    """Score every image under a folder (a batch job on the Ray cluster; logged as batch)."""
    client = client_for(url)
    try:  # a relative folder is the client's: resolved here, sent absolute
        run = client.score(model, str(folder.expanduser().resolve()), alias=alias, version=version)
    except ApiError as exc:
        fail(str(exc))
    console.print(f"scoring run [bold]{run['id']}[/bold]: {run['total']} images")
    if not wait:
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=not sys.stdout.isatty()) as progress:
        bar = progress.add_task(model, total=run["total"])
        while run["state"] == "running":
            time.sleep(1.0)
            try:
                run = client.score_run(model, run["id"])
            except ApiError as exc:
                fail(str(exc))
            progress.update(bar, completed=run["done"])
    console.print(
        f"{run['state']}: {run['done']} images, {run['failed_images']} unreadable"
        + (f"; {run['error']}" if run.get("error") else "")
    )
    if run["state"] != "succeeded":
        raise typer.Exit(1)


def drift(
    model: Annotated[str, typer.Argument(help="registered model name")],
    compute: Annotated[bool, typer.Option(help="compute a report now")] = False,
    window: Annotated[int, typer.Option(help="newest predictions to test (with --compute)")] = 500,
    alias: AliasOption = None,
    version: VersionOption = None,
    url: UrlOption = None,
) -> None:
    """Show a model's latest drift report (or compute one now) and its verdict history."""
    client = client_for(url)
    try:
        if compute:
            report = client.compute_drift(model, window=window, alias=alias, version=version)
            history = client.drift(model, limit=10)["history"]
        else:
            body = client.drift(model, limit=10)
            report, history = body["latest"], body["history"]
    except ApiError as exc:
        fail(str(exc))
    if report is None:
        console.print(f"no drift report for {model} yet")
        return
    colour = VERDICT_COLOURS.get(report["verdict"], "white")
    console.print(
        f"{model} v{report['version']}: [{colour}]{report['verdict']}[/{colour}] "
        f"(report {report['id']}, {report['n_live']} live vs {report['n_reference']} reference "
        f"images, {report['seconds']:.2f} s)"
    )
    for reason in report["reasons"]:
        console.print(f"  - {reason}")
    tests = Table("test", "method", "statistic", "effect", "p", "moved")
    for test in report.get("tests") or []:
        p_value = test["p_value"]
        tests.add_row(
            test["name"], test["method"], f"{test['statistic']:.4g}", f"{test['effect_size']:.3g}",
            "" if p_value is None else f"{p_value:.3g}", "yes" if test["significant"] else "",
        )  # fmt: skip
    console.print(tests)
    console.print("history: " + " ".join(f"{h['id']}:{h['verdict']}" for h in history))
