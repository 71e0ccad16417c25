"""ImageFolder format: root/<class>/<image>, or root/train/<class> + root/val|test/<class>.

Torch-free parser: it lists files and classes, nothing is decoded here. With a val/ (or
valid/, validation/, test/) folder beside train/, that folder is the validation split;
otherwise the task splits by DataConfig.val_split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fovea.tasks.data.files import (
    VAL_FOLDERS,
    RootGuard,
    image_files,
    require_folder,
    suffix_hint,
)
from fovea.tasks.errors import UserError


@dataclass(frozen=True)
class FolderImage:
    image: Path
    label: int  # index into ImageFolderDataset.class_names
    is_val: bool  # in the dataset's own validation folder


@dataclass
class ImageFolderDataset:
    root: Path
    class_names: list[str]
    images: list[FolderImage]
    val_folder: Path | None  # None: no validation folder; split by DataConfig.val_split


def read_imagefolder(root: str | Path, *, guard: RootGuard | None = None) -> ImageFolderDataset:
    """Every image file and its class; raises UserError naming what is missing."""
    root = require_folder(root)
    guard = guard or RootGuard(None)
    train_dir, val_dir = _split_folders(root)
    class_names = _class_folders(train_dir)
    if not class_names:
        raise UserError(
            f"dataset path {train_dir} has no class folders; ImageFolder expects "
            "<root>/<class name>/<images> (optionally under train/ and val/ or test/)"
        )
    images = _list_images(train_dir, class_names, is_val=False, guard=guard)
    if val_dir is not None:
        unknown = sorted(set(_class_folders(val_dir)) - set(class_names))
        if unknown:
            raise UserError(
                f"validation folder {val_dir} has classes that {train_dir} lacks: {unknown}"
            )
        images += _list_images(val_dir, class_names, is_val=True, guard=guard)
    if not images:
        raise UserError(f"dataset path {root} contains no image files ({suffix_hint()})")
    return ImageFolderDataset(root, class_names, images, val_dir)


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


def _list_images(
    folder: Path, class_names: list[str], *, is_val: bool, guard: RootGuard
) -> list[FolderImage]:
    """Image files under folder/<class>/ (recursively), sorted, with their class indices."""
    found = []
    for label, name in enumerate(class_names):
        class_dir = folder / name
        if class_dir.is_dir():
            found += [FolderImage(guard(p), label, is_val) for p in image_files(class_dir)]
    return found
