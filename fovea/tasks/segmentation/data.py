"""Segmentation data: dataset formats to a DataBundle of (image, class-index mask) pairs.

Every format ends in the same decode-once cache as classification (see data/cache.py), but
letterboxed instead of centre-cropped: each image is resized so its long side is
image_size and padded to a square, so the whole image and its whole mask stay in view;
padding is `ignore_index` in the mask. Masks come from PNG folders ("masks"), YOLO polygons
("yolo"), COCO polygons and RLE ("coco") or the generator ("builtin": builtin://shapes).

Class index 0 is "background" for yolo, coco and shapes; mask folders name their classes
through DataConfig.class_map or use their indices. A mask that does not fit its image
(size, or a value the class map does not know) fails the load with a UserError naming the
file; unreadable files are skipped, counted and reported once, as images are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset
from torchvision import tv_tensors

from fovea.tasks.base import DataBundle, DataConfig, EventSink, UserError
from fovea.tasks.data.builtin import load_builtin
from fovea.tasks.data.cache import (
    decode_and_report,
    report_bad_labels,
    report_notes,
    skipped_counts,
)
from fovea.tasks.data.coco import CocoItem, read_coco_dataset, semantic_mask
from fovea.tasks.data.files import Note, RootGuard, relative_key
from fovea.tasks.data.masks import (
    MaskPair,
    ValueMap,
    check_ignore_index,
    find_mask_pairs,
    read_mask,
)
from fovea.tasks.data.split import split_for
from fovea.tasks.data.transforms import joint_train_transform, normalize_image_only
from fovea.tasks.data.yolo import YoloItem, read_labels, read_yolo_dataset
from fovea.tasks.preprocess import Preprocess

BACKGROUND = "background"
IGNORE_INDEX = -100  # unlabeled pixels in batches (PyTorch's cross-entropy default)


@dataclass
class MaskedImages:
    images: torch.Tensor  # [N, 3, S, S] uint8, letterboxed
    masks: torch.Tensor  # [N, S, S] uint8 or int32 class indices; ignore_index: unlabeled
    keys: list[str] = field(default_factory=list)  # per image relative path ("#<index>")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: list[int]) -> MaskedImages:
        index = torch.as_tensor(indices, dtype=torch.long)
        return MaskedImages(self.images[index], self.masks[index], [self.keys[i] for i in indices])


class SegmentationDataset(Dataset):
    """Cached squares -> (float [3, S, S] normalised, int64 [S, S] class indices).

    Unlabeled pixels, `ignore_index` in the cache (the value the files use), come out as
    IGNORE_INDEX, so losses and metrics need not know the dataset's convention.
    """

    def __init__(
        self, data: MaskedImages, *, transform: Callable[..., tuple], ignore_index: int
    ) -> None:
        self.data = data
        self.transform = transform
        self.ignore_index = ignore_index

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.transform(
            tv_tensors.Image(self.data.images[index]), tv_tensors.Mask(self.data.masks[index])
        )
        labels = mask.as_subclass(torch.Tensor).long()
        labels[labels == self.ignore_index] = IGNORE_INDEX
        return image.as_subclass(torch.Tensor), labels


def build_segmentation_data(
    config: DataConfig, *, preprocess: Preprocess, events: EventSink
) -> DataBundle:
    if config.format not in (*PARSERS, "builtin"):
        raise UserError(
            f"dataset.format {config.format!r} is not a segmentation format; "
            f"valid: {', '.join(PARSERS)}, builtin"
        )
    if config.class_map is not None and config.format != "masks":
        raise UserError(
            f"dataset.class_map applies to the masks format only; {config.format} datasets "
            "name their classes themselves"
        )
    if config.format == "builtin":
        found = _builtin(config, preprocess)
    else:
        parsed = PARSERS[config.format](config)
        found = _decode(parsed, config=config, preprocess=preprocess, events=events)
    check_ignore_index(config.ignore_index, len(found.class_names))
    split = split_for(config, keys=found.data.keys, is_val=found.is_val)
    train, val = found.data.subset(split.train), found.data.subset(split.val)
    train_transform = joint_train_transform(
        config.augment, preprocess=preprocess, ignore_index=config.ignore_index
    )
    ignore = config.ignore_index
    return DataBundle(
        train=SegmentationDataset(train, transform=train_transform, ignore_index=ignore),
        val=SegmentationDataset(
            val, transform=normalize_image_only(preprocess), ignore_index=ignore
        ),
        class_names=found.class_names,
        stats={**found.stats, **split.stats, "classes": len(found.class_names)},
        val_files=val.keys,
    )


# ---- formats: the shared parsers' raw records to a mask per image ----------------------------


@dataclass(frozen=True)
class _Source:
    """One image and how to get its class-index mask once the image's size is known."""

    image: Path
    key: str
    labels: Callable[[int, int], np.ndarray]  # (height, width) -> int64 [H, W]
    is_val: bool = False


@dataclass
class _Parsed:
    sources: list[_Source]
    has_val_split: bool
    class_names: Callable[[], list[str]]  # called after decoding: index masks learn theirs
    notes: list[Note] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)  # filled while decoding, too
    stats: dict[str, int] = field(default_factory=dict)


@dataclass
class _Found:
    data: MaskedImages
    class_names: list[str]
    is_val: list[bool] | None  # the dataset's own split, per kept image
    stats: dict[str, int]


def _decode(
    parsed: _Parsed, *, config: DataConfig, preprocess: Preprocess, events: EventSink
) -> _Found:
    """Decode and letterbox every image and mask once (threads: PIL and torch release the
    GIL). Unreadable files are skipped and reported; UserErrors from a label fail the load."""
    report_notes(parsed.notes, events)
    ignore = config.ignore_index
    dtype = torch.uint8 if ignore <= 255 else torch.int32
    sources = parsed.sources

    def label_of(position: int, height: int, width: int) -> torch.Tensor:
        labels = torch.from_numpy(sources[position].labels(height, width))
        return preprocess.fit_mask(labels, fill=ignore).to(dtype)

    decoded = decode_and_report(
        sources, label_of, preprocess=preprocess, config=config, events=events
    )
    kept = decoded.sources
    bad = report_bad_labels(
        {"unknown_class_dropped": parsed.counts["unknown_class_dropped"]}, events
    )
    return _Found(
        MaskedImages(decoded.images, torch.stack(decoded.labels), [s.key for s in kept]),
        parsed.class_names(),
        [s.is_val for s in kept] if parsed.has_val_split else None,
        {**skipped_counts(decoded.rejected), **bad, **parsed.stats},
    )


def _masks(config: DataConfig) -> _Parsed:
    root = Path(config.uri)
    folders = find_mask_pairs(root, guard=RootGuard(config.roots))
    value_map = ValueMap(config.class_map, ignore_index=config.ignore_index)
    missing = folders.images_without_mask
    notes = []
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        notes.append(
            Note(
                "images_without_mask",
                f"skipped {len(missing)} images that have no mask, e.g. {shown}",
                len(missing),
            )
        )
    pairs = [(p, False) for p in folders.train] + [(p, True) for p in folders.val or []]
    if not pairs:
        raise UserError(f"dataset path {config.uri} has no image with a matching mask")
    found: set[int] = set()

    def source(pair: MaskPair, is_val: bool) -> _Source:
        def labels(height: int, width: int) -> np.ndarray:
            raw = read_mask(pair.mask, max_pixels=config.max_image_pixels)
            if raw.shape != (height, width):
                raise UserError(
                    f"mask {pair.mask} is {raw.shape[1]}x{raw.shape[0]} but its image "
                    f"{pair.image} is {width}x{height} (width x height)"
                )
            mapped = value_map.apply(raw, path=pair.mask)
            found.update(np.unique(mapped).tolist())  # set.update holds the GIL: thread-safe
            return mapped

        return _Source(pair.image, relative_key(pair.image, root), labels, is_val)

    return _Parsed(
        [source(p, v) for p, v in pairs],
        has_val_split=folders.val is not None,
        class_names=lambda: value_map.finish(found, root=root),
        notes=notes,
        stats={"images_without_mask": len(missing)},
    )


def _yolo(config: DataConfig) -> _Parsed:
    root = Path(config.uri)
    dataset = read_yolo_dataset(root, guard=RootGuard(config.roots))
    counts: Counter = Counter()

    def source(item: YoloItem) -> _Source:
        def labels(height: int, width: int) -> np.ndarray:
            if item.labels is None:
                return np.zeros((height, width), dtype=np.int64)
            mine: Counter = Counter()
            objects = read_labels(item.labels, num_classes=len(dataset.class_names), counts=mine)
            counts.update(mine)  # Counter.update of a small dict holds the GIL
            boxes = [o for o in objects if o.polygon is None]
            if boxes:
                raise UserError(
                    f"{item.labels}, line {boxes[0].line}: a box (class cx cy w h), not a "
                    "polygon; segmentation needs polygon labels (class x1 y1 x2 y2 ...)"
                )
            canvas = Image.new("I", (width, height), 0)
            draw = ImageDraw.Draw(canvas)
            scaled = [o.polygon * (width, height) for o in objects]  # [K, 2] pixels
            order = np.argsort([-_polygon_area(p) for p in scaled], kind="stable")
            for k in order:  # the largest first, so smaller objects stay on top
                points = [(float(x), float(y)) for x, y in scaled[k]]
                draw.polygon(points, fill=objects[k].class_id + 1)
            return np.asarray(canvas, dtype=np.int64)

        return _Source(item.image, relative_key(item.image, root), labels, item.is_val)

    return _Parsed(
        [source(i) for i in dataset.items],
        has_val_split=dataset.has_val_split,
        class_names=lambda: [BACKGROUND, *dataset.class_names],
        notes=dataset.notes,
        counts=counts,
    )


def _coco(config: DataConfig) -> _Parsed:
    root = Path(config.uri)
    dataset = read_coco_dataset(root, guard=RootGuard(config.roots))
    class_of_category = {c: i + 1 for i, c in enumerate(dataset.category_ids)}

    def source(item: CocoItem) -> _Source:
        def labels(height: int, width: int) -> np.ndarray:
            if (width, height) != (item.width, item.height):
                raise UserError(
                    f"image {item.image} is {width}x{height} but its COCO entry says "
                    f"{item.width}x{item.height}"
                )
            return semantic_mask(
                item, class_of_category=class_of_category, height=height, width=width
            )

        return _Source(item.image, relative_key(item.image, root), labels, item.is_val)

    return _Parsed(
        [source(i) for i in dataset.items],
        has_val_split=dataset.has_val_split,
        class_names=lambda: [BACKGROUND, *dataset.category_names],
        counts=Counter(dataset.counts),
        stats={"annotations": sum(len(i.annotations) for i in dataset.items)},
    )


def _builtin(config: DataConfig, preprocess: Preprocess) -> _Found:
    shapes = load_builtin(config.uri, task="segmentation", image_size=config.image_size)
    images, masks = shapes.images, shapes.semantic_masks  # [N, 3, s, s], [N, s, s]
    if images.shape[-1] != config.image_size:
        images = preprocess.fit(images)
        masks = preprocess.fit_mask(masks, fill=config.ignore_index)
    keys = [f"#{i}" for i in range(len(images))]
    return _Found(MaskedImages(images, masks, keys), [BACKGROUND, *shapes.class_names], None, {})


PARSERS: dict[str, Callable[[DataConfig], _Parsed]] = {
    "masks": _masks,
    "yolo": _yolo,
    "coco": _coco,
}  # and "builtin": generated, not parsed (_builtin)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
