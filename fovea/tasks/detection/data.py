"""Detection data: COCO JSON, YOLO txt, Pascal VOC XML and builtin://shapes to a DataBundle.

Every format is parsed up front (an unparseable annotation file fails the load with its
path and line or key), then each image is decoded once, letterboxed to image_size (long
side resized, bottom/right padded with grey) and kept as uint8, its boxes scaled alike
(see data/cache.py for why decode-once). Boxes are xyxy in pixel edges throughout: COCO
[x, y, w, h] and YOLO normalised centres are converted, VOC's 1-based inclusive corners
become (xmin - 1, ymin - 1, xmax, ymax).

Bad labels do not fail a job; they are repaired or dropped and counted per reason, and the
counts reach the job's events ("bad_labels") and DataBundle.stats:
- boxes_clipped: a box reaching outside its image, clipped to it;
- degenerate_boxes_dropped: under MIN_BOX_SIDE (2) pixels wide or high after clipping
  (bccd has two 1x1 "boxes": xmin == xmax in VOC's inclusive corners);
- unknown_class_dropped: a class id or name the dataset's class list does not have;
- crowd_regions_dropped: COCO `iscrowd` regions (no single object to detect).

Batches are (images float [B, 3, S, S] normalised, targets: per image {"boxes" [K, 4]
float32, "labels" [K] int64}); `collate` builds them.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from fovea.tasks.base import AugmentConfig, DataBundle, DataConfig, EventSink, UserError
from fovea.tasks.data.builtin import get_builtin, parse_builtin_uri
from fovea.tasks.data.cache import (
    Rejected,
    check_cache_fits,
    decode_parallel,
    letterbox,
    pil_to_tensor,
    skipped_counts,
)
from fovea.tasks.data.images import CorruptImageError, ImageTooLargeError, open_image
from fovea.tasks.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from fovea.tasks.data.yolo import read_yolo_dataset

SIZE_MULTIPLE = 32  # the coarsest feature stride: squares divide into whole cells
PAD_VALUE = 114  # letterbox padding, grey; predict_arrays pads alike
MIN_BOX_SIDE = 2.0  # pixels, after clipping; narrower boxes (points, lines) are dropped
MIN_AUGMENTED_SIDE = 2.0  # pixels, after augmentation (SanitizeBoundingBoxes)
MOSAIC_PROBABILITY = 0.5  # with augment.random_resized_crop on
MAX_REPORTED_EXAMPLES = 10
BAD_LABEL_REASONS = (
    "boxes_clipped",
    "degenerate_boxes_dropped",
    "unknown_class_dropped",
    "crowd_regions_dropped",
)

Target = dict[str, torch.Tensor]  # {"boxes": float32 [K, 4] xyxy, "labels": int64 [K]}
Batch = tuple[torch.Tensor, list[Target]]


@dataclass
class BoxedImages:
    images: torch.Tensor  # [N, 3, S, S] uint8, letterboxed
    boxes: list[torch.Tensor]  # per image float32 [K, 4] xyxy pixels of the square
    labels: list[torch.Tensor]  # per image int64 [K]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: list[int]) -> BoxedImages:
        index = torch.as_tensor(indices, dtype=torch.long)
        return BoxedImages(
            self.images[index], [self.boxes[i] for i in indices], [self.labels[i] for i in indices]
        )


# ---- parsing: every format to a list of _Source ---------------------------------------------


@dataclass
class _Source:
    image: Path
    boxes: np.ndarray  # float64 [K, 4] xyxy; pixels, or fractions of the image if normalised
    labels: np.ndarray  # int64 [K]; -1 for an unknown class
    normalised: bool = False


@dataclass
class _Parsed:
    sources: list[_Source]
    class_names: list[str]
    train_count: int | None  # sources before it are training; None: split by val_split
    counts: Counter  # bad-label reasons found while parsing


def _coco(root: Path) -> _Parsed:
    """All annotations/*.json (or *.json at the root); a JSON named *val* is the val split."""
    files = sorted((root / "annotations").glob("*.json")) or sorted(root.glob("*.json"))
    files = [f for f in files if not f.name.startswith(("captions_", "person_keypoints_"))]
    if not files:
        raise UserError(
            f"dataset path {root} has no COCO JSON; the coco format expects "
            "<root>/annotations/instances_<split>.json and the images under <root>/images/"
        )
    val_files = [f for f in files if "val" in f.stem]
    if len(val_files) in (0, len(files)):
        val_files = []
    counts: Counter = Counter()
    categories: dict[int, str] = {}
    per_file = []
    for path in sorted(files, key=lambda f: f in val_files):  # training files first
        data = _read_json(path)
        for i, category in enumerate(data["categories"]):
            cid, name = _field(category, "id", path, f"categories[{i}]"), category.get("name")
            categories.setdefault(int(cid), str(name if name is not None else cid))
        per_file.append((path, data))
    ids = sorted(categories)
    class_of = {cid: i for i, cid in enumerate(ids)}
    sources, train_count = [], None
    for path, data in per_file:
        if path in val_files and train_count is None:
            train_count = len(sources)
        sources += _coco_sources(root, path, data, class_of=class_of, counts=counts)
    return _Parsed(sources, [categories[i] for i in ids], train_count, counts)


def _coco_sources(
    root: Path, path: Path, data: dict[str, Any], *, class_of: dict[int, int], counts: Counter
) -> list[_Source]:
    split = path.stem.removeprefix("instances_")
    folders = [root / "images", root / "images" / split, root / split, root]
    by_image: dict[int, list[tuple[list[float], int]]] = {}
    for i, annotation in enumerate(data["annotations"]):
        where = f"annotations[{i}] (id {annotation.get('id')})"
        image_id = int(_field(annotation, "image_id", path, where))
        category = int(_field(annotation, "category_id", path, where))
        if annotation.get("iscrowd", 0):
            counts["crowd_regions_dropped"] += 1
            continue
        bbox = _field(annotation, "bbox", path, where)
        if not (isinstance(bbox, list) and len(bbox) == 4):
            raise UserError(f"{path}: {where}: 'bbox' must be [x, y, width, height], got {bbox}")
        x, y, w, h = (float(v) for v in bbox)
        by_image.setdefault(image_id, []).append(([x, y, x + w, y + h], class_of.get(category, -1)))
    sources = []
    for i, image in enumerate(data["images"]):
        name = str(_field(image, "file_name", path, f"images[{i}]"))
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise UserError(f"{path}: image file_name {name!r} must be relative, inside {root}")
        found = next((f / name for f in folders if (f / name).is_file()), folders[0] / name)
        objects = by_image.get(int(_field(image, "id", path, f"images[{i}]")), [])
        boxes = np.array([b for b, _ in objects], dtype=np.float64).reshape(-1, 4)
        sources.append(_Source(found, boxes, np.array([c for _, c in objects], dtype=np.int64)))
    return sources


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


def _yolo(root: Path) -> _Parsed:
    """Discovery and class names from data/yolo.py; label lines parsed here, because
    detection repairs and counts what segmentation refuses (classes out of range, boxes
    beyond the image)."""
    dataset = read_yolo_dataset(root)
    counts: Counter = Counter()
    items = dataset.train + (dataset.val or [])
    sources = []
    for item in items:
        boxes, labels = [], []
        for number, fields in _label_lines(item.labels):
            try:
                class_id = int(fields[0])
                values = np.array([float(v) for v in fields[1:]], dtype=np.float64)
            except ValueError:
                raise UserError(f"{item.labels}, line {number}: not numbers: {fields}") from None
            if len(values) == 4:  # cx cy w h
                cx, cy, w, h = values
                box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
            elif len(values) >= 6 and len(values) % 2 == 0:  # a polygon: its bounding box
                xy = values.reshape(-1, 2)
                box = [*xy.min(axis=0), *xy.max(axis=0)]
            else:
                raise UserError(
                    f"{item.labels}, line {number}: expected 4 values (cx cy w h) or a polygon "
                    f"after the class, got {len(values)}"
                )
            if not np.isfinite(box).all():
                raise UserError(f"{item.labels}, line {number}: coordinates are not finite")
            boxes.append(box)
            labels.append(class_id if 0 <= class_id < len(dataset.class_names) else -1)
        sources.append(
            _Source(
                item.image,
                np.array(boxes, dtype=np.float64).reshape(-1, 4),
                np.array(labels, dtype=np.int64),
                normalised=True,
            )
        )
    train_count = len(dataset.train) if dataset.val is not None else None
    return _Parsed(sources, list(dataset.class_names), train_count, counts)


def _label_lines(path: Path | None) -> list[tuple[int, list[str]]]:
    if path is None:
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read label file {path}: {exc}") from exc
    lines = [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1)]
    return [(n, fields) for n, fields in lines if fields]


def _voc(root: Path) -> _Parsed:
    """Annotations/*.xml beside JPEGImages/; ImageSets/Main/{train,val}.txt give the split
    when both exist. Class names: every <object><name> found, sorted."""
    annotation_dir = root / "Annotations"
    if not annotation_dir.is_dir():
        raise UserError(
            f"dataset path {root} has no Annotations/ folder; the voc format expects "
            "<root>/Annotations/*.xml, <root>/JPEGImages/ and optionally ImageSets/Main/"
        )
    files = sorted(annotation_dir.glob("*.xml"))
    if not files:
        raise UserError(f"{annotation_dir} holds no .xml annotation files")
    parsed = {f.stem: _read_voc_xml(f, image_dir=root / "JPEGImages") for f in files}
    class_names = sorted({name for _, objects in parsed.values() for name, _ in objects})
    if not class_names:
        raise UserError(f"{annotation_dir}: no <object> with a <name> in any file")
    class_of = {name: i for i, name in enumerate(class_names)}
    split_dir = root / "ImageSets" / "Main"
    train_ids = _split_ids(split_dir / "train.txt")
    val_ids = _split_ids(split_dir / "val.txt")
    if train_ids and val_ids:
        unknown = [i for i in train_ids + val_ids if i not in parsed]
        if unknown:
            raise UserError(f"{split_dir}: ids without an annotation file, e.g. {unknown[:3]}")
        order, train_count = train_ids + val_ids, len(train_ids)
    else:
        order, train_count = list(parsed), None
    sources = []
    for stem in order:
        image, objects = parsed[stem]
        boxes = np.array([b for _, b in objects], dtype=np.float64).reshape(-1, 4)
        labels = np.array([class_of[n] for n, _ in objects], dtype=np.int64)
        sources.append(_Source(image, boxes, labels))
    return _Parsed(sources, class_names, train_count, Counter())


def _read_voc_xml(path: Path, *, image_dir: Path) -> tuple[Path, list[tuple[str, list[float]]]]:
    try:
        tree = ET.parse(path)
    except ET.ParseError as exc:
        line, column = exc.position
        raise UserError(
            f"cannot parse VOC XML {path}, line {line}, column {column}: {exc}"
        ) from exc
    except OSError as exc:
        raise UserError(f"cannot read VOC XML {path}: {exc}") from exc
    root = tree.getroot()
    filename = (root.findtext("filename") or "").strip() or path.stem + ".jpg"
    if Path(filename).is_absolute() or ".." in Path(filename).parts:
        raise UserError(f"{path}: <filename> {filename!r} must be a plain file name")
    image = image_dir / filename
    if not image.is_file() and not Path(filename).suffix:
        image = image_dir / (filename + ".jpg")
    objects = []
    for k, element in enumerate(root.iter("object"), start=1):
        name = (element.findtext("name") or "").strip()
        box = element.find("bndbox")
        if not name or box is None:
            raise UserError(f"{path}: <object> number {k} lacks <name> or <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(t) or "") for t in _VOC_CORNERS)
        except ValueError:
            raise UserError(
                f"{path}: <object> number {k} ({name}): <bndbox> needs numeric "
                f"{', '.join(_VOC_CORNERS)}"
            ) from None
        objects.append((name, [xmin - 1, ymin - 1, xmax, ymax]))  # 1-based inclusive -> edges
    return image, objects


_VOC_CORNERS = ("xmin", "ymin", "xmax", "ymax")


def _split_ids(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [
        line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]


# ---- label repair ----------------------------------------------------------------------------


def clean_boxes(
    boxes: np.ndarray, labels: np.ndarray, *, width: int, height: int, counts: Counter
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes [K, 4] xyxy pixels, labels [K] (-1 unknown) -> the usable ones, clipped to the
    image; `counts` gains one per box clipped, degenerate or of an unknown class."""
    known = labels >= 0
    counts["unknown_class_dropped"] += int((~known).sum())
    boxes, labels = boxes[known], labels[known]
    limits = np.array([width, height, width, height], dtype=np.float64)
    clipped = np.clip(boxes, 0, limits)
    changed = (np.abs(clipped - boxes) > 1e-6).any(axis=1)
    sides_ok = (clipped[:, 2] - clipped[:, 0] >= MIN_BOX_SIDE) & (
        clipped[:, 3] - clipped[:, 1] >= MIN_BOX_SIDE
    )
    counts["degenerate_boxes_dropped"] += int((~sides_ok).sum())
    counts["boxes_clipped"] += int((changed & sides_ok).sum())
    return clipped[sides_ok], labels[sides_ok]


# ---- decoding, splitting, datasets ------------------------------------------------------------


def _decode(
    sources: list[_Source], *, config: DataConfig, events: EventSink
) -> tuple[BoxedImages, list[int], dict[str, int], Counter]:
    size = config.image_size
    check_cache_fits(len(sources), size)
    counts: Counter = Counter()

    def decode(source: _Source) -> tuple[torch.Tensor, np.ndarray, np.ndarray, Counter] | Rejected:
        try:
            image = open_image(source.image, max_pixels=config.max_image_pixels)
        except (ImageTooLargeError, CorruptImageError) as exc:
            return Rejected(exc.path, exc.reason, too_large=isinstance(exc, ImageTooLargeError))
        width, height = image.size
        boxes = source.boxes * ((width, height) * 2 if source.normalised else 1)
        mine: Counter = Counter()
        boxes, labels = clean_boxes(boxes, source.labels, width=width, height=height, counts=mine)
        scale = size / max(width, height)  # as letterbox resizes
        return letterbox(pil_to_tensor(image), size, fill=PAD_VALUE), boxes * scale, labels, mine

    kept, decoded, rejected = decode_parallel(decode, sources)
    if not kept:
        raise UserError(f"dataset path {config.uri} has no readable images ({len(sources)} tried)")
    if rejected:
        examples = [{"path": r.path, "reason": r.reason} for r in rejected[:MAX_REPORTED_EXAMPLES]]
        events(
            "images_skipped",
            f"skipped {len(rejected)} unreadable or oversized images, e.g. "
            f"{examples[0]['path']}: {examples[0]['reason']}",
            {"skipped": len(rejected), "examples": examples},
        )
    for outcome in decoded:
        counts.update(outcome[3])
    data = BoxedImages(
        torch.stack([o[0] for o in decoded]),
        [torch.from_numpy(o[1]).float() for o in decoded],
        [torch.from_numpy(o[2]).long() for o in decoded],
    )
    stats = skipped_counts(rejected)
    return data, kept, stats, counts


def _split(
    data: BoxedImages, kept: list[int], *, train_count: int | None, config: DataConfig
) -> tuple[BoxedImages, BoxedImages]:
    count = len(kept)
    if train_count is not None:
        train_idx = [i for i, k in enumerate(kept) if k < train_count]
        val_idx = [i for i, k in enumerate(kept) if k >= train_count]
    else:
        if count < 2:
            raise UserError(f"dataset {config.uri} has {count} usable image; need >= 2 to split")
        order = np.random.default_rng(config.seed).permutation(count)
        n_val = min(max(round(count * config.val_split), 1), count - 1)
        val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    if not train_idx or not val_idx:
        raise UserError(
            f"dataset {config.uri}: {len(train_idx)} training and {len(val_idx)} validation "
            "images; both splits need at least one"
        )
    return data.subset(train_idx), data.subset(val_idx)


class DetectionDataset(Dataset):
    """Cached squares -> (float [3, S, S] normalised, {"boxes" [K, 4], "labels" [K]}).

    With `mosaic_probability` > 0 a sample is, that often, four random cached images tiled
    2 x 2 and a random resized crop of that back to S (scale jitter 0.5x..1x for free).
    """

    def __init__(
        self, data: BoxedImages, *, transform: v2.Transform, mosaic_probability: float = 0.0
    ) -> None:
        self.data = data
        self.transform = transform
        self.mosaic_probability = mosaic_probability
        size = int(data.images.shape[-1])
        self.mosaic_crop = v2.RandomResizedCrop(size, scale=(0.25, 1.0), antialias=True)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        use_mosaic = self.mosaic_probability > 0 and float(torch.rand(())) < self.mosaic_probability
        if use_mosaic:
            image, boxes, labels = self._mosaic(index)
        else:
            image, boxes, labels = (
                self.data.images[index],
                self.data.boxes[index],
                self.data.labels[index],
            )
        size = tuple(image.shape[-2:])
        image, target = self.transform(
            tv_tensors.Image(image),
            {
                "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=size),
                "labels": labels,
            },
        )
        return image.as_subclass(torch.Tensor), {
            "boxes": target["boxes"].as_subclass(torch.Tensor).float(),
            "labels": target["labels"],
        }

    def _mosaic(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        size = int(self.data.images.shape[-1])
        others = torch.randint(len(self.data), (3,)).tolist()
        canvas = torch.empty((3, 2 * size, 2 * size), dtype=torch.uint8)
        boxes, labels = [], []
        for k, i in enumerate([index, *others]):
            dy, dx = (k // 2) * size, (k % 2) * size
            canvas[:, dy : dy + size, dx : dx + size] = self.data.images[i]
            boxes.append(self.data.boxes[i] + torch.tensor([dx, dy, dx, dy], dtype=torch.float32))
            labels.append(self.data.labels[i])
        image, target = self.mosaic_crop(
            tv_tensors.Image(canvas),
            {
                "boxes": tv_tensors.BoundingBoxes(
                    torch.cat(boxes), format="XYXY", canvas_size=(2 * size, 2 * size)
                ),
                "labels": torch.cat(labels),
            },
        )
        return (
            image.as_subclass(torch.Tensor),
            target["boxes"].as_subclass(torch.Tensor),
            target["labels"],
        )


def train_transform(augment: AugmentConfig) -> v2.Compose:
    """Geometric and colour augmentations that move boxes with the image; boxes that end up
    outside or too small are removed by SanitizeBoundingBoxes (with their labels)."""
    steps: list[v2.Transform] = []
    if augment.random_resized_crop:  # scale jitter 0.75x..1.25x with a small shift
        steps.append(
            v2.RandomAffine(degrees=0.0, translate=(0.1, 0.1), scale=(0.75, 1.25), fill=PAD_VALUE)
        )
    if augment.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.color_jitter:
        # no hue jitter: it costs 3x the rest of the colour jitter per image on CPU
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3))
    steps += [
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=MIN_AUGMENTED_SIDE),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]
    return v2.Compose(steps)


def eval_transform() -> v2.Compose:
    return v2.Compose(
        [
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def collate(samples: list[tuple[torch.Tensor, Target]]) -> Batch:
    """Images stacked [B, 3, S, S]; targets stay a list (object counts differ)."""
    return torch.stack([s[0] for s in samples]), [s[1] for s in samples]


# ---- entry point ------------------------------------------------------------------------------


def _builtin(
    config: DataConfig, events: EventSink
) -> tuple[BoxedImages, BoxedImages, list[str], dict[str, int], Counter]:
    builtin = get_builtin(config.uri, task="detection")
    _, params = parse_builtin_uri(config.uri)
    shapes = builtin.load(image_size=config.image_size, **params)
    images = shapes.images  # [N, 3, s, s] uint8
    scale = config.image_size / images.shape[-1]
    if images.shape[-1] != config.image_size:
        images = letterbox(images, config.image_size, fill=PAD_VALUE)
    data = BoxedImages(images, [b * scale for b in shapes.boxes], list(shapes.labels))
    train, val = _split(data, list(range(len(data))), train_count=None, config=config)
    return train, val, list(shapes.class_names), {}, Counter()


FORMATS: dict[str, Callable[[Path], _Parsed]] = {"coco": _coco, "yolo": _yolo, "voc": _voc}


def build_detection_data(config: DataConfig, *, events: EventSink) -> DataBundle:
    if config.image_size % SIZE_MULTIPLE:
        raise UserError(
            f"train.image_size must be a multiple of {SIZE_MULTIPLE} for detection, got "
            f"{config.image_size}"
        )
    if config.format == "builtin":
        train, val, class_names, stats, counts = _builtin(config, events)
    elif config.format in FORMATS:
        parsed = FORMATS[config.format](Path(config.uri))
        data, kept, stats, counts = _decode(parsed.sources, config=config, events=events)
        counts.update(parsed.counts)
        train, val = _split(data, kept, train_count=parsed.train_count, config=config)
        class_names = parsed.class_names
    else:
        raise UserError(
            f"dataset.format {config.format!r} is not a detection format; "
            f"valid: builtin, {', '.join(FORMATS)}"
        )
    if not class_names:
        raise UserError(f"dataset {config.uri} names no classes")
    bad = {reason: int(counts[reason]) for reason in BAD_LABEL_REASONS}
    if any(bad.values()):
        shown = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in bad.items() if n)
        events("bad_labels", f"repaired or dropped labels: {shown}", bad)
    stats = {
        **stats,
        **bad,
        "classes": len(class_names),
        "images": len(train) + len(val),
        "train_images": len(train),
        "val_images": len(val),
        "boxes": sum(len(b) for b in train.boxes + val.boxes),
    }
    mosaic = MOSAIC_PROBABILITY if config.augment.random_resized_crop else 0.0
    return DataBundle(
        train=DetectionDataset(
            train, transform=train_transform(config.augment), mosaic_probability=mosaic
        ),
        val=DetectionDataset(val, transform=eval_transform()),
        class_names=class_names,
        stats=stats,
        collate_fn=collate,
    )
