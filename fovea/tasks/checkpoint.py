"""Training checkpoints: atomic writes, and loads that never unpickle code.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so
`torch.load(weights_only=True)` reads it; figures travel as uint8 tensors and tables as
JSON text.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fovea.tasks.base import EvalResult, UserError

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as file:
        torch.save({"format": CHECKPOINT_FORMAT, **checkpoint}, file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise unusable(path, exc) from exc
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise unusable(path, "not a checkpoint of this format")
    return checkpoint


def unusable(path: Path, reason: object) -> UserError:
    return UserError(f"cannot resume from checkpoint {path}: {reason}; delete it to start afresh")


def encode_eval(result: EvalResult) -> dict[str, Any]:
    figures = {
        name: torch.from_numpy(np.frombuffer(png, dtype=np.uint8).copy())
        for name, png in result.figures.items()
    }
    return {"metrics": result.metrics, "figures": figures, "tables": json.dumps(result.tables)}


def decode_eval(saved: dict[str, Any]) -> EvalResult:
    return EvalResult(
        metrics=dict(saved["metrics"]),
        figures={name: bytes(png.numpy()) for name, png in saved["figures"].items()},
        tables=json.loads(saved["tables"]),
    )
