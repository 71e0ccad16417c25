"""What a model saw and said, per image: the one profile code for training and serving.

At the end of training the worker profiles the validation images (the model version's
frozen reference for drift); a serving replica profiles every live image with the same
`profile_images`, so a shift between the two is the inputs' and never the code's
(train-serve parity).

A profile holds, per image:
- statistics of what the model sees (`Preprocess.fit`'s square, padding excluded; the size
  of the original): width, height, aspect, brightness, contrast, saturation, sharpness
  (variance of the Laplacian), mean red/green/blue;
- the model's own embedding: backbone features pooled to one vector, captured by a hook
  during the same forward pass that predicts (no second pass);
- a prediction summary: class, confidence, entropy (classification); number of boxes,
  mean score, boxes per class (detection); pixel fraction per class (segmentation).

The frozen form of a validation profile is a `Reference` (reference.py, torch-free).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fovea.tasks.base import DataBundle, DataConfig, Task
from fovea.tasks.data.images import CorruptImageError, ImageTooLargeError, open_image
from fovea.tasks.data.split import evenly_spaced
from fovea.tasks.preprocess import Preprocess, as_nchw_rgb
from fovea.tasks.reference import MAX_REFERENCE, STATISTICS, Reference, build_reference

_LUMA = torch.tensor([0.299, 0.587, 0.114])


@dataclass(frozen=True)
class EmbeddingSite:
    """Where a model's embedding is read: a module's input (a classifier head's features)
    or its output (an encoder's feature maps), and how to pool that to [B, D]."""

    module: nn.Module
    on_input: bool
    pool: Callable[[Any], torch.Tensor]


@dataclass
class Profile:
    outputs: list[dict[str, np.ndarray]]  # per image: predict_arrays' arrays, sliced
    stats: dict[str, np.ndarray]  # STATISTICS -> float32 [N]
    embeddings: np.ndarray  # float32 [N, D]
    summary: list[dict[str, Any]]  # per image, JSON-able

    def __len__(self) -> int:
        return len(self.embeddings)


def image_statistics(
    squares: torch.Tensor, *, height: int, width: int, content: tuple[int, int]
) -> dict[str, np.ndarray]:
    """uint8 squares [N, 3, S, S] of originals `height` x `width`, the image in the top-left
    `content` (h, w) -> STATISTICS -> float32 [N]. Channels-first torch reductions: the
    same numbers for references and live images, at a few ms per batch."""
    h, w = content
    pixels = squares[..., :h, :w].float() / 255.0  # [N, 3, h, w]
    luma = torch.einsum("nchw,c->nhw", pixels, _LUMA)  # [N, h, w]
    high, low = pixels.amax(dim=1), pixels.amin(dim=1)
    saturation = torch.where(high > 0, (high - low) / high.clamp(min=1e-12), 0.0)
    channels = pixels.mean(dim=(2, 3))  # [N, 3]
    count = len(pixels)
    values = {
        "brightness": luma.mean(dim=(1, 2)),
        "contrast": luma.std(dim=(1, 2), unbiased=False),
        "saturation": saturation.mean(dim=(1, 2)),
        "sharpness": _laplacian_variance(luma * 255.0),
        "mean_r": channels[:, 0],
        "mean_g": channels[:, 1],
        "mean_b": channels[:, 2],
    }
    sizes = {
        "width": np.full(count, width, dtype=np.float32),
        "height": np.full(count, height, dtype=np.float32),
        "aspect": np.full(count, width / height, dtype=np.float32),
    }
    return {**sizes, **{name: value.numpy().astype(np.float32) for name, value in values.items()}}


def _laplacian_variance(luma: torch.Tensor) -> torch.Tensor:
    """[N, h, w] in 0..255 -> variance of the 4-neighbour Laplacian [N] (0 below 3x3)."""
    if luma.shape[1] < 3 or luma.shape[2] < 3:
        return torch.zeros(len(luma))
    laplacian = (
        luma[:, :-2, 1:-1] + luma[:, 2:, 1:-1] + luma[:, 1:-1, :-2] + luma[:, 1:-1, 2:]
        - 4.0 * luma[:, 1:-1, 1:-1]
    )  # fmt: skip
    return laplacian.var(dim=(1, 2), unbiased=False)


@contextmanager
def captured_embeddings(site: EmbeddingSite) -> Iterator[list[torch.Tensor]]:
    """Collects site.pool(...) of every forward of site.module while the block runs."""
    chunks: list[torch.Tensor] = []

    def on_input(_module: nn.Module, inputs: Any) -> None:
        chunks.append(site.pool(inputs).detach().float().cpu())

    def on_output(_module: nn.Module, _inputs: Any, output: Any) -> None:
        chunks.append(site.pool(output).detach().float().cpu())

    if site.on_input:
        handle = site.module.register_forward_pre_hook(on_input)
    else:
        handle = site.module.register_forward_hook(on_output)
    try:
        yield chunks
    finally:
        handle.remove()


def profile_images(
    task: Task, model: nn.Module, card: Mapping[str, Any], images: np.ndarray
) -> Profile:
    """Predict and profile a uint8 batch of one size (NHWC or NHW)."""
    site = task.embedding_site(model, card)  # type: ignore[attr-defined]
    with captured_embeddings(site) as chunks:
        outputs = task.predict_arrays(model, card, images)
    pixels = as_nchw_rgb(images)
    height, width = pixels.shape[-2:]
    preprocess = Preprocess.from_card(card)
    content = (
        preprocess.content_size(height, width)
        if preprocess.geometry == "letterbox"
        else (preprocess.square_size, preprocess.square_size)
    )
    stats = image_statistics(preprocess.fit(pixels), height=height, width=width, content=content)
    embeddings = torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), np.float32)
    summary = SUMMARIES[task.name](outputs, list(card["class_names"]))
    per_image = [{k: v[i] for k, v in outputs.items()} for i in range(len(pixels))]
    return Profile(per_image, stats, embeddings, summary)


def profile_image_list(
    task: Task,
    model: nn.Module,
    card: Mapping[str, Any],
    images: Sequence[np.ndarray],
    *,
    batch: int = 32,
) -> Profile:
    """`profile_images` over images of any sizes (grouped by size), in the list's order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for position, image in enumerate(images):
        groups.setdefault(image.shape, []).append(position)
    parts: list[tuple[list[int], Profile]] = []
    for positions in groups.values():
        for start in range(0, len(positions), batch):
            chosen = positions[start : start + batch]
            stacked = np.stack([images[p] for p in chosen])
            parts.append((chosen, profile_images(task, model, card, stacked)))
    return _merge(parts)


def _merge(parts: list[tuple[list[int], Profile]]) -> Profile:
    order = np.argsort(np.concatenate([np.asarray(p, dtype=np.int64) for p, _ in parts]))
    stats = {
        name: np.concatenate([profile.stats[name] for _, profile in parts])[order]
        for name in STATISTICS
    }
    embeddings = np.concatenate([profile.embeddings for _, profile in parts])[order]
    summaries = [row for _, profile in parts for row in profile.summary]
    outputs = [row for _, profile in parts for row in profile.outputs]
    return Profile([outputs[i] for i in order], stats, embeddings, [summaries[i] for i in order])


# ---- prediction summaries: per task, what the drift tests compare --------------------------


def _classification_summary(
    outputs: Mapping[str, np.ndarray], names: list[str]
) -> list[dict[str, Any]]:
    probabilities = np.asarray(outputs["probabilities"], dtype=np.float64)  # [N, C]
    entropy = -(probabilities * np.log(np.clip(probabilities, 1e-12, 1.0))).sum(axis=1)
    return [
        {
            "class_id": int(k),
            "label": names[int(k)] if int(k) < len(names) else str(k),
            "confidence": float(p[int(k)]),
            "entropy": float(e),
        }
        for k, p, e in zip(outputs["class_id"], probabilities, entropy, strict=True)
    ]


def _detection_summary(outputs: Mapping[str, np.ndarray], names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for i, count in enumerate(np.asarray(outputs["num_detections"]).tolist()):
        labels = np.asarray(outputs["labels"][i])[: int(count)]
        scores = np.asarray(outputs["scores"][i], dtype=np.float64)[: int(count)]
        counts = np.bincount(labels, minlength=len(names)) if count else np.zeros(len(names))
        rows.append(
            {
                "n_boxes": int(count),
                "mean_score": float(scores.mean()) if count else 0.0,
                "class_counts": {
                    n: int(c) for n, c in zip(names, counts.tolist(), strict=True) if c
                },
            }
        )
    return rows


def _segmentation_summary(
    outputs: Mapping[str, np.ndarray], names: list[str]
) -> list[dict[str, Any]]:
    rows = []
    for mask in outputs["mask"]:
        counts = np.bincount(np.asarray(mask).ravel(), minlength=len(names))[: len(names)]
        fractions = counts / max(int(counts.sum()), 1)
        rows.append({"class_fractions": dict(zip(names, fractions.round(6).tolist(), strict=True))})
    return rows


SUMMARIES: dict[str, Callable[[Mapping[str, np.ndarray], list[str]], list[dict[str, Any]]]] = {
    "classification": _classification_summary,
    "detection": _detection_summary,
    "segmentation": _segmentation_summary,
}


# ---- the reference at the end of training ----------------------------------------------------


def reference_images(
    config: DataConfig, data: DataBundle, *, limit: int = MAX_REFERENCE
) -> list[np.ndarray]:
    """Up to `limit` validation images, evenly spread, as live images arrive: the original
    files (uint8 HWC), or for builtin datasets the generated images the model saw."""
    positions = evenly_spaced(len(data.val_files), limit)
    if config.uri.startswith("builtin://"):
        images = data.val.data.images  # type: ignore[attr-defined]  # [N, 3, S, S] uint8
        return [images[p].permute(1, 2, 0).numpy() for p in positions]
    root = Path(config.uri)
    found = []
    for position in positions:
        try:
            picture = open_image(
                root / data.val_files[position], max_pixels=config.max_image_pixels
            )
        except (CorruptImageError, ImageTooLargeError):
            continue  # skipped at training time too
        found.append(np.asarray(picture, dtype=np.uint8))
    return found


def reference_profile(
    task: Task,
    card: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    images: Sequence[np.ndarray],
) -> Reference:
    """The frozen drift reference of a trained model: its profile of `images`."""
    model = task.load_for_inference(card, state_dict)
    profile = profile_image_list(task, model, card, images)
    meta = {
        "task": task.name,
        "class_names": list(card["class_names"]),
        "source": "validation split",
        "card": dict(card),
    }
    return build_reference(profile, meta=meta)
