"""Pascal VOC XML: one XML per image with <object><name> and <bndbox> corners.

Torch-free parser returning raw records (boxes as VOC writes them, turned into pixel edges:
VOC's 1-based inclusive corners become (xmin - 1, ymin - 1, xmax, ymax)). Layouts:
- the VOC devkit's: Annotations/*.xml, JPEGImages/, optionally ImageSets/Main/{train,val}.txt
  (both present: that is the split);
- as other publishers ship it: the XMLs in annotations/, annots/, annotation/, xml/ or
  labels/, the images in images/, imgs/ or img/ (a note says which folders were used).
An image is found by the XML's <filename>, else by the XML's stem with any image suffix.
Class names are every <object><name> found, sorted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fovea.tasks.data.files import IMAGE_SUFFIXES, Note, RootGuard, paired_folders, require_folder
from fovea.tasks.errors import UserError

ANNOTATION_DIRS = ("annotations", "annots", "annotation", "xml", "xmls", "labels")
IMAGE_DIRS = ("jpegimages", "images", "imgs", "img")
_CORNERS = ("xmin", "ymin", "xmax", "ymax")


@dataclass(frozen=True)
class VocItem:
    image: Path
    boxes: np.ndarray  # float64 [K, 4] xyxy pixel edges
    names: list[str]  # [K] class names
    is_val: bool = False


@dataclass
class VocDataset:
    class_names: list[str]
    items: list[VocItem]
    has_val_split: bool
    notes: list[Note] = field(default_factory=list)


def find_voc_folders(root: Path) -> tuple[Path, Path, list[Note]]:
    """(annotation folder, image folder, notes) for any accepted layout."""
    annotations, images = paired_folders(
        root,
        ANNOTATION_DIRS,
        IMAGE_DIRS,
        layout=(
            "VOC layout; the voc format expects <root>/Annotations/*.xml beside "
            f"<root>/JPEGImages/ (also accepted: {'/'.join(ANNOTATION_DIRS)} beside "
            f"{'/'.join(IMAGE_DIRS)}), optionally ImageSets/Main/{{train,val}}.txt"
        ),
    )
    notes = []
    if (annotations.name, images.name) != ("Annotations", "JPEGImages"):
        notes.append(
            Note(
                "voc_layout",
                f"VOC annotations read from {annotations.name}/ and images from {images.name}/ "
                "(the devkit names them Annotations/ and JPEGImages/)",
            )
        )
    return annotations, images, notes


def read_voc_dataset(root: str | Path, *, guard: RootGuard | None = None) -> VocDataset:
    root = require_folder(root)
    guard = guard or RootGuard(None)
    annotation_dir, image_dir, notes = find_voc_folders(root)
    files = sorted(annotation_dir.glob("*.xml"))
    if not files:
        raise UserError(f"{annotation_dir} holds no .xml annotation files")
    parsed = {f.stem: _read_xml(guard(f), image_dir=image_dir) for f in files}
    class_names = sorted({name for _, objects in parsed.values() for name, _ in objects})
    if not class_names:
        raise UserError(f"{annotation_dir}: no <object> with a <name> in any file")
    split_dir = root / "ImageSets" / "Main"
    train_ids = _split_ids(split_dir / "train.txt")
    val_ids = _split_ids(split_dir / "val.txt")
    if train_ids and val_ids:
        unknown = [i for i in train_ids + val_ids if i not in parsed]
        if unknown:
            raise UserError(f"{split_dir}: ids without an annotation file, e.g. {unknown[:3]}")
        order = [(stem, False) for stem in train_ids] + [(stem, True) for stem in val_ids]
    else:
        order = [(stem, False) for stem in parsed]
    items = []
    for stem, is_val in order:
        image, objects = parsed[stem]
        boxes = np.array([b for _, b in objects], dtype=np.float64).reshape(-1, 4)
        items.append(VocItem(guard(image), boxes, [n for n, _ in objects], is_val))
    return VocDataset(class_names, items, bool(train_ids and val_ids), notes)


def _read_xml(path: Path, *, image_dir: Path) -> tuple[Path, list[tuple[str, list[float]]]]:
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
    filename = (root.findtext("filename") or "").strip()
    if Path(filename).is_absolute() or ".." in Path(filename).parts:
        raise UserError(f"{path}: <filename> {filename!r} must be a plain file name")
    objects = []
    for k, element in enumerate(root.iter("object"), start=1):
        name = (element.findtext("name") or "").strip()
        box = element.find("bndbox")
        if not name or box is None:
            raise UserError(f"{path}: <object> number {k} lacks <name> or <bndbox>")
        try:
            xmin, ymin, xmax, ymax = (float(box.findtext(t) or "") for t in _CORNERS)
        except ValueError:
            raise UserError(
                f"{path}: <object> number {k} ({name}): <bndbox> needs numeric "
                f"{', '.join(_CORNERS)}"
            ) from None
        objects.append((name, [xmin - 1, ymin - 1, xmax, ymax]))  # 1-based inclusive -> edges
    return _image_for(image_dir, filename, path.stem), objects


def _image_for(image_dir: Path, filename: str, stem: str) -> Path:
    """By <filename>, else the XML's stem with any image suffix (a missing image is skipped
    and counted when decoding, like a corrupt one)."""
    if filename and (image_dir / filename).is_file():
        return image_dir / filename
    for base in dict.fromkeys([Path(filename).stem, stem]):
        for suffix in sorted(IMAGE_SUFFIXES):
            for candidate in (image_dir / (base + suffix), image_dir / (base + suffix.upper())):
                if base and candidate.is_file():
                    return candidate
    return image_dir / (filename or stem + ".jpg")


def _split_ids(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [
        line.split()[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
