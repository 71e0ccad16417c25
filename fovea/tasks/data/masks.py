"""Image + mask PNG folders: pairing images with their masks, reading masks, value maps.

Layouts (folder names case-insensitive, first match in IMAGE_DIRS / MASK_DIRS order):
- root/images/ + root/masks/                      (e.g. image/ + label/ in ISBI 2012)
- root/images/{train,val}/ + root/masks/{train,val}/
- root/{train,val}/images/ + root/{train,val}/masks/
An image pairs with the mask at the same relative path and stem (any image suffix), or the
stem plus "_mask". With train/ and val/ (or valid/, test/) the split is the folders'.

Masks are single-channel: 8- or 16-bit grey ("L", "I;16"), palette ("P": the index, not
the colour) or 1-bit ("1", read as 0/255); RGB masks whose three channels are equal are
read as grey, others are refused. Their values are either class indices, or arbitrary
values mapped to classes by DataConfig.class_map ("value masks": {0: background,
255: membrane}). A pixel equal to DataConfig.ignore_index that the class map does not
claim is "unlabeled": excluded from the loss and the metrics.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fovea.tasks.data.files import (
    VAL_FOLDERS,
    RootGuard,
    image_files,
    paired_folders,
    require_folder,
    subdirs,
)
from fovea.tasks.data.images import CorruptImageError, ImageTooLargeError
from fovea.tasks.errors import UserError

IMAGE_DIRS = ("images", "image", "imgs", "img", "jpegimages")
MASK_DIRS = ("masks", "mask", "labels", "label", "annotations", "segmentationclass", "gt")
MASK_STEM_SUFFIXES = ("", "_mask")


@dataclass(frozen=True)
class MaskPair:
    image: Path
    mask: Path


@dataclass
class MaskFolders:
    train: list[MaskPair]
    val: list[MaskPair] | None  # None: no validation folder, split by DataConfig.val_split
    images_without_mask: list[Path]


def find_mask_pairs(root: str | Path, *, guard: RootGuard | None = None) -> MaskFolders:
    root = require_folder(root)
    guard = guard or RootGuard(None)
    splits = _split_layout(root)
    if splits is None:
        image_dir, mask_dir = _image_and_mask_dirs(root)
        train, missing = _pair(image_dir, mask_dir)
        folders = MaskFolders(train, None, missing)
    else:
        (train_images, train_masks), (val_images, val_masks) = splits
        train, missing = _pair(train_images, train_masks)
        val, val_missing = _pair(val_images, val_masks)
        folders = MaskFolders(train, val, missing + val_missing)
    for pair in folders.train + (folders.val or []):
        guard(pair.image)
        guard(pair.mask)
    return folders


def read_mask(path: Path, *, max_pixels: int) -> np.ndarray:
    """A mask file as its raw values: uint8 or int32 [H, W]; EXIF orientation applied.

    Raises ImageTooLargeError / CorruptImageError (skippable, like images) and UserError for
    a readable file that is not a single-channel mask.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(path, f"{exc} (PIL's own guard)") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImageError(path, f"{type(exc).__name__}: {exc}") from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLargeError(
                path, f"{width}x{height} mask exceeds the limit of {max_pixels:,} pixels"
            )
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise CorruptImageError(path, f"{type(exc).__name__}: {exc}") from exc
        mode = upright.mode
        if mode == "1":
            upright = upright.convert("L")  # 0/255, as it displays
        elif mode in ("LA", "PA"):
            upright = upright.getchannel(0)
        array = np.asarray(upright)
    if array.ndim == 3:
        channels = array[..., :3]
        if not ((channels == channels[..., :1]).all()):
            raise UserError(
                f"mask {path} is a colour ({mode}) image; masks must hold one value per pixel "
                "(grey or palette PNG with class indices, or values listed in "
                "dataset.class_map)"
            )
        array = channels[..., 0]
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind in "iu" or array.dtype == np.bool_:
        return array.astype(np.int32)
    raise UserError(f"mask {path} has {array.dtype} pixels ({mode}); masks need integer values")


class ValueMap:
    """Raw mask values -> class indices, for value masks (class_map) or index masks (None).

    `class_map` {value: name}: classes are the distinct names in the order of their first
    value, so {0: "bg", 128: "cell", 255: "cell"} gives ["bg", "cell"] and merges 128 and
    255. Values equal to `ignore_index` and absent from the map become `ignore_index`.
    """

    def __init__(self, class_map: Mapping[int, str] | None, *, ignore_index: int) -> None:
        if not 0 <= ignore_index <= 65535:
            raise UserError(f"dataset.ignore_index must be in 0..65535, got {ignore_index}")
        self.ignore_index = ignore_index
        self.class_map = dict(sorted(class_map.items())) if class_map else None
        if self.class_map is None:
            self.class_names: list[str] | None = None  # decided from the data (see finish)
            self.lut = None
            return
        bad = [v for v in self.class_map if not 0 <= v <= 65535]
        if bad:
            raise UserError(f"dataset.class_map values must be pixel values 0..65535, got {bad}")
        names = list(dict.fromkeys(self.class_map.values()))
        self.class_names = names
        self.lut = np.full(65536, -1, dtype=np.int64)  # -1: a value the map does not know
        self.lut[ignore_index] = ignore_index
        for value, name in self.class_map.items():
            self.lut[value] = names.index(name)
        check_ignore_index(ignore_index, len(names))

    def apply(self, raw: np.ndarray, *, path: Path) -> np.ndarray:
        """Raw values -> class indices int64 [H, W]; raises UserError naming a bad value."""
        if self.lut is None:
            labels = raw.astype(np.int64)
            if labels.min(initial=0) < 0:
                raise UserError(f"mask {path} has negative value {int(labels.min())}")
            return labels
        values = raw.astype(np.int64)
        if values.max(initial=0) > 65535 or values.min(initial=0) < 0:
            outside = int(values.max()) if values.max() > 65535 else int(values.min())
            raise UserError(f"mask {path} has value {outside}, outside the 16-bit range")
        labels = self.lut[values]
        if (labels < 0).any():
            unknown, counts = np.unique(values[labels < 0], return_counts=True)
            shown = ", ".join(
                f"{v} ({c} pixels)" for v, c in zip(unknown[:5], counts[:5], strict=True)
            )
            raise UserError(
                f"mask {path} has value(s) {shown} not in dataset.class_map "
                f"{self.class_map} (and not dataset.ignore_index {self.ignore_index})"
            )
        return labels

    def finish(self, found_values: set[int], *, root: Path) -> list[str]:
        """Class names once every mask was read (index masks: 0..max value found)."""
        if self.class_names is not None:
            return self.class_names
        labels = sorted(found_values - {self.ignore_index})
        if not labels:
            raise UserError(f"masks under {root} hold no labelled pixels")
        count = labels[-1] + 1
        if count > 2 * len(labels) and count > 8:
            shown = f"{labels[:10]}{'...' if len(labels) > 10 else ''}"
            raise UserError(
                f"masks under {root} hold the values {shown}, which look like a value mask, "
                f"not class indices 0..{count - 1}; give "
                "dataset.class_map, e.g. {"
                + ", ".join(f"{v}: 'class{i}'" for i, v in enumerate(labels[:3]))
                + "}"
            )
        if count < 2:
            raise UserError(
                f"masks under {root} hold a single class (values {labels}, ignore_index "
                f"{self.ignore_index}); for value masks such as 0/255 give dataset.class_map, "
                "e.g. {0: background, 255: foreground}"
            )
        check_ignore_index(self.ignore_index, count)
        self.class_names = [str(i) for i in range(count)]
        return self.class_names


def check_ignore_index(ignore_index: int, num_classes: int) -> None:
    if ignore_index < num_classes:
        raise UserError(
            f"dataset.ignore_index {ignore_index} is also class index {ignore_index} of "
            f"{num_classes} classes; choose a value >= {num_classes} (default 255)"
        )


def _split_layout(root: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]] | None:
    """((train images, train masks), (val images, val masks)) when the dataset is split."""
    children = subdirs(root)
    val_name = next((children[n] for n in VAL_FOLDERS if n in children), None)
    if "train" in children and val_name is not None:  # root/train/images, root/val/images
        try:
            return _image_and_mask_dirs(children["train"]), _image_and_mask_dirs(val_name)
        except UserError:
            pass
    try:
        image_dir, mask_dir = _image_and_mask_dirs(root)
    except UserError:
        return None
    images, masks = subdirs(image_dir), subdirs(mask_dir)
    val = next((n for n in VAL_FOLDERS if n in images and n in masks), None)
    if "train" in images and "train" in masks and val is not None:
        return (images["train"], masks["train"]), (images[val], masks[val])
    return None


def _image_and_mask_dirs(folder: Path) -> tuple[Path, Path]:
    return paired_folders(
        folder,
        IMAGE_DIRS,
        MASK_DIRS,
        layout=(
            f"image and mask folders; the masks format expects <root>/<{'|'.join(IMAGE_DIRS[:4])}>/"
            f" beside <root>/<{'|'.join(MASK_DIRS[:4])}>/, optionally split into train/ and val/"
        ),
    )


def _pair(image_dir: Path, mask_dir: Path) -> tuple[list[MaskPair], list[Path]]:
    """(pairs, images without a mask), sorted by image path."""
    masks: dict[tuple[str, ...], Path] = {}
    for mask in image_files(mask_dir):
        key = mask.relative_to(mask_dir).with_suffix("").parts
        if key not in masks or mask.suffix.lower() == ".png":  # a .png wins over a .jpg
            masks[key] = mask
    pairs, missing = [], []
    for image in image_files(image_dir):
        stem = image.relative_to(image_dir).with_suffix("")
        candidates = [stem.parent / (stem.name + s) for s in MASK_STEM_SUFFIXES]
        mask = next((masks[c.parts] for c in candidates if c.parts in masks), None)
        if mask is None:
            missing.append(image)
        else:
            pairs.append(MaskPair(image, mask))
    return pairs, missing
