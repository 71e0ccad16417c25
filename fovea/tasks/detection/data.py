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

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from fovea.tasks.base import AugmentConfig, DataBundle, DataConfig, EventSink, UserError
from fovea.tasks.data.builtin import load_builtin
from fovea.tasks.data.cache import (
    decode_and_report,
    report_bad_labels,
    report_notes,
    skipped_counts,
)
from fovea.tasks.data.coco import read_coco_dataset
from fovea.tasks.data.files import Note, RootGuard, relative_key
from fovea.tasks.data.split import split_for
from fovea.tasks.data.transforms import COLOR_JITTER, normalize_image_only
from fovea.tasks.data.voc import read_voc_dataset
from fovea.tasks.data.yolo import read_labels, read_yolo_dataset
from fovea.tasks.preprocess import Preprocess

SIZE_MULTIPLE = 32  # the coarsest feature stride: squares divide into whole cells
PAD_VALUE = 114  # letterbox padding, grey; predict_arrays pads alike (from the card)
MIN_BOX_SIDE = 2.0  # pixels, after clipping; narrower boxes (points, lines) are dropped
MIN_AUGMENTED_SIDE = 2.0  # pixels, after augmentation (SanitizeBoundingBoxes)
MOSAIC_PROBABILITY = 0.5  # with augment.random_resized_crop on
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
    keys: list[str]  # per image relative path ("#<index>" for builtin data)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: list[int]) -> BoxedImages:
        index = torch.as_tensor(indices, dtype=torch.long)
        return BoxedImages(
            self.images[index],
            [self.boxes[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.keys[i] for i in indices],
        )


# ---- formats: the shared parsers' raw records to boxes per image -----------------------------


@dataclass
class _Source:
    image: Path
    key: str  # relative path, for the split
    boxes: np.ndarray  # float64 [K, 4] xyxy; pixels, or fractions of the image if normalised
    labels: np.ndarray  # int64 [K]; -1 for an unknown class
    is_val: bool = False
    normalised: bool = False
    labels_file: Path | None = None  # YOLO: read when the image is decoded


@dataclass
class _Parsed:
    sources: list[_Source]
    class_names: list[str]
    has_val_split: bool
    counts: Counter  # bad-label reasons found while parsing
    notes: list[Note]


def _coco(root: Path, guard: RootGuard) -> _Parsed:
    """Boxes from `bbox` [x, y, w, h]; crowd regions (no single object) dropped."""
    dataset = read_coco_dataset(root, guard=guard)
    class_of = {cid: i for i, cid in enumerate(dataset.category_ids)}
    counts = Counter(dataset.counts)
    sources = []
    for item in dataset.items:
        boxes, labels = [], []
        for k, annotation in enumerate(item.annotations):
            if annotation.get("iscrowd", 0):
                counts["crowd_regions_dropped"] += 1
                continue
            bbox = item.value(k, "bbox")
            if not (isinstance(bbox, list) and len(bbox) == 4):
                raise UserError(
                    f"{item.origins[k]}: 'bbox' must be [x, y, width, height], got {bbox}"
                )
            x, y, w, h = (float(v) for v in bbox)
            boxes.append([x, y, x + w, y + h])
            labels.append(class_of[int(annotation["category_id"])])
        sources.append(
            _Source(
                item.image,
                relative_key(item.image, root),
                np.array(boxes, dtype=np.float64).reshape(-1, 4),
                np.array(labels, dtype=np.int64),
                item.is_val,
            )
        )
    return _Parsed(sources, dataset.category_names, dataset.has_val_split, counts, [])


def _yolo(root: Path, guard: RootGuard) -> _Parsed:
    """Boxes, or a polygon's bounding box; label files are read at decode time."""
    dataset = read_yolo_dataset(root, guard=guard)
    sources = [
        _Source(
            item.image,
            relative_key(item.image, root),
            np.zeros((0, 4)),
            np.zeros(0, dtype=np.int64),
            item.is_val,
            normalised=True,
            labels_file=item.labels,
        )
        for item in dataset.items
    ]
    return _Parsed(sources, dataset.class_names, dataset.has_val_split, Counter(), dataset.notes)


def _voc(root: Path, guard: RootGuard) -> _Parsed:
    dataset = read_voc_dataset(root, guard=guard)
    class_of = {name: i for i, name in enumerate(dataset.class_names)}
    sources = [
        _Source(
            item.image,
            relative_key(item.image, root),
            item.boxes,
            np.array([class_of[n] for n in item.names], dtype=np.int64),
            item.is_val,
        )
        for item in dataset.items
    ]
    return _Parsed(sources, dataset.class_names, dataset.has_val_split, Counter(), dataset.notes)


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


# ---- decoding, datasets -------------------------------------------------------------------


def _decode(
    parsed: _Parsed, *, config: DataConfig, preprocess: Preprocess, events: EventSink
) -> tuple[BoxedImages, list[_Source], dict[str, int], Counter]:
    """Decode and letterbox every image once; its boxes scaled alike and cleaned."""
    sources = parsed.sources
    num_classes = len(parsed.class_names)
    counts: list[Counter] = [Counter() for _ in sources]  # one per image: threads

    def label_of(position: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        source, mine = sources[position], counts[position]
        boxes, labels = source.boxes, source.labels
        if source.labels_file is not None:
            objects = read_labels(source.labels_file, num_classes=num_classes, counts=mine)
            boxes = np.array([o.bounds() for o in objects], dtype=np.float64).reshape(-1, 4)
            labels = np.array([o.class_id for o in objects], dtype=np.int64)
        boxes = boxes * ((width, height) * 2 if source.normalised else 1)
        boxes, labels = clean_boxes(boxes, labels, width=width, height=height, counts=mine)
        return boxes * preprocess.scale(height, width), labels

    decoded = decode_and_report(
        sources, label_of, preprocess=preprocess, config=config, events=events
    )
    kept = decoded.sources
    data = BoxedImages(
        decoded.images,
        [torch.from_numpy(boxes).float() for boxes, _ in decoded.labels],
        [torch.from_numpy(labels).long() for _, labels in decoded.labels],
        [s.key for s in kept],
    )
    total = sum((counts[i] for i in decoded.kept), Counter(parsed.counts))
    return data, kept, skipped_counts(decoded.rejected), total


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


def train_transform(augment: AugmentConfig, *, preprocess: Preprocess) -> v2.Compose:
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
        steps.append(v2.ColorJitter(**COLOR_JITTER))
    steps += [
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=MIN_AUGMENTED_SIDE),
        v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
        v2.Normalize(list(preprocess.mean), list(preprocess.std)),
    ]
    return v2.Compose(steps)


def collate(samples: list[tuple[torch.Tensor, Target]]) -> Batch:
    """Images stacked [B, 3, S, S]; targets stay a list (object counts differ)."""
    return torch.stack([s[0] for s in samples]), [s[1] for s in samples]


# ---- entry point ------------------------------------------------------------------------------


def _builtin(config: DataConfig, preprocess: Preprocess) -> tuple[BoxedImages, list[str]]:
    shapes = load_builtin(config.uri, task="detection", image_size=config.image_size)
    images = shapes.images  # [N, 3, s, s] uint8
    scale = preprocess.scale(*images.shape[-2:])
    if images.shape[-1] != config.image_size:
        images = preprocess.fit(images)
    keys = [f"#{i}" for i in range(len(images))]
    data = BoxedImages(images, [b * scale for b in shapes.boxes], list(shapes.labels), keys)
    return data, list(shapes.class_names)


FORMATS: dict[str, Callable[[Path, RootGuard], _Parsed]] = {
    "coco": _coco,
    "yolo": _yolo,
    "voc": _voc,
}


def build_detection_data(
    config: DataConfig, *, preprocess: Preprocess, events: EventSink
) -> DataBundle:
    if config.image_size % SIZE_MULTIPLE:
        raise UserError(
            f"train.image_size must be a multiple of {SIZE_MULTIPLE} for detection, got "
            f"{config.image_size}"
        )
    is_val: list[bool] | None = None
    if config.format == "builtin":
        data, class_names = _builtin(config, preprocess)
        stats: dict[str, int] = {}
        counts: Counter = Counter()
    elif config.format in FORMATS:
        parsed = FORMATS[config.format](Path(config.uri), RootGuard(config.roots))
        report_notes(parsed.notes, events)
        data, kept, stats, counts = _decode(
            parsed, config=config, preprocess=preprocess, events=events
        )
        class_names = parsed.class_names
        is_val = [s.is_val for s in kept] if parsed.has_val_split else None
    else:
        raise UserError(
            f"dataset.format {config.format!r} is not a detection format; "
            f"valid: builtin, {', '.join(FORMATS)}"
        )
    if not class_names:
        raise UserError(f"dataset {config.uri} names no classes")
    split = split_for(config, keys=data.keys, is_val=is_val)
    train, val = data.subset(split.train), data.subset(split.val)
    bad = report_bad_labels({reason: counts[reason] for reason in BAD_LABEL_REASONS}, events)
    stats = {
        **stats,
        **bad,
        **split.stats,
        "classes": len(class_names),
        "boxes": sum(len(b) for b in train.boxes + val.boxes),
    }
    mosaic = MOSAIC_PROBABILITY if config.augment.random_resized_crop else 0.0
    return DataBundle(
        train=DetectionDataset(
            train,
            transform=train_transform(config.augment, preprocess=preprocess),
            mosaic_probability=mosaic,
        ),
        val=DetectionDataset(val, transform=normalize_image_only(preprocess)),
        class_names=class_names,
        stats=stats,
        collate_fn=collate,
        val_files=val.keys,
    )
