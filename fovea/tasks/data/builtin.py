"""Built-in datasets that ship with installed packages: no download, no data root needed.

`BUILTINS` is the explicit list. Each entry names the task whose data structure its loader
returns, so a later `shapes` (boxes and masks for detection and segmentation) sits beside
`digits` and a classification job asking for it gets a clear error instead of a crash.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from fovea.tasks.base import UserError
from fovea.tasks.data.cache import (
    LabelledImages,
    SplitImages,
    resize_and_center_crop,
    resize_size_for,
    stratified_split,
)

URI_PREFIX = "builtin://"


def load_digits(*, image_size: int, val_split: float, seed: int) -> SplitImages:
    """scikit-learn's `load_digits`: 1,797 8x8 grey digits (values 0..16), 10 classes."""
    from sklearn.datasets import load_digits as sklearn_digits  # sklearn imports slowly

    digits = sklearn_digits()
    grey = torch.as_tensor(digits.images * (255.0 / 16.0)).round().to(torch.uint8)  # [N, 8, 8]
    rgb = grey.unsqueeze(1).expand(-1, 3, -1, -1)  # [N, 3, 8, 8]
    images = resize_and_center_crop(rgb, resize_size_for(image_size))
    labels = torch.as_tensor(digits.target, dtype=torch.long)
    everything = LabelledImages(images, labels, [str(d) for d in range(10)])
    train_idx, val_idx = stratified_split(labels.tolist(), val_fraction=val_split, seed=seed)
    stats = {
        "classes": 10,
        "images": len(everything),
        "train_images": len(train_idx),
        "val_images": len(val_idx),
        "corrupt_images_skipped": 0,
    }
    return SplitImages(everything.subset(train_idx), everything.subset(val_idx), stats)


@dataclass(frozen=True)
class Builtin:
    task: str  # the task whose data structure `load` returns
    description: str
    load: Callable[..., Any]  # keyword-only: image_size, val_split, seed


BUILTINS: dict[str, Builtin] = {
    "digits": Builtin(
        task="classification",
        description="scikit-learn handwritten digits, 1,797 8x8 grey images, 10 classes",
        load=load_digits,
    ),
}


def get_builtin(uri: str, *, task: str) -> Builtin:
    """The builtin dataset named by "builtin://<name>", checked to fit `task`."""
    valid = sorted(name for name, builtin in BUILTINS.items() if builtin.task == task)
    listing = ", ".join(URI_PREFIX + name for name in valid) or "none"
    if not uri.startswith(URI_PREFIX):
        raise UserError(f"builtin datasets are named {URI_PREFIX}<name>, got {uri!r}")
    name = uri.removeprefix(URI_PREFIX).strip("/")
    builtin = BUILTINS.get(name)
    if builtin is None:
        raise UserError(f"unknown builtin dataset {uri!r}; valid for {task}: {listing}")
    if builtin.task != task:
        raise UserError(
            f"builtin dataset {uri!r} is for {builtin.task}, not {task}; valid: {listing}"
        )
    return builtin
