"""COCO JSON: annotations/instances_<split>.json beside the images, polygons and RLE.

Images are looked up by `file_name` under images/, images/<split>/, <split>/ and the
dataset root, where <split> is the JSON's name without "instances_" (train2017). With one
JSON whose name says train and another whose name says val, those are the split;
otherwise all JSONs are pooled and split by DataConfig.val_split. Images without
annotations are kept (pure background), as are crowd (`iscrowd`) regions, which are RLE.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fovea.tasks.base import UserError


@dataclass(frozen=True)
class CocoItem:
    image: Path
    width: int  # as the JSON says; the decoded image must agree
    height: int
    annotations: list[dict[str, Any]] = field(hash=False)


@dataclass
class CocoDataset:
    category_ids: list[int]  # sorted; category_ids[i] is class i (+1 with a background)
    category_names: list[str]
    train: list[CocoItem]
    val: list[CocoItem] | None  # None: no separate val JSON


def read_coco_dataset(root: str | Path) -> CocoDataset:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset path {root} does not exist or is not a folder")
    files = sorted((root / "annotations").glob("*.json")) or sorted(root.glob("*.json"))
    files = [f for f in files if not f.name.startswith("captions_")]
    if not files:
        raise UserError(
            f"dataset path {root} has no COCO JSON; the coco format expects "
            "<root>/annotations/instances_<split>.json and the images under <root>/images/"
        )
    train_files = [f for f in files if "val" not in f.stem]
    val_files = [f for f in files if "val" in f.stem]
    if not train_files or not val_files:
        train_files, val_files = files, []
    categories: dict[int, str] = {}
    train: list[CocoItem] = []
    val: list[CocoItem] = []
    for path in files:
        data = _read_json(path)
        for category in data["categories"]:
            known = categories.setdefault(int(category["id"]), str(category["name"]))
            if known != category["name"]:
                raise UserError(f"{path}: category {category['id']} is {known!r} elsewhere")
        (val if path in val_files else train).extend(_items(root, path, data))
    if not train:
        raise UserError(f"{root}: the COCO JSON lists no images")
    ids = sorted(categories)
    return CocoDataset(ids, [categories[i] for i in ids], train, val or None)


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
        except (TypeError, KeyError, ValueError) as exc:
            raise UserError(
                f"annotation {annotation.get('id')} of {item.image.name}: unreadable "
                f"segmentation ({type(exc).__name__}: {exc})"
            ) from exc
        labels[pixels] = class_of_category[int(annotation["category_id"])]
    return labels


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read COCO JSON {path}: {exc}") from exc
    missing = [k for k in ("images", "annotations", "categories") if k not in data]
    if missing:
        raise UserError(f"COCO JSON {path} lacks {missing}")
    return data


def _items(root: Path, path: Path, data: dict[str, Any]) -> list[CocoItem]:
    split = path.stem.removeprefix("instances_")
    folders = [root / "images", root / "images" / split, root / split, root]
    known_categories = {int(c["id"]) for c in data["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for annotation in data["annotations"]:
        if int(annotation["category_id"]) not in known_categories:
            raise UserError(
                f"{path}: annotation {annotation.get('id')} has category "
                f"{annotation['category_id']}, which is not in 'categories'"
            )
        by_image[int(annotation["image_id"])].append(annotation)
    items = []
    for image in data["images"]:
        name = str(image["file_name"])
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise UserError(f"{path}: image file_name {name!r} must be relative, inside {root}")
        # a missing file is skipped and counted when decoding, like a corrupt one
        found = next((f / name for f in folders if (f / name).is_file()), folders[0] / name)
        items.append(
            CocoItem(found, int(image["width"]), int(image["height"]), by_image[int(image["id"])])
        )
    return items
