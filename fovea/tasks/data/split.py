"""The one train/validation split every task uses.

In order of precedence:
1. `val_files` (a frozen evaluation set, e.g. a registered model's): validation is exactly
   the listed files that are present; everything else trains; listed files that are gone
   are counted ("val_files_missing").
2. The dataset's own split (`is_val`: its val/ folder, val JSON, ImageSets list).
3. A seeded split by `val_fraction`: stratified by class when `labels` are given
   (classification: round(n * fraction) of each class, at least one of each class with two
   images or more on each side), otherwise a seeded permutation.
Indices come back sorted; both sides must be non-empty.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from fovea.tasks.errors import UserError

if TYPE_CHECKING:
    from fovea.tasks.base import DataConfig


@dataclass
class Split:
    train: list[int]
    val: list[int]
    stats: dict[str, int] = field(default_factory=dict)


def split_records(
    *,
    keys: Sequence[str],
    uri: str,
    val_fraction: float,
    seed: int,
    val_files: Collection[str] | None = None,
    is_val: Sequence[bool] | None = None,
    labels: Sequence[int] | None = None,
) -> Split:
    """Split the records named by `keys` (relative paths, or "#<index>")."""
    count = len(keys)
    stats: dict[str, int] = {}
    if val_files is not None:
        wanted = set(val_files)
        val = [i for i, key in enumerate(keys) if key in wanted]
        train = [i for i, key in enumerate(keys) if key not in wanted]
        stats["val_files_missing"] = len(wanted - set(keys))
    elif is_val is not None:
        val = [i for i, flag in enumerate(is_val) if flag]
        train = [i for i, flag in enumerate(is_val) if not flag]
    elif labels is not None:
        train, val = stratified_split(labels, val_fraction=val_fraction, seed=seed)
    else:
        if count < 2:
            raise UserError(f"dataset {uri} has {count} usable image; need >= 2 to split")
        order = np.random.default_rng(seed).permutation(count)
        n_val = min(max(round(count * val_fraction), 1), count - 1)
        val, train = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    if not train or not val:
        raise UserError(
            f"dataset {uri}: {len(train)} training and {len(val)} validation images after "
            "skipping unreadable files; both splits need at least one"
        )
    stats.update(images=count, train_images=len(train), val_images=len(val))
    return Split(train, val, stats)


def split_for(
    config: DataConfig,
    *,
    keys: Sequence[str],
    is_val: Sequence[bool] | None = None,
    labels: Sequence[int] | None = None,
) -> Split:
    """`split_records` with the dataset's config: its uri, val_split, seed, val_files."""
    return split_records(
        keys=keys,
        uri=config.uri,
        val_fraction=config.val_split,
        seed=config.seed,
        val_files=config.val_files,
        is_val=is_val,
        labels=labels,
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


def evenly_spaced(total: int, count: int) -> list[int]:
    """`count` positions spread evenly over range(total), first and last included: the
    samples a figure shows (they cover every region of a sorted dataset)."""
    count = min(count, total)
    return sorted({int(p) for p in np.linspace(0, total - 1, count).round()}) if count else []
