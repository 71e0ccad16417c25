"""`fovea models`, `fovea export`, `fovea promote`, `fovea rollback`: registered models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from fovea.cli.terminal import client_for, console, fail
from fovea.client import ApiError
from fovea.config import Settings


def models(
    name: Annotated[str | None, typer.Argument()] = None,
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """List registered models, or show one with its versions."""
    client = client_for(url)
    try:
        body = client.model(name) if name else client.models()
    except ApiError as exc:
        fail(str(exc))
    console.print_json(json.dumps(body, default=str))


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
            fail(str(exc))
        task = get_task(card["task"])
        model = task.load_for_inference(card, load_file(str(weights)))
        path = export_onnx(task, model, card, output)
    console.print(
        f"wrote {path} ({card['task']}, {card.get('arch')}, "
        f"input [N, 3, {card['image_size']}, {card['image_size']}])"
    )


def promote(
    name: Annotated[str, typer.Argument(help="registered model")],
    version: Annotated[int, typer.Argument(help="the version to make champion")],
    reason: Annotated[str, typer.Option(help="why (kept in the model's events)")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Make a version the champion by hand, overriding the promotion gate."""
    try:
        event = client_for(url).promote(name, version=version, reason=reason)
    except ApiError as exc:
        fail(str(exc))
    console.print(event["message"])


def rollback(
    name: Annotated[str, typer.Argument(help="registered model")],
    reason: Annotated[str, typer.Option(help="why (kept in the model's events)")],
    url: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Give `champion` back to the version the current champion replaced."""
    try:
        event = client_for(url).rollback(name, reason=reason)
    except ApiError as exc:
        fail(str(exc))
    console.print(event["message"])
