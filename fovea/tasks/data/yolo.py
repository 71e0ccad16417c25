"""YOLO (Ultralytics) txt labels: images/<split>/x.jpg beside labels/<split>/x.txt.

Torch-free. One parser for every task: it finds the images, their label files and the
class names, and reads label lines into raw objects (`read_labels`); detection takes boxes
(a polygon's bounding box), segmentation rasterises polygons and refuses boxes.

Class names come from the dataset's yaml (`names`: a list or {id: name}); its `train` and
`val` entries, when they are folders inside the dataset, give the split. Paths in the yaml
are resolved against the dataset folder and must stay inside it (its `path` key is ignored:
a user's yaml must not point a worker at files outside the data roots).

Datasets as their publishers ship them are accepted, with a note for each oddity (the task
turns notes into job events, the API shows them at submit):
- `train` and `val` naming the same folder (Ultralytics' coco128.yaml, coco128-seg.yaml):
  one set, split by DataConfig.val_split;
- no yaml or no `names`: classes named by their ids "0".."N-1" (N = 1 + the largest id);
- images without a label file: no objects (as in Ultralytics), counted;
- label files without an image: ignored, counted.

A label line is `class x1 y1 x2 y2 ...` (a polygon) or `class cx cy w h` (a box), with
coordinates normalised to [0, 1]. A class id without a name is dropped and counted
("unknown_class_dropped"); a line that is not numbers, has a wrong count of values, or
coordinates outside [0, 1] fails with the file and line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from fovea.tasks.data.files import (
    IMAGE_SUFFIXES,
    Note,
    RootGuard,
    image_files,
    require_folder,
)
from fovea.tasks.errors import UserError

COORDINATE_SLACK = 0.01  # tolerated overshoot of [0, 1] (rounding in exported labels)


@dataclass(frozen=True)
class YoloItem:
    image: Path
    labels: Path | None  # None: no label file, so no objects
    is_val: bool = False


@dataclass(frozen=True)
class YoloObject:
    class_id: int
    polygon: np.ndarray | None  # float64 [K, 2] normalised x, y; None for a box line
    box: np.ndarray | None  # float64 [4] normalised cx, cy, w, h; None for a polygon line
    line: int  # 1-based, for messages

    def bounds(self) -> np.ndarray:
        """float64 [4] normalised x1, y1, x2, y2 (a polygon's bounding box)."""
        if self.box is not None:
            cx, cy, w, h = self.box
            return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        assert self.polygon is not None
        return np.concatenate([self.polygon.min(axis=0), self.polygon.max(axis=0)])


@dataclass
class YoloDataset:
    class_names: list[str]
    items: list[YoloItem]
    has_val_split: bool  # a distinct val folder gave the validation split
    notes: list[Note] = field(default_factory=list)
    config: Path | None = None  # the yaml read, if any


def read_yolo_dataset(root: str | Path, *, guard: RootGuard | None = None) -> YoloDataset:
    root = require_folder(root)
    guard = guard or RootGuard(None)
    config_path = next((p for p in sorted(root.glob("*.yaml")) + sorted(root.glob("*.yml"))), None)
    config = _read_yaml(guard(config_path)) if config_path else {}
    notes: list[Note] = []
    train_dir = _split_dir(root, config.get("train"), "images/train")
    val_dir = _split_dir(root, config.get("val"), "images/val")
    if train_dir is None:
        train_dir = root / "images" if (root / "images").is_dir() else None
    if train_dir is None:
        raise UserError(
            f"dataset path {root} has no images/ folder; the yolo format expects "
            "<root>/images/<split>/ with <root>/labels/<split>/*.txt and a data.yaml"
        )
    if val_dir is not None and val_dir.resolve() == train_dir.resolve():
        notes.append(
            Note(
                "same_train_val_folder",
                f"the yaml's train and val both name {val_dir.relative_to(root)}; using it "
                "as one set split by dataset.val_split",
            )
        )
        val_dir = None
    items = _items(train_dir, exclude=val_dir, is_val=False)
    if val_dir is not None:
        items += _items(val_dir, is_val=True)
    if not any(not item.is_val for item in items):
        raise UserError(f"no images under {train_dir}")
    for item in items:
        guard(item.image)
        if item.labels is not None:
            guard(item.labels)
    names = _class_names(config, config_path)
    if names is None:
        names = _numeric_names(items)
        where = f"{config_path.name} has no 'names'" if config_path else "no data.yaml"
        notes.append(
            Note(
                "class_names_from_ids",
                f"{where}: the {len(names)} classes are named by their ids 0..{len(names) - 1}",
                len(names),
            )
        )
    notes += _pairing_notes(items, [d for d in (train_dir, val_dir) if d is not None])
    return YoloDataset(names, items, val_dir is not None, notes, config_path)


def read_labels(path: Path, *, num_classes: int, counts: Counter) -> list[YoloObject]:
    """Every object in one label file with a known class; objects of an unknown class are
    counted in `counts["unknown_class_dropped"]`. Raises UserError naming file and line."""
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
            obj = YoloObject(class_id, None, coords, number)
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            obj = YoloObject(class_id, coords.reshape(-1, 2), None, number)
        else:
            raise UserError(
                f"{path}, line {number}: expected 4 values (cx cy w h) or an even number >= 6 "
                f"(a polygon) after the class, got {len(coords)}"
            )
        if 0 <= class_id < num_classes:
            objects.append(obj)
        else:
            counts["unknown_class_dropped"] += 1
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
            return root / candidate.relative_to(root.resolve())
        if candidate.is_file():
            raise UserError(
                f"{root}: the yaml split {entry!r} is a file list; use image folders instead"
            )
    fallback = root / default
    return fallback if fallback.is_dir() else None


def _items(image_dir: Path, *, is_val: bool, exclude: Path | None = None) -> list[YoloItem]:
    items = []
    for image in image_files(image_dir):
        if exclude is not None and image.resolve().is_relative_to(exclude.resolve()):
            continue
        labels = label_path(image)
        items.append(YoloItem(image, labels if labels.is_file() else None, is_val))
    return items


def label_path(image: Path) -> Path:
    """.../images/<rest>/x.jpg -> .../labels/<rest>/x.txt (the last "images" component)."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def _pairing_notes(items: list[YoloItem], image_dirs: list[Path]) -> list[Note]:
    notes = []
    unlabelled = sum(item.labels is None for item in items)
    if unlabelled:
        notes.append(
            Note(
                "images_without_labels",
                f"{unlabelled} of {len(items)} images have no label file: they count as "
                "images with no objects",
                unlabelled,
            )
        )
    used = {item.labels for item in items if item.labels is not None}
    orphan_files: set[Path] = set()
    for image_dir in image_dirs:
        label_dir = label_path(image_dir / "x.jpg").parent
        if label_dir.is_dir() and label_dir != image_dir:
            orphan_files.update(p for p in label_dir.rglob("*.txt") if p not in used)
    orphans = len(orphan_files)
    if orphans:
        notes.append(
            Note(
                "labels_without_images",
                f"{orphans} label files have no image beside them (looked for "
                f"{', '.join(sorted(IMAGE_SUFFIXES))}); they are ignored",
                orphans,
            )
        )
    return notes


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
