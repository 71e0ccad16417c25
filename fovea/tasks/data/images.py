"""Defensive image opening: size limit before decoding, EXIF orientation, every mode to RGB.

User-supplied files are untrusted: a header can claim billions of pixels (a decompression
bomb), a file can be truncated or not an image at all, and modes range from 1-bit to 16-bit
grey, palette, CMYK and alpha. Everything here turns such files into either an RGB image
or one of two typed errors that carry the path, so a dataset scan can skip and count them.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fovea.tasks.errors import UserError


class CorruptImageError(UserError):
    """A file that cannot be decoded as an image (truncated, not an image, bad data)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot read image {self.path}: {reason}")


class ImageTooLargeError(UserError):
    """An image whose header claims more pixels than allowed (possible decompression bomb)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"refusing image {self.path}: {reason}")


def open_image(path: str | Path, *, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Open `path` as an RGB image with its EXIF orientation applied.

    The size check reads only the header: PIL's `Image.open` is lazy, so nothing is decoded
    before `width * height <= max_pixels` holds. `draft_size` lets JPEG decoding downscale
    by a power of two on the fly (DCT scaling) while keeping both sides >= draft_size; that
    makes big photos several times cheaper to load when they are resized right after.

    Raises ImageTooLargeError for images above `max_pixels` and CorruptImageError for any
    file that cannot be decoded. PIL's own bomb guard (an error at 2x
    `PIL.Image.MAX_IMAGE_PIXELS`) still applies on top of `max_pixels`.
    """
    try:
        with warnings.catch_warnings():
            # we enforce our own limit below; PIL's warning above its default would be noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(path, f"{exc} (PIL's own guard); it was not decoded") from exc
    except FileNotFoundError as exc:
        raise CorruptImageError(path, "file not found") from exc
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError is an OSError
        raise CorruptImageError(path, _reason(exc)) from exc

    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLargeError(
                path,
                f"{width}x{height} = {width * height:,} pixels exceeds the limit of "
                f"{max_pixels:,} (possible decompression bomb); it was not decoded",
            )
        try:
            if draft_size is not None and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            rgb = to_rgb(_exif_upright(image))
            # the `with` closes `image`; a closed PIL image is unusable, so never return it
            return image.copy() if rgb is image else rgb
        except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as exc:
            raise CorruptImageError(path, _reason(exc)) from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB.

    High-bit-depth grey ("I;16*", "I", "F") is rescaled, not clipped: PIL's own
    `convert("RGB")` clips 16-bit values above 255, which turns most 16-bit images white.
    Alpha is dropped (as torchvision's `read_image(mode=RGB)` does); palette images with a
    transparency key go through RGBA first so PIL does not warn.
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I") or image.mode == "F":
        return Image.fromarray(_high_depth_to_uint8(np.asarray(image))).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image.convert("RGB")


def _high_depth_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """[H, W] integer or float grey of any depth -> [H, W] uint8."""
    if pixels.dtype.kind == "f":
        # floats are taken as [0, 1] when they fit there, else as [0, 255]
        scale = 255.0 if float(np.nanmax(pixels, initial=0.0)) <= 1.0 else 1.0
        pixels = np.nan_to_num(pixels.astype(np.float64) * scale)
        return np.clip(pixels, 0, 255).round().astype(np.uint8)
    peak = int(pixels.max(initial=0))
    if peak <= 255:  # 32-bit "I" images often hold plain 8-bit data
        return np.clip(pixels, 0, 255).astype(np.uint8)
    full_scale = 65535 if peak <= 65535 else peak  # 16-bit PNG/TIFF; wider data: own max
    return (
        (np.clip(pixels, 0, None).astype(np.float64) * (255.0 / full_scale))
        .round()
        .astype(np.uint8)
    )


def _exif_upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not cost us otherwise valid pixels
        return image


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
