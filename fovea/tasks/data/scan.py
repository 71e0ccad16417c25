"""A cheap structural scan of a dataset folder, for the API to run at submit.

Torch-free and decode-free: it lists files and reads the small structural files (a YOLO
yaml, a COCO JSON up to `MAX_JSON_BYTES`), so a wrong layout is refused in the submit's
422, naming what is missing, instead of minutes later in a worker, and what is odd but
usable comes back as notes for the job's events. The worker runs the full parsers again as
the last line of defence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from fovea.tasks.data.coco import annotation_files, read_coco_dataset
from fovea.tasks.data.files import Note, RootGuard, require_folder
from fovea.tasks.data.imagefolder import read_imagefolder
from fovea.tasks.data.masks import find_mask_pairs
from fovea.tasks.data.voc import find_voc_folders
from fovea.tasks.data.yolo import read_yolo_dataset
from fovea.tasks.errors import UserError

MAX_JSON_BYTES = 50 * 2**20  # larger COCO JSONs are only checked for presence at submit


@dataclass
class Scan:
    images: int | None = None  # None: not counted (a large COCO JSON)
    classes: int | None = None
    notes: list[Note] = field(default_factory=list)


def scan_dataset(
    *, task: str, dataset_format: str, root: str | Path, roots: tuple[str, ...] | None = None
) -> Scan:
    """The layout of `root` as `dataset_format`; UserError naming what is missing."""
    root = require_folder(root)
    guard = RootGuard(roots)
    if dataset_format not in SCANS:
        raise UserError(f"dataset.format {dataset_format!r} has no folder layout to scan")
    scan = SCANS[dataset_format](root, guard)
    if scan.images == 0:
        raise UserError(f"dataset path {root} holds no images for the {dataset_format} format")
    minimum = 2 if task in ("classification", "segmentation") else 1
    if scan.classes is not None and scan.classes < minimum:
        raise UserError(f"dataset {root} names {scan.classes} class(es); {task} needs >= {minimum}")
    return scan


def _imagefolder(root: Path, guard: RootGuard) -> Scan:
    dataset = read_imagefolder(root, guard=guard)
    return Scan(len(dataset.images), len(dataset.class_names))


def _yolo(root: Path, guard: RootGuard) -> Scan:
    dataset = read_yolo_dataset(root, guard=guard)
    return Scan(len(dataset.items), len(dataset.class_names), list(dataset.notes))


def _voc(root: Path, guard: RootGuard) -> Scan:
    annotations, _, notes = find_voc_folders(root)
    count = sum(1 for _ in annotations.glob("*.xml"))
    if not count:
        raise UserError(f"{annotations} holds no .xml annotation files")
    return Scan(count, None, notes)


def _coco(root: Path, guard: RootGuard) -> Scan:
    files = annotation_files(root)
    if not files:
        raise UserError(
            f"dataset path {root} has no COCO JSON; the coco format expects "
            "<root>/annotations/instances_<split>.json and the images under <root>/images/"
        )
    if sum(f.stat().st_size for f in files) > MAX_JSON_BYTES:
        return Scan(None, None, [Note("large_annotations", "COCO JSON checked in the worker")])
    dataset = read_coco_dataset(root, guard=guard)
    missing = sum(not item.image.is_file() for item in dataset.items)
    notes = []
    if missing:
        notes.append(
            Note(
                "missing_images",
                f"{missing} of {len(dataset.items)} images the COCO JSON lists are not in the "
                "folder; they will be skipped",
                missing,
            )
        )
    if dataset.counts["unknown_class_dropped"]:
        count = dataset.counts["unknown_class_dropped"]
        notes.append(
            Note(
                "unknown_class",
                f"{count} annotations name a category the JSON does not list; dropped",
                count,
            )
        )
    return Scan(len(dataset.items) - missing, len(dataset.category_names), notes)


def _masks(root: Path, guard: RootGuard) -> Scan:
    folders = find_mask_pairs(root, guard=guard)
    pairs = len(folders.train) + len(folders.val or [])
    notes = []
    if folders.images_without_mask:
        count = len(folders.images_without_mask)
        notes.append(
            Note("images_without_mask", f"{count} images have no mask; they are skipped", count)
        )
    if not pairs:
        raise UserError(f"dataset path {root} has no image with a matching mask")
    return Scan(pairs, None, notes)


SCANS = {
    "imagefolder": _imagefolder,
    "yolo": _yolo,
    "voc": _voc,
    "coco": _coco,
    "masks": _masks,
}
