"""Segmentation data: the shapes generator, builtin URIs, the three file formats on the real
shared datasets, bad masks failing at load, and joint transforms."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from fovea.tasks import AugmentConfig, DataConfig, UserError, get_task
from fovea.tasks.data.builtin import get_builtin, parse_builtin_uri
from fovea.tasks.data.coco import read_coco_dataset, semantic_mask
from fovea.tasks.data.shapes import SHAPE_CLASSES, generate_shapes
from fovea.tasks.data.transforms import joint_train_transform
from fovea.tasks.preprocess import Preprocess, denormalize
from fovea.tasks.segmentation.data import IGNORE_INDEX

# in these files 0 (black) is the membrane and 255 (white) the cell interior
ISBI_MAP = {0: "membrane", 255: "cell"}


def seg_data(uri: str | Path, fmt: str, **config: object):  # type: ignore[no-untyped-def]
    return get_task("segmentation").build_data(DataConfig(uri=str(uri), format=fmt, **config))


# ---- builtin://shapes ------------------------------------------------------------------------


def test_shapes_labels_are_exact_and_consistent() -> None:
    data = generate_shapes(count=40, size=48, seed=3, max_shapes=4)
    assert data.images.shape == (40, 3, 48, 48) and data.images.dtype == torch.uint8
    assert data.class_names == SHAPE_CLASSES == ("circle", "square", "triangle")
    counts = [len(labels) for labels in data.labels]
    assert min(counts) >= 1 and max(counts) <= 4 and len(set(counts)) > 1
    for i in range(40):
        instance, semantic = data.instance_masks[i], data.semantic_masks[i]
        labels, boxes = data.labels[i], data.boxes[i]
        assert boxes.shape == (len(labels), 4)
        # the semantic mask is exactly 1 + class id of the instance under each pixel
        lookup = torch.cat([torch.zeros(1, dtype=torch.long), labels + 1])
        assert torch.equal(semantic.long(), lookup[instance.long()])
        for k in range(len(labels)):
            rows, cols = torch.nonzero(instance == k + 1, as_tuple=True)
            tight = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            assert boxes[k].tolist() == [float(v) for v in tight]  # boxes bound the mask
            inside = instance[
                int(boxes[k, 1]) : int(boxes[k, 3]), int(boxes[k, 0]) : int(boxes[k, 2])
            ]
            assert (inside == k + 1).float().mean() > 0.4  # a shape fills its box
        # each shape's pixels share one colour (up to the painted noise): a visible object
        for k in range(len(labels)):
            pixels = data.images[i][:, instance == k + 1].float()
            assert pixels.std(dim=1).max() < 12


def test_shapes_are_deterministic_and_independent_of_count() -> None:
    small = generate_shapes(count=5, size=32, seed=7)
    large = generate_shapes(count=9, size=32, seed=7)
    assert torch.equal(small.images, large.images[:5])
    assert torch.equal(small.semantic_masks, large.semantic_masks[:5])
    other = generate_shapes(count=5, size=32, seed=8)
    assert not torch.equal(small.images, other.images)
    everything = generate_shapes(count=300, size=32, seed=0)
    classes = torch.cat(everything.labels).bincount(minlength=3)
    assert classes.min() > 0.25 * classes.sum()  # all three classes, roughly balanced


def test_builtin_uri_parameters_are_validated() -> None:
    assert parse_builtin_uri("builtin://shapes") == (
        "shapes",
        {"n": 500, "size": None, "seed": 0, "max_shapes": 3},
    )
    name, params = parse_builtin_uri("builtin://shapes?n=40&size=32&seed=5")
    assert name == "shapes" and params == {"n": 40, "size": 32, "seed": 5, "max_shapes": 3}
    bad = {
        "builtin://shapes?n=abc": "n must be an integer, got 'abc'",
        "builtin://shapes?n=0": "n must be in [1, 100000]",
        "builtin://shapes?colour=red": "unknown parameter 'colour'; valid: n, size, seed",
        "builtin://shapes?n=1&n=2": "parameter 'n' is given twice",
        "builtin://shapes?n": "parameters are written name=value, got 'n'",
        "builtin://digits?n=3": "unknown parameter 'n'; valid: none",
        "builtin://circles": "unknown builtin dataset 'builtin://circles'; valid: builtin://digits",
    }
    for uri, message in bad.items():
        with pytest.raises(UserError, match=re.escape(message)):
            parse_builtin_uri(uri)
    # one generator for both dense and box tasks; digits stays classification only
    assert get_builtin("builtin://shapes?n=3", task="detection") is get_builtin(
        "builtin://shapes", task="segmentation"
    )
    with pytest.raises(UserError, match="is for classification, not segmentation"):
        get_builtin("builtin://digits", task="segmentation")
    with pytest.raises(UserError, match="is for detection, segmentation, not classification"):
        get_builtin("builtin://shapes", task="classification")


def test_builtin_shapes_bundle() -> None:
    bundle = seg_data("builtin://shapes?n=50&size=48", "builtin", image_size=32, val_split=0.2)
    assert bundle.class_names == ["background", "circle", "square", "triangle"]
    assert (len(bundle.train), len(bundle.val)) == (40, 10)
    assert bundle.stats == {"images": 50, "train_images": 40, "val_images": 10, "classes": 4}
    image, mask = bundle.val[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert mask.shape == (32, 32) and mask.dtype == torch.int64
    assert set(mask.unique().tolist()) <= {0, 1, 2, 3}  # 48 -> 32 is a plain resize: no pad


# ---- image + mask folders ----------------------------------------------------------------------


def test_isbi_membrane_loads_as_it_is_with_a_class_map(datasets_dir: Path) -> None:
    root = datasets_dir / "segmentation" / "isbi2012-membrane"
    bundle = seg_data(root, "masks", image_size=64, class_map=ISBI_MAP, seed=0)
    assert bundle.class_names == ["membrane", "cell"]
    assert (len(bundle.train), len(bundle.val)) == (24, 6)
    assert bundle.stats["images_without_mask"] == 0 and bundle.stats["classes"] == 2
    masks = torch.cat([bundle.train.data.masks, bundle.val.data.masks])
    assert set(masks.unique().tolist()) == {0, 1}  # 512 -> 64 square: no padding
    assert 0.1 < float((masks == 0).float().mean()) < 0.4  # thin membranes between cells
    same = seg_data(root, "masks", image_size=64, class_map=ISBI_MAP, seed=0)
    assert torch.equal(same.val.data.images, bundle.val.data.images)  # fixed split
    other = seg_data(root, "masks", image_size=64, class_map=ISBI_MAP, seed=1)
    assert not torch.equal(other.val.data.images, bundle.val.data.images)


def test_value_masks_without_a_class_map_get_a_hint(datasets_dir: Path) -> None:
    root = datasets_dir / "segmentation" / "isbi2012-membrane"
    with pytest.raises(UserError, match=r"single class .* give dataset\.class_map"):
        seg_data(root, "masks", image_size=32)


def _mask_folder(root: Path, masks: dict[str, np.ndarray], *, size: tuple[int, int]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for name, mask in masks.items():
        pixels = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"{name}.jpg")
        Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return root


def test_index_masks_and_padding_become_ignored(tmp_path: Path) -> None:
    masks = {f"m{i}": np.full((30, 60), i % 3, dtype=np.uint8) for i in range(6)}
    masks["m0"][:5] = 255  # unlabeled rows
    root = _mask_folder(tmp_path / "ds", masks, size=(30, 60))
    (root / "images" / "orphan.jpg").write_bytes((root / "images" / "m1.jpg").read_bytes())
    bundle = seg_data(root, "masks", image_size=32, val_split=0.5)
    assert bundle.class_names == ["0", "1", "2"]
    assert bundle.stats["images_without_mask"] == 1 and bundle.stats["images"] == 6
    everything = torch.cat([bundle.train.data.masks, bundle.val.data.masks])
    assert everything.shape == (6, 32, 32)
    # 60x30 letterboxed to 32: 32x16 of image, the bottom 16 rows are padding (ignored)
    assert (everything[:, 16:] == 255).all() and (everything[:, :16] != 255).any()
    _, mask = bundle.val[0]
    assert (mask[16:] == IGNORE_INDEX).all() and (mask[:16] >= 0).all()


def test_mask_of_the_wrong_size_fails_at_load_naming_the_file(tmp_path: Path) -> None:
    masks = {f"m{i}": np.zeros((20, 20), dtype=np.uint8) for i in range(3)}
    root = _mask_folder(tmp_path / "ds", masks, size=(20, 20))
    Image.fromarray(np.zeros((20, 24), dtype=np.uint8)).save(root / "masks" / "m1.png")
    bad = root / "masks" / "m1.png"
    with pytest.raises(UserError, match=re.escape(f"mask {bad} is 24x20 but its image")):
        seg_data(root, "masks", image_size=16, class_map={0: "bg", 1: "fg"})


def test_mask_value_outside_the_class_map_fails_at_load(tmp_path: Path) -> None:
    masks = {f"m{i}": np.zeros((20, 20), dtype=np.uint8) for i in range(3)}
    masks["m2"][3:5, 3:6] = 128
    root = _mask_folder(tmp_path / "ds", masks, size=(20, 20))
    bad = root / "masks" / "m2.png"
    with pytest.raises(
        UserError, match=re.escape(f"mask {bad} has value(s) 128 (6 pixels) not in")
    ):
        seg_data(root, "masks", image_size=16, class_map={0: "bg", 255: "fg"})
    # the ignore index is accepted without being in the map; a class may own several values
    masks["m2"][3:5, 3:6] = 255
    root = _mask_folder(
        tmp_path / "ok", masks | {"m3": np.full((20, 20), 7, np.uint8)}, size=(20, 20)
    )
    bundle = seg_data(root, "masks", image_size=20, val_split=0.25, class_map={0: "bg", 7: "fg"})
    assert bundle.class_names == ["bg", "fg"]
    values = torch.cat([bundle.train.data.masks, bundle.val.data.masks]).unique().tolist()
    assert values == [0, 1, 255]
    with pytest.raises(UserError, match="ignore_index 1 is also class index 1 of 2 classes"):
        seg_data(root, "masks", image_size=16, class_map={0: "bg", 7: "fg"}, ignore_index=1)


def test_colour_masks_are_refused_and_corrupt_ones_skipped(tmp_path: Path) -> None:
    masks = {f"m{i}": np.zeros((20, 20), dtype=np.uint8) for i in range(4)}
    root = _mask_folder(tmp_path / "ds", masks, size=(20, 20))
    (root / "masks" / "m3.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    events: list[tuple[str, str]] = []
    bundle = get_task("segmentation").build_data(
        DataConfig(uri=str(root), format="masks", image_size=16, class_map={0: "bg", 1: "fg"}),
        events=lambda kind, message, data=None: events.append((kind, message)),
    )
    assert bundle.stats["corrupt_images_skipped"] == 1 and bundle.stats["images"] == 3
    skipped = [event for event in events if event[0] == "images_skipped"]
    assert len(skipped) == 1 and "m3.png" in skipped[0][1]
    colour = np.zeros((20, 20, 3), dtype=np.uint8)
    colour[..., 0] = 1
    Image.fromarray(colour).save(root / "masks" / "m0.png")
    with pytest.raises(UserError, match=r"m0\.png is a colour \(RGB\) image"):
        seg_data(root, "masks", image_size=16, class_map={0: "bg", 1: "fg"})


# ---- YOLO polygons and COCO polygons / RLE --------------------------------------------------


def test_coco8_seg_yolo_polygons(datasets_dir: Path) -> None:
    bundle = seg_data(datasets_dir / "segmentation" / "coco8-seg", "yolo", image_size=64)
    assert len(bundle.class_names) == 81 and bundle.class_names[:2] == ["background", "person"]
    assert (len(bundle.train), len(bundle.val)) == (4, 4)  # the dataset's own train/val
    masks = torch.cat([bundle.train.data.masks, bundle.val.data.masks])
    labelled = masks[masks != 255]
    assert 0.1 < float((labelled > 0).float().mean()) < 0.9  # objects and background
    assert {1, 23}.issubset(set(masks.unique().tolist()))  # person, giraffe (class 22 + 1)


def test_yolo_box_lines_are_refused_for_segmentation(tmp_path: Path) -> None:
    for split in ("train", "val"):
        (tmp_path / "images" / split).mkdir(parents=True)
        (tmp_path / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (20, 10)).save(tmp_path / "images" / split / "a.png")
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\ntrain: images/train\nval: images/val\n")
    (tmp_path / "labels" / "train" / "a.txt").write_text("1 0.1 0.1 0.9 0.1 0.5 0.9\n")
    (tmp_path / "labels" / "val" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UserError, match=r"val/a\.txt, line 1: a box .* needs polygon labels"):
        seg_data(tmp_path, "yolo", image_size=16)
    # a class without a name is dropped and counted, as detection does with the same file
    (tmp_path / "labels" / "val" / "a.txt").write_text("5 0.1 0.1 0.9 0.1 0.5 0.9\n")
    events: list[tuple[str, dict]] = []
    bundle = get_task("segmentation").build_data(
        DataConfig(uri=str(tmp_path), format="yolo", image_size=16),
        events=lambda kind, message, data=None: events.append((kind, data)),
    )
    assert bundle.stats["unknown_class_dropped"] == 1
    assert ("bad_labels", {"unknown_class_dropped": 1}) in events
    assert not (bundle.val.data.masks[0] == 1).any()  # nothing painted for it
    (tmp_path / "labels" / "val" / "a.txt").write_text("0 0 0 1 0 1 1 0 1\n")  # whole image
    bundle = seg_data(tmp_path, "yolo", image_size=20)
    assert bundle.class_names == ["background", "cat", "dog"]
    assert (bundle.val.data.masks[0, :10] == 1).all()  # 20x10 -> top half, the rest padding
    assert (bundle.val.data.masks[0, 10:] == 255).all()


def test_coco128_polygons_rle_empty_and_grey_images(datasets_dir: Path) -> None:
    root = datasets_dir / "detection" / "coco128"
    bundle = seg_data(root, "coco", image_size=64, val_split=0.2)
    assert len(bundle.class_names) == 81 and bundle.class_names[1] == "person"
    assert bundle.stats["images"] == 128 and bundle.stats["annotations"] == 939
    assert bundle.stats["corrupt_images_skipped"] == 0  # incl. the greyscale 000000000086

    dataset = read_coco_dataset(root)
    by_name = {item.image.name: item for item in dataset.items}
    classes = {c: i + 1 for i, c in enumerate(dataset.category_ids)}
    for empty in ("000000000250.jpg", "000000000508.jpg"):  # no annotations: background
        item = by_name[empty]
        mask = semantic_mask(item, class_of_category=classes, height=item.height, width=item.width)
        assert item.annotations == [] and not mask.any()
    crowd_item = by_name["000000000544.jpg"]  # a crowd (iscrowd=1, RLE) of 133,940 px people
    crowd = next(a for a in crowd_item.annotations if a["iscrowd"])
    mask = semantic_mask(
        crowd_item, class_of_category=classes, height=crowd_item.height, width=crowd_item.width
    )
    assert mask.shape == (crowd_item.height, crowd_item.width)
    assert int((mask == classes[crowd["category_id"]]).sum()) >= 0.95 * crowd["area"]


def test_coco_and_yolo_rasterise_the_same_objects_alike(datasets_dir: Path) -> None:
    """coco8-seg's polygons were made from the COCO annotations of the same photos."""
    yolo = seg_data(datasets_dir / "segmentation" / "coco8-seg", "yolo", image_size=96)
    coco = seg_data(datasets_dir / "detection" / "coco128", "coco", image_size=96, val_split=0.5)
    coco_images = torch.cat([coco.train.data.images, coco.val.data.images]).float()
    coco_masks = torch.cat([coco.train.data.masks, coco.val.data.masks])
    matched = 0
    for image, mask in zip(yolo.train.data.images, yolo.train.data.masks, strict=True):
        distance = (coco_images - image.float()).abs().mean(dim=(1, 2, 3))
        if distance.min() > 3:  # not in coco128
            continue
        other = coco_masks[distance.argmin()]
        labelled = (mask != 255) & (other != 255)
        assert float((mask[labelled] == other[labelled]).float().mean()) > 0.97
        matched += 1
    assert matched >= 3


def test_class_map_is_refused_for_formats_that_name_their_classes(datasets_dir: Path) -> None:
    with pytest.raises(UserError, match="class_map applies to the masks format only"):
        seg_data(datasets_dir / "detection" / "coco128", "coco", class_map={1: "person"})
    with pytest.raises(UserError, match="'imagefolder' is not a segmentation format; valid: masks"):
        seg_data("/x", "imagefolder")


# ---- joint transforms ------------------------------------------------------------------------


def _quadrants(size: int = 48) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose grey level encodes the class of each pixel (4 quadrants)."""
    mask = torch.zeros((size, size), dtype=torch.uint8)
    half = size // 2
    mask[:half, half:], mask[half:, :half], mask[half:, half:] = 1, 2, 3
    image = (40 + 60 * mask).expand(3, -1, -1).contiguous()  # 40, 100, 160, 220
    return image, mask


def test_joint_transforms_keep_masks_on_their_pixels() -> None:
    torch.manual_seed(0)
    image, mask = _quadrants()
    geometric = AugmentConfig(rotation_degrees=30, color_jitter=False)
    transform = joint_train_transform(
        geometric, preprocess=Preprocess.letterbox(32), ignore_index=255
    )
    filled = 0
    for _ in range(10):
        out_image, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert out_image.shape == (3, 32, 32) and out_mask.shape == (32, 32)
        assert out_mask.dtype == torch.uint8 and set(out_mask.unique().tolist()) <= {
            0,
            1,
            2,
            3,
            255,
        }
        grey = denormalize(out_image[None])[0, 0].long()  # back to 0..255
        # away from label edges (where the image is blended, the mask is not), every
        # pixel's grey level is the one of its label
        windows = torch.nn.functional.unfold(out_mask[None, None].float(), 3, padding=1)
        interior = (windows == out_mask.flatten().float()).all(dim=1).view(32, 32)
        interior &= out_mask != 255
        interior[[0, -1]], interior[:, [0, -1]] = False, False
        expected = 40 + 60 * out_mask[interior].long()
        assert interior.sum() > 400
        assert float(((grey[interior] - expected).abs() <= 6).float().mean()) > 0.98
        filled += int((out_mask == 255).sum())
    assert filled > 0  # rotation brought in corners, labelled ignore_index

    jitter_only = AugmentConfig(
        random_resized_crop=False, horizontal_flip=False, rotation_degrees=0, color_jitter=True
    )
    transform = joint_train_transform(
        jitter_only, preprocess=Preprocess.letterbox(48), ignore_index=255
    )
    out_image, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
    assert torch.equal(out_mask, mask)  # colour jitter touches the image only
