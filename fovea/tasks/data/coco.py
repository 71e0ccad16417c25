"""COCO JSON: annotations/instances_<split>.json beside the images. One parser for every task.

Torch-free. Returns raw records: each image with its size and its annotations as the JSON
has them; detection takes their boxes, segmentation their polygons and RLE (`semantic_mask`).
The same dataset gives the same classes and the same errors whatever the task:
- classes are the `categories` of every JSON, ordered by id (a category named differently
  in two files is an error);
- an unparseable file fails with its path and line, a missing key with its path and entry;
- annotations of a category the JSON does not list are dropped and counted
  ("unknown_class_dropped"), as are crowd regions by tasks that cannot use them.

Images are looked up by `file_name` under images/, images/<split>/, <split>/ and the root,
where <split> is the JSON's name without "instances_" (train2017). With one JSON whose name
says val and others that do not, the val JSON is the validation split; otherwise all JSONs
are pooled and the task splits by DataConfig.val_split. Images without annotations are kept
(pure background).
"""

from __future__ import annotations

import json
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fovea.tasks.data.files import RootGuard, require_folder
from fovea.tasks.errors import UserError

SKIPPED_PREFIXES = ("captions_", "person_keypoints_")  # not object annotations


@dataclass(frozen=True)
class CocoItem:
    image: Path
    width: int  # as the JSON says; the decoded image must agree
    height: int
    annotations: list[dict[str, Any]] = field(hash=False)  # known categories only
    is_val: bool = False
    # per annotation, where it is: "<json path>: annotations[<i>] (id <id>)", for messages
    origins: list[str] = field(default_factory=list, hash=False)

    def value(self, k: int, key: str) -> Any:
        """annotations[k][key], or a UserError naming the file, entry and key."""
        annotation = self.annotations[k]
        if key not in annotation:
            raise UserError(f"{self.origins[k]} lacks the key {key!r}")
        return annotation[key]


@dataclass
class CocoDataset:
    category_ids: list[int]  # sorted; category_ids[i] is class i (+1 with a background)
    category_names: list[str]
    items: list[CocoItem]
    has_val_split: bool  # a JSON named *val* gave the validation split
    counts: Counter = field(default_factory=Counter)  # "unknown_class_dropped", ...
    files: list[Path] = field(default_factory=list)  # the JSONs read


def annotation_files(root: Path) -> list[Path]:
    files = sorted((root / "annotations").glob("*.json")) or sorted(root.glob("*.json"))
    return [f for f in files if not f.name.startswith(SKIPPED_PREFIXES)]


def read_coco_dataset(root: str | Path, *, guard: RootGuard | None = None) -> CocoDataset:
    root = require_folder(root)
    guard = guard or RootGuard(None)
    files = guard.all(annotation_files(root))
    if not files:
        raise UserError(
            f"dataset path {root} has no COCO JSON; the coco format expects "
            "<root>/annotations/instances_<split>.json and the images under <root>/images/"
        )
    val_files = [f for f in files if "val" in f.stem]
    if len(val_files) in (0, len(files)):
        val_files = []
    categories: dict[int, str] = {}
    parsed = []
    for path in files:
        data = _read_json(path)
        for i, category in enumerate(data["categories"]):
            where = f"categories[{i}]"
            cid = int(_field(category, "id", path, where))
            name = str(category.get("name", cid))
            known = categories.setdefault(cid, name)
            if known != name:
                raise UserError(f"{path}: category {cid} is {name!r} here, {known!r} elsewhere")
        parsed.append((path, data))
    counts: Counter = Counter()
    items = []
    for path, data in sorted(parsed, key=lambda p: p[0] in val_files):  # training first
        items += _items(root, path, data, categories, is_val=path in val_files, counts=counts)
    if not items:
        raise UserError(f"{root}: the COCO JSON lists no images")
    ids = sorted(categories)
    for item in items:
        guard(item.image)
    return CocoDataset(
        ids, [categories[i] for i in ids], items, bool(val_files), counts, files=list(files)
    )


def semantic_mask(
    item: CocoItem, *, class_of_category: dict[int, int], height: int, width: int
) -> np.ndarray:
    """int64 [H, W]: 0 background, class_of_category[category] where an object is.

    Larger objects are painted first so smaller ones on top of them stay visible; crowd
    regions are painted as their category.
    """
    from pycocotools import mask as mask_utils  # only the coco format needs it

    labels = np.zeros((height, width), dtype=np.int64)
    annotations = sorted(item.annotations, key=lambda a: -float(a.get("area", 0.0)))
    for annotation in annotations:
        segmentation = annotation.get("segmentation")
        if not segmentation:
            continue
        try:
            if isinstance(segmentation, list):  # polygons [[x1, y1, x2, y2, ...], ...]
                polygons = [p for p in segmentation if len(p) >= 6]
                if not polygons:
                    continue
                rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
            elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
                rle = mask_utils.frPyObjects(segmentation, height, width)
            else:  # compressed RLE
                rle = dict(segmentation)
                if isinstance(rle["counts"], str):
                    rle["counts"] = rle["counts"].encode("ascii")
            if tuple(rle["size"]) != (height, width):
                raise UserError(
                    f"annotation {annotation.get('id')} of {item.image.name}: RLE size "
                    f"{rle['size']} differs from the image's {[height, width]}"
                )
            with warnings.catch_warnings():  # pycocotools' own numpy 2 deprecation notice
                warnings.simplefilter("ignore", DeprecationWarning)
                pixels = mask_utils.decode(rle).astype(bool)  # [H, W]
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise UserError(
                f"annotation {annotation.get('id')} of {item.image.name}: unreadable "
                f"segmentation ({type(exc).__name__}: {exc})"
            ) from exc
        labels[pixels] = class_of_category[int(annotation["category_id"])]
    return labels


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"cannot parse COCO JSON {path}, line {exc.lineno}: {exc.msg}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read COCO JSON {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UserError(f"COCO JSON {path} must hold an object with images and annotations")
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise UserError(f"COCO JSON {path} lacks the key(s) {missing}")
    return data


def _field(entry: Any, key: str, path: Path, where: str) -> Any:
    if not isinstance(entry, dict) or key not in entry:
        raise UserError(f"{path}: {where} lacks the key {key!r}")
    return entry[key]


def _items(
    root: Path,
    path: Path,
    data: dict[str, Any],
    categories: dict[int, str],
    *,
    is_val: bool,
    counts: Counter,
) -> list[CocoItem]:
    split = path.stem.removeprefix("instances_")
    folders = [root / "images", root / "images" / split, root / split, root]
    by_image: dict[int, list[tuple[dict[str, Any], str]]] = defaultdict(list)
    for i, annotation in enumerate(data["annotations"]):
        ident = annotation.get("id") if isinstance(annotation, dict) else "?"
        where = f"annotations[{i}] (id {ident})"
        image_id = int(_field(annotation, "image_id", path, where))
        if int(_field(annotation, "category_id", path, where)) not in categories:
            counts["unknown_class_dropped"] += 1
            continue
        by_image[image_id].append((annotation, f"{path}: {where}"))
    items = []
    for i, image in enumerate(data["images"]):
        where = f"images[{i}]"
        name = str(_field(image, "file_name", path, where))
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise UserError(f"{path}: image file_name {name!r} must be relative, inside {root}")
        # a missing file is skipped and counted when decoding, like a corrupt one
        found = next((f / name for f in folders if (f / name).is_file()), folders[0] / name)
        annotations = by_image[int(_field(image, "id", path, where))]
        items.append(
            CocoItem(
                found,
                int(_field(image, "width", path, where)),
                int(_field(image, "height", path, where)),
                [a for a, _ in annotations],
                is_val,
                [origin for _, origin in annotations],
            )
        )
    return items
