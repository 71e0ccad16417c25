"""Decode-once image cache: every image decoded and resized a single time into a uint8 tensor.

Why: on a 2-core CPU worker, decoding a JPEG and resizing it each epoch costs more than a
small model's forward/backward pass. Decoding once up front (in a thread pool: PIL and
torch release the GIL) and keeping [N, 3, S, S] uint8 in memory makes every later epoch
pay only for tensor augmentations.

The trade-offs, accepted on purpose:
- memory: N * 3 * S^2 bytes (4,317 flowers at S=147: 280 MB; 10,000 images at S=257:
  2 GB); `MAX_CACHE_BYTES` refuses a dataset that would not fit with a clear UserError.
- images are cut to a centred square at S = int(image_size * RESIZE_RATIO) once, so
  random crops never see the periphery of wide or tall images; S is slightly larger than
  image_size so random-resized crops keep some room and eval keeps the usual centre crop
  (224 from 257, the 0.875 ratio of the torchvision references).
- resolution is fixed at cache time: multi-scale training would need a re-decode.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from fovea.tasks.base import UserError
from fovea.tasks.data.images import CorruptImageError, ImageTooLargeError, open_image

RESIZE_RATIO = 1.15
MAX_CACHE_BYTES = 16 * 2**30


def resize_size_for(image_size: int) -> int:
    """Side S of the cached squares for a training image_size."""
    return int(image_size * RESIZE_RATIO)


@dataclass
class LabelledImages:
    images: torch.Tensor  # [N, 3, S, S] uint8
    labels: torch.Tensor  # [N] int64, indices into class_names
    class_names: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: Sequence[int]) -> LabelledImages:
        index = torch.as_tensor(indices, dtype=torch.long)
        return LabelledImages(self.images[index], self.labels[index], self.class_names)


@dataclass
class SplitImages:
    train: LabelledImages
    val: LabelledImages
    stats: dict[str, int]  # counters a user should see (images, skipped files, ...)


@dataclass
class Rejected:
    path: str
    reason: str
    too_large: bool  # else corrupt


S = TypeVar("S")
T = TypeVar("T")


def decode_parallel(
    decode: Callable[[S], T | Rejected], sources: Sequence[S]
) -> tuple[list[int], list[T], list[Rejected]]:
    """Run `decode` over `sources` on a small thread pool (PIL and torch release the GIL
    while decoding and resizing); returns the kept positions, their values in order, and
    the rejections for the caller to count and report."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        outcomes = list(pool.map(decode, sources))
    kept = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, Rejected)]
    rejected = [outcome for outcome in outcomes if isinstance(outcome, Rejected)]
    return kept, [outcomes[i] for i in kept], rejected  # type: ignore[misc]


def skipped_counts(rejected: Sequence[Rejected]) -> dict[str, int]:
    """The job-event counters of files left out: unreadable vs over the pixel limit."""
    return {
        "corrupt_images_skipped": sum(not r.too_large for r in rejected),
        "oversized_images_skipped": sum(r.too_large for r in rejected),
    }


def resize_and_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> [..., 3, size, size]: short side to `size`, then centre crop.

    Also used at inference (predict_arrays), so train-time caching and serving resize alike.
    """
    if images.shape[-2:] != (size, size):
        images = F.resize(images, [size], antialias=True)
        images = F.center_crop(images, [size, size])
    return images


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, H, W]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def decode_files(
    paths: Sequence[Path], *, size: int, max_pixels: int
) -> tuple[torch.Tensor, list[int], list[Rejected]]:
    """Decode `paths` into uint8 [K, 3, size, size]; also returns the K kept positions.

    Unreadable and oversized files are not errors here: they come back in the rejected list
    so the caller can skip, count and report them.
    """
    check_cache_fits(len(paths), size)
    cache = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)

    def decode(position: int) -> Rejected | None:  # None: decoded into the cache
        path = paths[position]
        try:
            image = open_image(path, max_pixels=max_pixels, draft_size=size)
        except ImageTooLargeError as exc:
            return Rejected(str(path), exc.reason, too_large=True)
        except CorruptImageError as exc:
            return Rejected(str(path), exc.reason, too_large=False)
        cache[position] = resize_and_center_crop(pil_to_tensor(image), size)
        return None

    kept, _, rejected = decode_parallel(decode, range(len(paths)))
    return cache[kept] if len(kept) < len(paths) else cache, kept, rejected


def check_cache_fits(count: int, size: int) -> None:
    needed = count * 3 * size * size
    if needed > MAX_CACHE_BYTES:
        raise UserError(
            f"{count:,} images at {size}x{size} would need {needed / 2**30:.1f} GiB of memory "
            f"(limit {MAX_CACHE_BYTES / 2**30:.0f} GiB); lower train.image_size or use "
            "fewer images"
        )


def stratified_split(
    labels: Sequence[int], *, val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Deterministic per-class split: round(n * val_fraction) of each class to validation.

    A class with at least two images keeps at least one on each side; a single image goes
    to training. Both index lists come back sorted.
    """
    labels_array = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train: list[int] = []
    val: list[int] = []
    for label in np.unique(labels_array):  # sorted, so the rng draws in a fixed order
        members = rng.permutation(np.flatnonzero(labels_array == label))
        n_val = 0
        if len(members) >= 2:
            n_val = min(max(round(len(members) * val_fraction), 1), len(members) - 1)
        val.extend(members[:n_val].tolist())
        train.extend(members[n_val:].tolist())
    return sorted(train), sorted(val)


def letterbox_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) of an image resized so its long side is `size`, aspect ratio kept."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def letterbox(images: torch.Tensor, size: int, *, fill: int = 0) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> [..., 3, size, size]: long side to `size` (antialiased),
    padded at the bottom and right with `fill`. The whole image stays in view, which
    dense tasks need; also used at inference, so training and serving resize alike."""
    height, width = images.shape[-2:]
    h, w = letterbox_size(height, width, size)
    if (h, w) != (height, width):
        images = F.resize(images, [h, w], antialias=True)
    return torch.nn.functional.pad(images, (0, size - w, 0, size - h), value=fill)


def letterbox_mask(masks: torch.Tensor, size: int, *, fill: int) -> torch.Tensor:
    """Integer label maps [..., H, W] -> [..., size, size] with the geometry of `letterbox`:
    nearest-neighbour at pixel centres (labels are never blended), padding = `fill`."""
    height, width = masks.shape[-2:]
    h, w = letterbox_size(height, width, size)
    if (h, w) != (height, width):
        rows = ((torch.arange(h) + 0.5) * (height / h)).long().clamp_(max=height - 1)
        cols = ((torch.arange(w) + 0.5) * (width / w)).long().clamp_(max=width - 1)
        masks = masks[..., rows[:, None], cols[None, :]]
    padded = masks.new_full((*masks.shape[:-2], size, size), fill)
    padded[..., :h, :w] = masks
    return padded
