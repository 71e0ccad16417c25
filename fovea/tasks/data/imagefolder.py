"""ImageFolder format: root/<class>/<image>, or root/train/<class> + root/val|test/<class>.

With a val/ (or test/) folder beside train/, that folder is the validation split and
DataConfig.val_split is not used; otherwise a stratified split by val_split and seed.
Every image is decoded once up front into the in-memory cache (see cache.py); that pass
is also the verification: unreadable files are skipped, counted and reported once.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fovea.tasks.base import EventSink, UserError, no_events
from fovea.tasks.data.cache import (
    LabelledImages,
    Rejected,
    SplitImages,
    decode_files,
    resize_size_for,
    skipped_counts,
    stratified_split,
)
from fovea.tasks.data.images import IMAGE_SUFFIXES

# Validation folder names, in order of preference when several exist.
VAL_FOLDERS = ("val", "valid", "validation", "test")
MAX_REPORTED_EXAMPLES = 10


def load_imagefolder(
    root: str | Path,
    *,
    image_size: int,
    val_split: float,
    seed: int,
    max_pixels: int,
    events: EventSink = no_events,
) -> SplitImages:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset path {root} does not exist or is not a folder")
    size = resize_size_for(image_size)
    train_dir, val_dir = _split_folders(root)
    class_names = _class_folders(train_dir)
    if not class_names:
        raise UserError(
            f"dataset path {train_dir} has no class folders; ImageFolder expects "
            "<root>/<class name>/<images> (optionally under train/ and val/ or test/)"
        )
    stats: dict[str, int] = {"classes": len(class_names)}

    train_files, train_labels = _list_images(train_dir, class_names)
    val_files: list[Path] = []
    val_labels: list[int] = []
    if val_dir is not None:
        unknown = sorted(set(_class_folders(val_dir)) - set(class_names))
        if unknown:
            raise UserError(
                f"validation folder {val_dir} has classes that {train_dir} lacks: {unknown}"
            )
        val_files, val_labels = _list_images(val_dir, class_names)
    files = train_files + val_files
    if not files:
        raise UserError(f"dataset path {root} contains no image files ({_suffix_hint()})")

    images, kept, rejected = decode_files(files, size=size, max_pixels=max_pixels)
    labels = torch.as_tensor(train_labels + val_labels, dtype=torch.long)[kept]
    stats.update(skipped_counts(rejected))
    _report_rejected(rejected, events)
    if not kept:
        raise UserError(f"dataset path {root} has no readable images ({len(files)} tried)")
    everything = LabelledImages(images, labels, class_names)

    if val_dir is None:
        train_idx, val_idx = stratified_split(labels.tolist(), val_fraction=val_split, seed=seed)
    else:
        is_val = torch.as_tensor([position >= len(train_files) for position in kept])
        train_idx = torch.nonzero(~is_val).flatten().tolist()
        val_idx = torch.nonzero(is_val).flatten().tolist()
        events(
            "dataset_split",
            f"using {val_dir.name}/ as the validation split ({len(val_idx)} images)",
            {"val_folder": str(val_dir)},
        )
    if not val_idx:
        raise UserError(f"dataset path {root} has too few images for a validation split")
    _check_every_class_has_images(labels[train_idx], class_names, train_dir)
    stats.update(images=len(kept), train_images=len(train_idx), val_images=len(val_idx))
    return SplitImages(everything.subset(train_idx), everything.subset(val_idx), stats)


def _split_folders(root: Path) -> tuple[Path, Path | None]:
    """(train folder, validation folder or None) for either layout."""
    children = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    val_name = next((name for name in VAL_FOLDERS if name in children), None)
    split_layout = "train" in children and val_name is not None
    # a dataset whose classes happen to be called "train" and "test" holds images directly
    if split_layout and _class_folders(root / "train"):
        return root / "train", root / val_name
    return root, None


def _class_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_images(folder: Path, class_names: list[str]) -> tuple[list[Path], list[int]]:
    """Image files under folder/<class>/ (recursively), sorted, with their class indices."""
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(class_names):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        found = sorted(
            p
            for p in class_dir.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(class_dir).parts)
        )
        files.extend(found)
        labels.extend([label] * len(found))
    return files, labels


def _check_every_class_has_images(
    labels: torch.Tensor, class_names: list[str], train_dir: Path
) -> None:
    counts = torch.bincount(labels, minlength=len(class_names))
    empty = [name for name, count in zip(class_names, counts.tolist(), strict=True) if not count]
    if empty:
        raise UserError(
            f"class folders without readable images under {train_dir}: {empty}; remove them "
            "or add images"
        )


def _report_rejected(rejected: list[Rejected], events: EventSink) -> None:
    if not rejected:
        return
    examples = [{"path": r.path, "reason": r.reason} for r in rejected[:MAX_REPORTED_EXAMPLES]]
    corrupt = sum(not r.too_large for r in rejected)
    events(
        "images_skipped",
        f"skipped {len(rejected)} images: {corrupt} unreadable, "
        f"{len(rejected) - corrupt} over the pixel limit; e.g. {examples[0]['path']}",
        {
            "corrupt_images_skipped": corrupt,
            "oversized_images_skipped": len(rejected) - corrupt,
            "examples": examples,
        },
    )


def _suffix_hint() -> str:
    return "looked for " + ", ".join(sorted(IMAGE_SUFFIXES))
