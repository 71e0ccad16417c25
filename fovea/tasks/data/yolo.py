"""YOLO (Ultralytics) txt labels: images/<split>/x.jpg beside labels/<split>/x.txt.

Class names come from data.yaml (`names`: a list or {id: name}); its `train` and `val`
entries, when they are folders inside the dataset, give the split. Paths in the yaml are
resolved against the dataset folder and must stay inside it (its `path` key is ignored: a
user's yaml must not point a worker at files outside the data roots). An image without a
label file has no objects, as in Ultralytics.

A label line is `class x1 y1 x2 y2 ...` (a polygon, coordinates normalised to [0, 1]) or
`class cx cy w h` (a box). `read_labels` returns both kinds; segmentation refuses boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from fovea.tasks.base import UserError
from fovea.tasks.data.images import IMAGE_SUFFIXES

COORDINATE_SLACK = 0.01  # tolerated overshoot of [0, 1] (rounding in exported labels)


@dataclass(frozen=True)
class YoloItem:
    image: Path
    labels: Path | None  # None: no label file, so no objects


@dataclass(frozen=True)
class YoloObject:
    class_id: int
    polygon: np.ndarray | None  # float64 [K, 2] normalised x, y; None for a box line
    box: np.ndarray | None  # float64 [4] normalised cx, cy, w, h; None for a polygon line
    line: int  # 1-based, for messages


@dataclass
class YoloDataset:
    class_names: list[str]
    train: list[YoloItem]
    val: list[YoloItem] | None  # None: no val folder; split by DataConfig.val_split


def read_yolo_dataset(root: str | Path) -> YoloDataset:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset path {root} does not exist or is not a folder")
    config_path = next((p for p in sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))), None)
    config = _read_yaml(config_path) if config_path else {}
    names = _class_names(config, config_path)
    train_dir = _split_dir(root, config.get("train"), "images/train")
    val_dir = _split_dir(root, config.get("val"), "images/val")
    if train_dir is None:
        train_dir = root / "images" if (root / "images").is_dir() else None
    if train_dir is None:
        raise UserError(
            f"dataset path {root} has no images/ folder; the yolo format expects "
            "<root>/images/<split>/ with <root>/labels/<split>/*.txt and a data.yaml"
        )
    train = _items(train_dir, exclude=val_dir)
    val = _items(val_dir) if val_dir is not None and val_dir != train_dir else None
    if not train:
        raise UserError(f"no images under {train_dir}")
    if names is None:
        names = _numeric_names(train + (val or []))
    return YoloDataset(names, train, val)


def read_labels(path: Path, *, num_classes: int) -> list[YoloObject]:
    """Every object in one label file; raises UserError naming the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read label file {path}: {exc}") from exc
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            class_id = int(fields[0])
            coords = np.array([float(v) for v in fields[1:]], dtype=np.float64)
        except ValueError:
            raise UserError(f"{path}, line {number}: not numbers: {line.strip()[:80]!r}") from None
        if not 0 <= class_id < num_classes:
            raise UserError(
                f"{path}, line {number}: class {class_id} outside 0..{num_classes - 1} "
                f"({num_classes} names)"
            )
        if not np.isfinite(coords).all() or (
            coords.size
            and (coords.min() < -COORDINATE_SLACK or coords.max() > 1 + COORDINATE_SLACK)
        ):
            raise UserError(
                f"{path}, line {number}: coordinates must be normalised to [0, 1], got "
                f"{coords.min():.3g}..{coords.max():.3g}"
            )
        coords = coords.clip(0.0, 1.0)
        if len(coords) == 4:
            objects.append(YoloObject(class_id, None, coords, number))
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            objects.append(YoloObject(class_id, coords.reshape(-1, 2), None, number))
        else:
            raise UserError(
                f"{path}, line {number}: expected 4 values (a box) or an even number >= 6 "
                f"(a polygon) after the class, got {len(coords)}"
            )
    return objects


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping with 'names', 'train' and 'val'")
    return data


def _class_names(config: dict, path: Path | None) -> list[str] | None:
    names = config.get("names")
    if names is None:
        return None
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise UserError(f"{path}: 'names' keys must be class ids 0..N-1") from None
        if ids != list(range(len(ids))):
            raise UserError(f"{path}: 'names' keys must be the class ids 0..{len(ids) - 1}")
        return [str(names[k] if k in names else names[str(k)]) for k in ids]
    raise UserError(f"{path}: 'names' must be a list or a mapping, got {type(names).__name__}")


def _split_dir(root: Path, entry: object, default: str) -> Path | None:
    """The folder a yaml split entry names, resolved inside `root`; else the default."""
    if isinstance(entry, str) and entry.strip():
        candidate = (root / entry).resolve()
        if not candidate.is_relative_to(root.resolve()):
            raise UserError(f"{root}: the yaml split {entry!r} points outside the dataset")
        if candidate.is_dir():
            return candidate
        if candidate.is_file():
            raise UserError(
                f"{root}: the yaml split {entry!r} is a file list; use image folders instead"
            )
    fallback = root / default
    return fallback if fallback.is_dir() else None


def _items(image_dir: Path, *, exclude: Path | None = None) -> list[YoloItem]:
    items = []
    for image in sorted(image_dir.rglob("*")):
        if image.suffix.lower() not in IMAGE_SUFFIXES or not image.is_file():
            continue
        if exclude is not None and image.resolve().is_relative_to(exclude.resolve()):
            continue
        if any(part.startswith(".") for part in image.relative_to(image_dir).parts):
            continue
        labels = _label_path(image)
        items.append(YoloItem(image, labels if labels.is_file() else None))
    return items


def _label_path(image: Path) -> Path:
    """.../images/<rest>/x.jpg -> .../labels/<rest>/x.txt (the last "images" component)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _numeric_names(items: list[YoloItem]) -> list[str]:
    top = -1
    for item in items:
        if item.labels is None:
            continue
        for line in item.labels.read_text(encoding="utf-8", errors="replace").splitlines():
            fields = line.split()
            if fields and fields[0].isdigit():
                top = max(top, int(fields[0]))
    return [str(i) for i in range(top + 1)]
