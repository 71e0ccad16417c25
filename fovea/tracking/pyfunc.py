"""FoveaModel: the MLflow pyfunc wrapper every registered Fovea model is logged as.

The model folder holds `artifacts/card.json` (the task's model card) and
`artifacts/weights.safetensors`; loading rebuilds the network through the task
(`fovea.tasks.get_task(card["task"]).load_for_inference`), so nothing is unpickled.

Input: uint8 images as a numpy array NHWC, NHW (grey) or a single HWC / HW image, or a list
of single images of different sizes (each predicted at its own size, rows in list order);
other integer arrays with values in 0..255 (a JSON request) are accepted too. Output: a pandas
DataFrame with one row per image, shaped by `OUTPUT_FORMATS[task]`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import Array, ColSpec, ParamSchema, ParamSpec, Schema

ARTIFACT_CARD = "card"
ARTIFACT_WEIGHTS = "weights"
DEFAULT_BATCH_SIZE = 64  # images per forward pass; bounds memory for large requests


@dataclass(frozen=True)
class OutputFormat:
    # predict_arrays output (arrays with a leading image axis) and card -> one row per image
    frame: Callable[[Mapping[str, np.ndarray], Mapping[str, Any]], pd.DataFrame]
    schema: Schema | None = None  # the frame's columns, recorded in the model's signature


def classification_frame(arrays: Mapping[str, np.ndarray], card: Mapping[str, Any]) -> pd.DataFrame:
    """Columns class_id (int), label (class name), score (max probability), probabilities
    (list of floats, one per class)."""
    class_ids = np.asarray(arrays["class_id"], dtype=np.int64)  # [N]
    probabilities = np.asarray(arrays["probabilities"], dtype=np.float64)  # [N, C]
    names = list(card.get("class_names") or [])
    labels = [names[i] if 0 <= i < len(names) else str(i) for i in class_ids.tolist()]
    return pd.DataFrame(
        {
            "class_id": class_ids,
            "label": labels,
            "score": probabilities[np.arange(len(class_ids)), class_ids],
            "probabilities": [row.tolist() for row in probabilities],
        }
    )


def per_image_frame(arrays: Mapping[str, np.ndarray], card: Mapping[str, Any]) -> pd.DataFrame:
    """One column per array and one row per image; each cell is arrays[key][i] as plain
    Python (a list for boxes or a mask), so the frame serialises to JSON for serving.

    Fits detection ("boxes" [N][K, 4], "scores" [N][K], "labels" [N][K]: padded arrays or
    object arrays of per-image arrays)."""
    columns: dict[str, list[Any]] = {}
    for key, values in arrays.items():
        columns[key] = [np.asarray(item).tolist() for item in values]
    return pd.DataFrame(columns)


def detection_frame(arrays: Mapping[str, np.ndarray], card: Mapping[str, Any]) -> pd.DataFrame:
    """One row per image; columns boxes (list of [x1, y1, x2, y2] in pixels of the input
    image), scores (list), labels (list of class ids), class_names (list of names), each
    list holding that image's detections best first (padding of predict_arrays removed)."""
    names = list(card.get("class_names") or [])
    counts = [int(n) for n in np.asarray(arrays["num_detections"]).tolist()]
    rows: dict[str, list[Any]] = {"boxes": [], "scores": [], "labels": [], "class_names": []}
    for i, count in enumerate(counts):
        labels = np.asarray(arrays["labels"][i], dtype=np.int64)[:count].tolist()
        rows["boxes"].append(np.asarray(arrays["boxes"][i], dtype=np.float64)[:count].tolist())
        rows["scores"].append(np.asarray(arrays["scores"][i], dtype=np.float64)[:count].tolist())
        rows["labels"].append(labels)
        rows["class_names"].append([names[k] if 0 <= k < len(names) else str(k) for k in labels])
    return pd.DataFrame(rows)


def segmentation_frame(arrays: Mapping[str, np.ndarray], card: Mapping[str, Any]) -> pd.DataFrame:
    """One row per image; columns mask (H lists of W class indices: the image's class-index
    mask at its input resolution) and classes (names of the classes present, by index)."""
    masks = np.asarray(arrays["mask"], dtype=np.int64)  # [N, H, W]
    names = list(card.get("class_names") or [])
    present = [np.unique(mask).tolist() for mask in masks]
    return pd.DataFrame(
        {
            "mask": [mask.tolist() for mask in masks],
            "classes": [[names[i] if 0 <= i < len(names) else str(i) for i in p] for p in present],
        }
    )


# Task name -> how its predict_arrays output becomes the returned frame. A task missing
# here falls back to PER_IMAGE.
PER_IMAGE = OutputFormat(frame=per_image_frame)
OUTPUT_FORMATS: dict[str, OutputFormat] = {
    "classification": OutputFormat(
        frame=classification_frame,
        schema=Schema(
            [
                ColSpec("long", "class_id"),
                ColSpec("string", "label"),
                ColSpec("double", "score"),
                ColSpec(Array("double"), "probabilities"),
            ]
        ),
    ),
    "detection": OutputFormat(
        frame=detection_frame,
        schema=Schema(
            [
                ColSpec(Array(Array("double")), "boxes"),
                ColSpec(Array("double"), "scores"),
                ColSpec(Array("long"), "labels"),
                ColSpec(Array("string"), "class_names"),
            ]
        ),
    ),
    "segmentation": OutputFormat(
        frame=segmentation_frame,
        schema=Schema([ColSpec(Array(Array("long")), "mask"), ColSpec(Array("string"), "classes")]),
    ),
}


def signature_for(task_name: str) -> ModelSignature:
    """Outputs and params only. An input schema is left out on purpose: MLflow enforces a
    tensor schema's rank and dtype before predict runs, and no single one admits NHWC, NHW
    and HWC batches; predict validates its input itself (as_image_batch)."""
    return ModelSignature(
        inputs=None,
        outputs=OUTPUT_FORMATS.get(task_name, PER_IMAGE).schema,
        params=ParamSchema([ParamSpec("batch_size", "long", DEFAULT_BATCH_SIZE)]),
    )


class FoveaModel(mlflow.pyfunc.PythonModel):
    """Rebuilds a Fovea task model from its card and safetensors weights."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import torch
        from safetensors.torch import load_file

        from fovea.tasks import get_task

        with open(context.artifacts[ARTIFACT_CARD], encoding="utf-8") as f:
            self.card: dict[str, Any] = json.load(f)
        state_dict = load_file(context.artifacts[ARTIFACT_WEIGHTS], device="cpu")
        self.task = get_task(self.card["task"])
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = self.task.load_for_inference(self.card, state_dict).to(device).eval()

    # np.ndarray is a hint MLflow 3 knows it cannot infer a schema from: no signature is
    # inferred or enforced from it (no single tensor schema admits NHWC, NHW and HWC), and
    # MLflow does not warn about a missing hint either.
    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        batch_size = max(1, int((params or {}).get("batch_size", DEFAULT_BATCH_SIZE)))
        frame = OUTPUT_FORMATS.get(self.card["task"], PER_IMAGE).frame
        frames = []
        for positions, images in same_size_batches(model_input):
            chunks = [
                self.task.predict_arrays(self.model, self.card, images[i : i + batch_size])
                for i in range(0, len(images), batch_size)
            ]
            arrays = {key: _concat([c[key] for c in chunks]) for key in chunks[0]}
            frames.append(frame(arrays, self.card).set_axis(positions))
        if len(frames) == 1:
            return frames[0]
        return pd.concat(frames).sort_index()


def same_size_batches(model_input: Any) -> list[tuple[list[int], np.ndarray]]:
    """A batch array, or a list of single images of any sizes, as (positions in the input,
    uint8 batch NHWC or NHW) groups of one size each."""
    if not isinstance(model_input, list | tuple):
        images = as_image_batch(model_input)
        return [(list(range(len(images))), images)]
    if not model_input:
        raise ValueError("no images to predict on (empty list)")
    groups: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    for position, item in enumerate(model_input):
        try:
            [image] = as_image_batch(item)
        except ValueError as exc:
            raise ValueError(f"image {position}: {exc}") from None
        groups.setdefault(image.shape, []).append((position, image))
    return [
        ([p for p, _ in members], np.stack([image for _, image in members]))
        for members in groups.values()
    ]


def as_image_batch(model_input: Any) -> np.ndarray:
    """A uint8 batch NHWC or NHW from what a caller may send; raises ValueError naming the
    problem (float pixels, channels first, empty batch, images of different sizes)."""
    if isinstance(model_input, pd.DataFrame):
        raise ValueError(
            "FoveaModel.predict takes a numpy uint8 image array (NHWC, NHW or HWC), "
            "not a DataFrame; send {'instances': ...} when serving over HTTP"
        )
    try:
        images = np.asarray(model_input)
    except ValueError:  # a ragged nest of lists
        raise ValueError(
            "images of different sizes cannot form one array; pass a list of images "
            "(numpy arrays HWC or HW), each predicted at its own size"
        ) from None
    if images.dtype == object:
        raise ValueError(
            "images of different sizes cannot form one array; pass a list of images "
            "(numpy arrays HWC or HW), each predicted at its own size"
        )
    if images.dtype != np.uint8:
        if not np.issubdtype(images.dtype, np.integer):
            raise ValueError(f"images must be uint8 pixels 0..255, got dtype {images.dtype}")
        if images.size and (images.min() < 0 or images.max() > 255):
            raise ValueError("images must be uint8 pixels 0..255, got values outside that range")
        images = images.astype(np.uint8)
    single = images.ndim == 2 or (images.ndim == 3 and images.shape[-1] in (1, 3, 4))
    if single:  # one HW or HWC image; a 3-d array with more than 4 last values is NHW grey
        images = images[None]
    elif images.ndim == 4 and images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images look channels-first {images.shape}; send NHWC")
    elif images.ndim not in (3, 4):
        raise ValueError(f"images must be NHWC, NHW, HWC or HW, got shape {images.shape}")
    if len(images) == 0:
        raise ValueError("no images to predict on (empty batch)")
    return images


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    if len({p.shape[1:] for p in parts}) == 1 and all(p.dtype != object for p in parts):
        return np.concatenate(parts)
    # Ragged per-image arrays (detections), or padding that differs between chunks: keep
    # one object per image. Filled one by one, else numpy would try to broadcast them.
    items = [item for p in parts for item in p]
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out
