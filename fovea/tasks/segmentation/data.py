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

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset
from torchvision import tv_tensors

from fovea.tasks.base import DataBundle, DataConfig, EventSink, UserError
from fovea.tasks.data.builtin import get_builtin, parse_builtin_uri
from fovea.tasks.data.cache import (
    Rejected,
    check_cache_fits,
    decode_parallel,
    letterbox,
    letterbox_mask,
    pil_to_tensor,
    skipped_counts,
)
from fovea.tasks.data.coco import CocoItem, read_coco_dataset, semantic_mask
from fovea.tasks.data.images import CorruptImageError, ImageTooLargeError, open_image
from fovea.tasks.data.masks import (
    MaskPair,
    ValueMap,
    check_ignore_index,
    find_mask_pairs,
    read_mask,
)
from fovea.tasks.data.transforms import joint_eval_transform, joint_train_transform
from fovea.tasks.data.yolo import YoloItem, read_labels, read_yolo_dataset

BACKGROUND = "background"
IGNORE_INDEX = -100  # unlabeled pixels in batches (PyTorch's cross-entropy default)
MAX_REPORTED_EXAMPLES = 10


@dataclass
class MaskedImages:
    images: torch.Tensor  # [N, 3, S, S] uint8, letterboxed
    masks: torch.Tensor  # [N, S, S] uint8 or int32 class indices; ignore_index: unlabeled

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, indices: list[int]) -> MaskedImages:
        index = torch.as_tensor(indices, dtype=torch.long)
        return MaskedImages(self.images[index], self.masks[index])


@dataclass
class SegmentationSplit:
    train: MaskedImages
    val: MaskedImages
    class_names: list[str]
    stats: dict[str, int]


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


def build_segmentation_data(config: DataConfig, *, events: EventSink) -> DataBundle:
    if config.format not in FORMATS:
        raise UserError(
            f"dataset.format {config.format!r} is not a segmentation format; "
            f"valid: {', '.join(FORMATS)}"
        )
    if config.class_map is not None and config.format != "masks":
        raise UserError(
            f"dataset.class_map applies to the masks format only; {config.format} datasets "
            "name their classes themselves"
        )
    split = FORMATS[config.format](config, events)
    check_ignore_index(config.ignore_index, len(split.class_names))
    split.stats["classes"] = len(split.class_names)
    train_transform = joint_train_transform(
        config.augment, image_size=config.image_size, ignore_index=config.ignore_index
    )
    ignore = config.ignore_index
    return DataBundle(
        train=SegmentationDataset(split.train, transform=train_transform, ignore_index=ignore),
        val=SegmentationDataset(split.val, transform=joint_eval_transform(), ignore_index=ignore),
        class_names=split.class_names,
        stats=split.stats,
    )


# ---- formats ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """One image and how to get its class-index mask once the image's size is known."""

    image: Path
    labels: Callable[[int, int], np.ndarray]  # (height, width) -> int64 [H, W]


def _masks(config: DataConfig, events: EventSink) -> SegmentationSplit:
    folders = find_mask_pairs(config.uri)
    value_map = ValueMap(config.class_map, ignore_index=config.ignore_index)
    if folders.images_without_mask:
        shown = ", ".join(str(p) for p in folders.images_without_mask[:3])
        events(
            "images_without_mask",
            f"skipped {len(folders.images_without_mask)} images that have no mask, e.g. {shown}",
            {"images_without_mask": len(folders.images_without_mask)},
        )
    pairs = folders.train + (folders.val or [])
    if not pairs:
        raise UserError(f"dataset path {config.uri} has no image with a matching mask")
    found: set[int] = set()

    def source(pair: MaskPair) -> _Source:
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

        return _Source(pair.image, labels)

    decoded = _decode([source(p) for p in pairs], config=config, events=events)
    class_names = value_map.finish(found, root=Path(config.uri))
    train_count = len(folders.train) if folders.val is not None else None
    split = _split(decoded, train_count=train_count, config=config)
    stats = {**split.stats, "images_without_mask": len(folders.images_without_mask)}
    return SegmentationSplit(split.train, split.val, class_names, stats)


def _yolo(config: DataConfig, events: EventSink) -> SegmentationSplit:
    dataset = read_yolo_dataset(config.uri)
    class_names = [BACKGROUND, *dataset.class_names]

    def source(item: YoloItem) -> _Source:
        def labels(height: int, width: int) -> np.ndarray:
            if item.labels is None:
                return np.zeros((height, width), dtype=np.int64)
            objects = read_labels(item.labels, num_classes=len(dataset.class_names))
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

        return _Source(item.image, labels)

    items = dataset.train + (dataset.val or [])
    decoded = _decode([source(i) for i in items], config=config, events=events)
    train_count = len(dataset.train) if dataset.val is not None else None
    split = _split(decoded, train_count=train_count, config=config)
    return SegmentationSplit(split.train, split.val, class_names, split.stats)


def _coco(config: DataConfig, events: EventSink) -> SegmentationSplit:
    dataset = read_coco_dataset(config.uri)
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

        return _Source(item.image, labels)

    items = dataset.train + (dataset.val or [])
    decoded = _decode([source(i) for i in items], config=config, events=events)
    train_count = len(dataset.train) if dataset.val is not None else None
    split = _split(decoded, train_count=train_count, config=config)
    stats = {**split.stats, "annotations": sum(len(i.annotations) for i in items)}
    return SegmentationSplit(split.train, split.val, [BACKGROUND, *dataset.category_names], stats)


def _builtin(config: DataConfig, events: EventSink) -> SegmentationSplit:
    builtin = get_builtin(config.uri, task="segmentation")
    _, params = parse_builtin_uri(config.uri)
    shapes = builtin.load(image_size=config.image_size, **params)
    images, masks = shapes.images, shapes.semantic_masks  # [N, 3, s, s], [N, s, s]
    if images.shape[-1] != config.image_size:
        images = letterbox(images, config.image_size)
        masks = letterbox_mask(masks, config.image_size, fill=config.ignore_index)
    decoded = _Decoded(MaskedImages(images, masks), kept=list(range(len(images))), stats={})
    split = _split(decoded, train_count=None, config=config)
    return SegmentationSplit(split.train, split.val, [BACKGROUND, *shapes.class_names], split.stats)


FORMATS: dict[str, Callable[[DataConfig, EventSink], SegmentationSplit]] = {
    "masks": _masks,
    "yolo": _yolo,
    "coco": _coco,
    "builtin": _builtin,
}


# ---- decoding and splitting -----------------------------------------------------------------


@dataclass
class _Decoded:
    data: MaskedImages
    kept: list[int]  # source positions decoded (the others were skipped)
    stats: dict[str, int]


def _decode(sources: list[_Source], *, config: DataConfig, events: EventSink) -> _Decoded:
    """Decode and letterbox every image and mask once (threads: PIL and torch release the
    GIL). Unreadable files are skipped and reported; UserErrors from a label fail the load."""
    size, ignore = config.image_size, config.ignore_index
    check_cache_fits(len(sources), size)

    def decode(source: _Source) -> tuple[torch.Tensor, torch.Tensor] | Rejected:
        try:
            image = open_image(source.image, max_pixels=config.max_image_pixels)
            labels = source.labels(image.height, image.width)
        except (ImageTooLargeError, CorruptImageError) as exc:
            return Rejected(exc.path, exc.reason, too_large=isinstance(exc, ImageTooLargeError))
        mask = letterbox_mask(torch.from_numpy(labels), size, fill=ignore)
        return letterbox(pil_to_tensor(image), size), mask

    kept, decoded, rejected = decode_parallel(decode, sources)
    if not kept:
        raise UserError(f"dataset path {config.uri} has no readable images ({len(sources)} tried)")
    if rejected:
        examples = [{"path": r.path, "reason": r.reason} for r in rejected[:MAX_REPORTED_EXAMPLES]]
        events(
            "images_skipped",
            f"skipped {len(rejected)} unreadable or oversized images or masks, e.g. "
            f"{examples[0]['path']}: {examples[0]['reason']}",
            {"skipped": len(rejected), "examples": examples},
        )
    dtype = torch.uint8 if ignore <= 255 else torch.int32
    images = torch.stack([o[0] for o in decoded])
    masks = torch.stack([o[1].to(dtype) for o in decoded])
    stats = skipped_counts(rejected)
    return _Decoded(MaskedImages(images, masks), kept, stats)


@dataclass
class _Split:
    train: MaskedImages
    val: MaskedImages
    stats: dict[str, int]


def _split(decoded: _Decoded, *, train_count: int | None, config: DataConfig) -> _Split:
    """By the dataset's own folders (sources before `train_count` are training), else a
    seeded random split with round(N * val_split) (at least 1) validation images."""
    count = len(decoded.kept)
    if train_count is not None:
        train_idx = [i for i, k in enumerate(decoded.kept) if k < train_count]
        val_idx = [i for i, k in enumerate(decoded.kept) if k >= train_count]
    else:
        if count < 2:
            raise UserError(f"dataset {config.uri} has {count} usable image; need >= 2 to split")
        order = np.random.default_rng(config.seed).permutation(count)
        n_val = min(max(round(count * config.val_split), 1), count - 1)
        val_idx, train_idx = sorted(order[:n_val].tolist()), sorted(order[n_val:].tolist())
    if not train_idx or not val_idx:
        raise UserError(
            f"dataset {config.uri}: {len(train_idx)} training and {len(val_idx)} validation "
            "images after skipping unreadable files; both splits need at least one"
        )
    stats = {
        **decoded.stats,
        "images": count,
        "train_images": len(train_idx),
        "val_images": len(val_idx),
    }
    return _Split(decoded.data.subset(train_idx), decoded.data.subset(val_idx), stats)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))
