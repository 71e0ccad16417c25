"""ONNX export of any task's model, with a dynamic batch axis and the model card inside.

The graph takes what the model takes: normalised float images "images" [N, 3, S, S],
S = card["image_size"] (fixed in the graph; resize and normalise as the task's
predict_arrays does, with card["mean"] and card["std"]). Its outputs are the model's raw
outputs, named by the task: classification "logits" [N, C]; segmentation "logits"
[N, C, S, S] (argmax over C gives the class-index mask of the square). A task whose
forward is not what should be exported (a detector's training-mode dict) provides
`onnx_graph(model) -> (module, output names)`; every output's axis 0 is the batch.

The card travels in the file's metadata ("fovea.card", JSON), so a consumer can
preprocess without the platform. The TorchScript-based exporter is used (`dynamo=False`):
the dynamo exporter needs onnxscript, which the platform does not install.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fovea.tasks.base import Task, UserError
from fovea.tasks.preprocess import Preprocess

OPSET_VERSION = 17
INPUT_NAME = "images"
DEFAULT_OUTPUT_NAMES = ("logits",)


def export_onnx(
    task: Task,
    model: nn.Module,
    card: Mapping[str, Any],
    path: str | Path,
    *,
    opset_version: int = OPSET_VERSION,
) -> Path:
    """Write `model` to `path` as ONNX; returns the path. `model` itself is left as it was
    (a CPU copy in eval mode is exported)."""
    if card.get("task", task.name) != task.name:
        raise UserError(f"model card is for task {card.get('task')!r}, not {task.name!r}")
    size = Preprocess.from_card(card).image_size  # what the graph takes: after preprocessing
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = copy.deepcopy(model).cpu().eval()
    onnx_graph = getattr(task, "onnx_graph", None)
    if onnx_graph is not None:
        graph, output_names = onnx_graph(graph)
    else:
        output_names = list(DEFAULT_OUTPUT_NAMES)
    example = torch.zeros((2, 3, size, size))  # batch 2: no size-1 special-casing traced in
    dynamic = {name: {0: "batch"} for name in [INPUT_NAME, *output_names]}
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer notes that shapes become constants: the image size is fixed on purpose
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(output_names),
            dynamic_axes=dynamic,
            opset_version=opset_version,
            dynamo=False,
        )
    _add_metadata(path, card=card, task_name=task.name)
    return path


def _add_metadata(path: Path, *, card: Mapping[str, Any], task_name: str) -> None:
    import onnx  # only export needs it

    proto = onnx.load(str(path))
    entries = {
        "fovea.task": task_name,
        "fovea.card": json.dumps(dict(card), sort_keys=True),
        "fovea.input": f"{INPUT_NAME}: float32 [N, 3, S, S] normalised with card mean/std",
    }
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
