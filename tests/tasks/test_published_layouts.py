"""Datasets as their publishers ship them, the submit-time scan, and the data-root rule for
every file a loader opens (symlinks included)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from fovea.tasks import DataConfig, UserError, get_task
from fovea.tasks.data.scan import scan_dataset

# Ultralytics' coco128-seg.yaml as published: train and val name the same folder, and
# `path` points somewhere of its own (ignored: paths stay inside the dataset).
COCO128_SEG_YAML = """
path: ../datasets/coco128-seg  # dataset root dir
train: images/train2017  # train images (relative to 'path') 128 images
val: images/train2017  # val images (relative to 'path') 128 images
test:  # test images (optional)
names:
  0: person
  1: bicycle
  2: car
download: https://ultralytics.com/assets/coco128-seg.zip
"""


def events_of(calls: list) -> object:  # type: ignore[type-arg]
    return lambda kind, message, data=None: calls.append((kind, message, data))


def upstream_coco_seg(root: Path, datasets: Path) -> Path:
    """coco8-seg's files in the layout of Ultralytics' coco128-seg (one train2017 folder)."""
    source = datasets / "segmentation" / "coco8-seg"
    for kind in ("images", "labels"):
        target = root / kind / "train2017"
        target.mkdir(parents=True)
        for split in ("train", "val"):
            for path in sorted((source / kind / split).iterdir()):
                (target / path.name).symlink_to(path)
    (root / "coco128-seg.yaml").write_text(COCO128_SEG_YAML)
    names = yaml.safe_load((source / "data.yaml").read_text())["names"]
    config = yaml.safe_load(COCO128_SEG_YAML)
    config["names"] = names
    (root / "coco128-seg.yaml").write_text(yaml.safe_dump(config))
    return root


def test_upstream_coco128_seg_yaml_trains_as_one_split_set(
    tmp_path: Path, datasets_dir: Path
) -> None:
    root = upstream_coco_seg(tmp_path / "coco128-seg", datasets_dir)
    roots = (str(tmp_path), str(datasets_dir))
    scan = scan_dataset(task="segmentation", dataset_format="yolo", root=root, roots=roots)
    assert scan.images == 8 and [n.kind for n in scan.notes] == ["same_train_val_folder"]
    calls: list = []
    bundle = get_task("segmentation").build_data(
        DataConfig(uri=str(root), format="yolo", image_size=64, val_split=0.25, roots=roots),
        events=events_of(calls),
    )
    assert (len(bundle.train), len(bundle.val)) == (6, 2)  # one set, split by val_split
    notes = [message for kind, message, _ in calls if kind == "dataset_note"]
    assert len(notes) == 1 and "images/train2017" in notes[0] and "val_split" in notes[0]
    assert all(key.startswith("images/train2017/") for key in bundle.val_files)


def test_yolo_without_yaml_is_named_by_ids_and_counts_missing_pairs(
    tmp_path: Path, datasets_dir: Path
) -> None:
    source = datasets_dir / "detection" / "coco8"
    for kind in ("images", "labels"):
        (tmp_path / kind).mkdir()
        for path in sorted((source / kind / "train").iterdir()):
            (tmp_path / kind / path.name).symlink_to(path)
    labels = sorted((tmp_path / "labels").iterdir())
    labels[0].unlink()  # an image without its label file
    (tmp_path / "labels" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")  # no image
    scan = scan_dataset(task="detection", dataset_format="yolo", root=tmp_path)
    kinds = {note.kind: note for note in scan.notes}
    assert set(kinds) == {"class_names_from_ids", "images_without_labels", "labels_without_images"}
    assert kinds["images_without_labels"].count == 1
    assert kinds["labels_without_images"].count == 1
    calls: list = []
    bundle = get_task("detection").build_data(
        DataConfig(uri=str(tmp_path), format="yolo", image_size=64), events=events_of(calls)
    )
    top = int(re.search(r"0\.\.(\d+)", kinds["class_names_from_ids"].message)[1])  # type: ignore[index]
    assert bundle.class_names == [str(i) for i in range(top + 1)]
    assert sum(kind == "dataset_note" for kind, _, _ in calls) == 3


def test_voc_under_other_folder_names_trains_with_a_note(
    tmp_path: Path, datasets_dir: Path
) -> None:
    bccd = datasets_dir / "detection" / "bccd"
    (tmp_path / "annots").mkdir()
    (tmp_path / "images").mkdir()
    for xml in sorted((bccd / "Annotations").glob("*.xml"))[:12]:
        (tmp_path / "annots" / xml.name).symlink_to(xml)
        jpeg = bccd / "JPEGImages" / (xml.stem + ".jpg")
        (tmp_path / "images" / jpeg.name).symlink_to(jpeg)
    scan = scan_dataset(task="detection", dataset_format="voc", root=tmp_path)
    assert scan.images == 12 and [n.kind for n in scan.notes] == ["voc_layout"]
    calls: list = []
    bundle = get_task("detection").build_data(
        DataConfig(uri=str(tmp_path), format="voc", image_size=64), events=events_of(calls)
    )
    assert bundle.stats["images"] == 12 and bundle.stats["corrupt_images_skipped"] == 0
    assert set(bundle.class_names) <= {"Platelets", "RBC", "WBC"}
    assert any("annots/" in message for kind, message, _ in calls if kind == "dataset_note")


@pytest.mark.parametrize(
    ("task", "dataset_format", "make", "message"),
    [
        (
            "detection",
            "voc",
            lambda r: (r / "labels_here").mkdir(),
            r"no VOC layout.*found folders \['labels_here'\]",
        ),
        ("detection", "yolo", lambda r: (r / "pics").mkdir(), r"has no images/ folder"),
        ("detection", "coco", lambda r: (r / "images").mkdir(), r"has no COCO JSON"),
        ("segmentation", "masks", lambda r: (r / "images").mkdir(), r"no image and mask folders"),
        ("classification", "imagefolder", lambda r: None, r"has no class folders"),
    ],
)
def test_wrong_layouts_are_refused_by_the_scan_naming_what_to_change(
    tmp_path: Path,
    task: str,
    dataset_format: str,
    make,
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    make(tmp_path)
    with pytest.raises(UserError, match=message):
        scan_dataset(task=task, dataset_format=dataset_format, root=tmp_path)


def test_symlinks_inside_a_dataset_cannot_escape_the_data_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    for name, colour in (("cats", (200, 10, 10)), ("dogs", (10, 10, 200))):
        (root / "ds" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (12, 12), colour).save(root / "ds" / name / f"{i}.png")
    (outside / "secret").mkdir(parents=True)
    Image.new("RGB", (12, 12)).save(outside / "secret" / "x.png")
    roots = (str(root),)
    config = DataConfig(uri=str(root / "ds"), format="imagefolder", image_size=16, roots=roots)
    assert len(get_task("classification").build_data(config).class_names) == 2
    # a class folder that is a symlink to a folder outside every root
    os.symlink(outside / "secret", root / "ds" / "birds")
    with pytest.raises(UserError, match=r"birds/x\.png resolves to .*outside the data roots"):
        get_task("classification").build_data(config)
    with pytest.raises(UserError, match="outside the data roots"):
        scan_dataset(
            task="classification", dataset_format="imagefolder", root=root / "ds", roots=roots
        )
    (root / "ds" / "birds").unlink()
    # one image file that is a symlink to a file outside
    os.symlink(outside / "secret" / "x.png", root / "ds" / "cats" / "9.png")
    with pytest.raises(UserError, match=r"cats/9\.png resolves to"):
        get_task("classification").build_data(config)


def test_parsers_and_scan_import_no_torch() -> None:
    code = (
        "import sys, fovea.tasks.data.scan, fovea.tasks.data.builtin\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
