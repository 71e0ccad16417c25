"""Data loading: defensive image opening, ImageFolder, builtins, split, transforms."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fovea.tasks import AugmentConfig, DataBundle, DataConfig, UserError, get_task, no_events
from fovea.tasks.data.builtin import get_builtin
from fovea.tasks.data.images import CorruptImageError, ImageTooLargeError, open_image
from fovea.tasks.data.split import stratified_split
from fovea.tasks.data.transforms import train_transform
from fovea.tasks.preprocess import Preprocess

RED, BLUE = (255, 0, 0), (0, 0, 255)


def folder_bundle(
    root: Path,
    *,
    image_size: int,
    val_split: float,
    seed: int,
    max_pixels: int = 10**6,
    events=no_events,  # type: ignore[no-untyped-def]
) -> DataBundle:
    """An ImageFolder dataset as the classification task loads it."""
    config = DataConfig(
        uri=str(root),
        format="imagefolder",
        image_size=image_size,
        val_split=val_split,
        seed=seed,
        max_image_pixels=max_pixels,
    )
    return get_task("classification").build_data(config, events=events)


def cached_side(image_size: int) -> int:
    return Preprocess.center_crop(image_size).square_size


def png_header_only(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header claims width x height 8-bit grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def write_odd_images(folder: Path) -> dict[str, Path]:
    """Every awkward kind of file a real dataset contains, written to `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {name: folder / name for name in (
        "plain.png", "cmyk.jpg", "palette.png", "grey16.png", "alpha.png", "exif6.jpg",
        "corrupt.jpg", "truncated.png", "not_an_image.jpg",
    )}  # fmt: skip
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(paths["plain.png"])
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(paths["cmyk.jpg"], quality=95)
    Image.new("RGB", (24, 24), (0, 128, 255)).convert("P", palette=Image.Palette.ADAPTIVE).save(
        paths["palette.png"], transparency=1
    )
    grey16 = np.array([[0, 32896, 65535]] * 3, dtype=np.uint16)
    Image.fromarray(grey16).save(paths["grey16.png"])
    Image.new("LA", (24, 24), (200, 50)).save(paths["alpha.png"])
    # stored 40 wide x 20 tall, left half red; EXIF 6 = "rotate 90 degrees clockwise to show"
    sideways = Image.new("RGB", (40, 20), BLUE)
    sideways.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(paths["exif6.jpg"], exif=exif.tobytes(), quality=95)
    paths["corrupt.jpg"].write_bytes(b"\xff\xd8\xff\xe0" + rng.bytes(2000))
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    noise.save(paths["truncated.png"])
    whole = paths["truncated.png"].read_bytes()
    paths["truncated.png"].write_bytes(whole[: len(whole) // 2])
    paths["not_an_image.jpg"].write_text("hello")
    return paths


def test_open_image_converts_every_mode_to_rgb(tmp_path: Path) -> None:
    paths = write_odd_images(tmp_path)
    for name in ("plain.png", "cmyk.jpg", "palette.png", "grey16.png", "alpha.png", "exif6.jpg"):
        assert open_image(paths[name], max_pixels=10**6).mode == "RGB", name
    cmyk = np.asarray(open_image(paths["cmyk.jpg"], max_pixels=10**6))
    assert cmyk[..., 0].min() > 230 and cmyk[..., 1:].max() < 30  # C=0 M=Y=100% is red
    palette = np.asarray(open_image(paths["palette.png"], max_pixels=10**6))
    assert tuple(palette[5, 5]) == (0, 128, 255)
    # 16-bit grey is rescaled to 8 bits, not clipped (PIL's convert would give 0, 255, 255)
    grey16 = np.asarray(open_image(paths["grey16.png"], max_pixels=10**6))
    assert grey16[0, :, 0].tolist() == [0, 128, 255]
    assert (grey16[..., 0] == grey16[..., 2]).all()


def test_open_image_applies_exif_orientation(tmp_path: Path) -> None:
    upright = open_image(write_odd_images(tmp_path)["exif6.jpg"], max_pixels=10**6)
    assert upright.size == (20, 40)  # width, height: portrait after rotation
    pixels = np.asarray(upright).astype(int)
    assert np.abs(pixels[5, 10] - RED).max() < 40  # the stored left half is now on top
    assert np.abs(pixels[34, 10] - BLUE).max() < 40


@pytest.mark.parametrize("name", ["corrupt.jpg", "truncated.png", "not_an_image.jpg"])
def test_open_image_raises_corrupt_image_error_with_path(tmp_path: Path, name: str) -> None:
    path = write_odd_images(tmp_path)[name]
    with pytest.raises(CorruptImageError) as caught:
        open_image(path, max_pixels=10**6)
    assert caught.value.path == str(path)
    assert caught.value.reason
    assert isinstance(caught.value, UserError)


def test_decompression_bombs_are_refused_before_decoding(tmp_path: Path) -> None:
    claims_25_mpx = tmp_path / "bomb.png"
    claims_25_mpx.write_bytes(png_header_only(5_000, 5_000))
    with pytest.raises(ImageTooLargeError, match="5000x5000 = 25,000,000 pixels exceeds"):
        open_image(claims_25_mpx, max_pixels=1_000_000)
    # 10^10 pixels (40 GB of RGB if decoded): even PIL's own guard fires first
    claims_10_gpx = tmp_path / "huge.png"
    claims_10_gpx.write_bytes(png_header_only(100_000, 100_000))
    with pytest.raises(ImageTooLargeError, match=r"huge\.png"):
        open_image(claims_10_gpx, max_pixels=89_478_485)
    # a real image just over the limit
    Image.new("RGB", (200, 100)).save(tmp_path / "real.png")
    with pytest.raises(ImageTooLargeError, match="200x100"):
        open_image(tmp_path / "real.png", max_pixels=200 * 100 - 1)
    assert open_image(tmp_path / "real.png", max_pixels=200 * 100).size == (200, 100)


def test_imagefolder_skips_and_counts_bad_files(tmp_path: Path) -> None:
    write_odd_images(tmp_path / "ds" / "cats")
    write_odd_images(tmp_path / "ds" / "dogs")
    (tmp_path / "ds" / "dogs" / "bomb.png").write_bytes(png_header_only(5_000, 5_000))
    (tmp_path / "ds" / "dogs" / "notes.txt").write_text("not an image suffix: ignored")
    events = []
    bundle = folder_bundle(
        tmp_path / "ds",
        image_size=16,
        val_split=0.3,
        seed=0,
        max_pixels=1_000_000,
        events=lambda kind, message, data=None: events.append((kind, message, data)),
    )
    # per class: 6 readable of 9 image files; dogs also has the bomb
    assert bundle.stats["corrupt_images_skipped"] == 6
    assert bundle.stats["oversized_images_skipped"] == 1
    assert bundle.stats["images"] == 12
    assert (bundle.stats["train_images"], bundle.stats["val_images"]) == (8, 4)
    assert bundle.class_names == ["cats", "dogs"]
    size = cached_side(16)
    assert bundle.train.data.images.shape == (8, 3, size, size)
    assert bundle.train.data.images.dtype == torch.uint8
    assert sorted(torch.bincount(bundle.val.data.labels).tolist()) == [2, 2]  # stratified
    assert [e[:2] for e in events[:1]] == [("decoding", "decoding 19 images")]
    [(kind, message, data)] = events[1:]
    assert kind == "images_skipped" and "skipped 7 images" in message
    reported = {Path(e["path"]).name for e in data["examples"]}
    assert reported == {"corrupt.jpg", "truncated.png", "not_an_image.jpg", "bomb.png"}


def test_imagefolder_reads_train_and_test_split(datasets_dir: Path) -> None:
    events = []
    bundle = folder_bundle(
        datasets_dir / "classification" / "mnist160",
        image_size=28,
        val_split=0.5,
        seed=0,
        events=lambda kind, message, data=None: events.append(kind),
    )
    assert bundle.class_names == [str(d) for d in range(10)]
    assert (len(bundle.train), len(bundle.val)) == (80, 80)  # test/ used, val_split ignored
    assert torch.bincount(bundle.val.data.labels).tolist() == [8] * 10
    assert bundle.val_files[0].startswith("test/0/")  # the frozen-set names of the split
    assert events == ["decoding", "dataset_split"]
    images = bundle.train.data.images
    assert images.shape == (80, 3, cached_side(28), cached_side(28))
    assert torch.equal(images[:, 0], images[:, 2])  # grey PNGs became 3 equal channels
    assert images.float().std() > 50  # real digits, not a blank cache


def test_imagefolder_on_a_handful_of_flower_jpegs(datasets_dir: Path, tmp_path: Path) -> None:
    flowers = datasets_dir / "classification" / "flowers5"
    for class_dir in sorted(flowers.iterdir()):
        (tmp_path / class_dir.name).mkdir()
        for jpeg in sorted(class_dir.glob("*.jpg"))[:6]:
            (tmp_path / class_dir.name / jpeg.name).symlink_to(jpeg)
    bundle = folder_bundle(tmp_path, image_size=64, val_split=0.34, seed=1)
    assert bundle.class_names == ["daisy", "dandelion", "rose", "sunflower", "tulip"]
    assert (len(bundle.train), len(bundle.val)) == (20, 10)
    assert torch.bincount(bundle.val.data.labels).tolist() == [2] * 5
    assert bundle.train.data.images.shape[1:] == (3, 73, 73)


@pytest.mark.parametrize("layout", ["missing", "empty", "no_class_folders", "only_text"])
def test_imagefolder_unusable_paths_name_the_path(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "dataset"
    if layout != "missing":
        root.mkdir()
    if layout == "no_class_folders":
        Image.new("RGB", (8, 8)).save(root / "loose.png")
    if layout == "only_text":
        (root / "cats").mkdir()
        (root / "cats" / "readme.txt").write_text("no images")
    with pytest.raises(UserError, match=re.escape(str(root))):
        folder_bundle(root, image_size=16, val_split=0.2, seed=0)


def test_imagefolder_with_only_corrupt_files_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(UserError, match=re.escape(f"{tmp_path} has no readable images")):
        folder_bundle(tmp_path, image_size=16, val_split=0.2, seed=0)


def test_stratified_split_is_deterministic_and_per_class() -> None:
    labels = [0] * 10 + [1] * 5 + [2]
    train, val = stratified_split(labels, val_fraction=0.2, seed=3)
    assert sorted(train + val) == list(range(16))
    assert [labels[i] for i in val].count(0) == 2
    assert [labels[i] for i in val].count(1) == 1
    assert 15 in train  # a single image stays in training
    assert (train, val) == stratified_split(labels, val_fraction=0.2, seed=3)
    assert val != stratified_split(labels, val_fraction=0.2, seed=4)[1]


def test_builtin_digits_and_unknown_names() -> None:
    bundle = get_task("classification").build_data(
        DataConfig(uri="builtin://digits", format="builtin", image_size=32)
    )
    assert (len(bundle.train), len(bundle.val)) == (1438, 359)
    assert bundle.train.data.images.shape[1:] == (3, 36, 36)
    assert bundle.train.data.images.max() == 255 and bundle.train.data.images.min() == 0
    with pytest.raises(UserError, match="valid for classification: builtin://digits"):
        get_builtin("builtin://cifar10", task="classification")
    with pytest.raises(
        UserError,
        match=r"dataset\.format 'coco' is not a classification format; valid: imagefolder, builtin",
    ):
        get_task("classification").build_data(DataConfig(uri="/x", format="coco"))


def test_transforms_switch_off_to_the_eval_pipeline() -> None:
    square = torch.randint(0, 256, (3, 36, 36), dtype=torch.uint8)
    off = AugmentConfig(
        random_resized_crop=False, horizontal_flip=False, rotation_degrees=0, color_jitter=False
    )
    preprocess = Preprocess.center_crop(32)
    expected = preprocess.normalize(square)
    assert expected.shape == (3, 32, 32) and expected.dtype == torch.float32
    assert abs(float(expected.mean())) < 0.5  # normalised: roughly centred
    torch.testing.assert_close(train_transform(off, preprocess=preprocess)(square), expected)
    flip_only = AugmentConfig(
        random_resized_crop=False, horizontal_flip=True, rotation_degrees=0, color_jitter=False
    )
    outputs = [train_transform(flip_only, preprocess=preprocess)(square) for _ in range(20)]
    mirrored = [torch.equal(out, expected.flip(-1)) for out in outputs]
    assert all(m or torch.equal(out, expected) for m, out in zip(mirrored, outputs, strict=True))
    assert 0 < sum(mirrored) < 20
    everything = AugmentConfig(gaussian_noise=True, random_erasing=True)
    augmented = train_transform(everything, preprocess=preprocess)(square)
    assert augmented.shape == (3, 32, 32) and not torch.equal(augmented, expected)
