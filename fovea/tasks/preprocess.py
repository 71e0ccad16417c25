"""The one input preprocessing of a model, built from its model card.

`Preprocess` is what a model sees of an image: a geometric step (`fit`: uint8 pixels to a
uint8 square) and a numeric one (`normalize`: the square to the float tensor the network
takes). Training caches `fit`'s squares once (data/cache.py) and normalises them every
epoch; evaluation, `predict_arrays`, ONNX export and the drift embeddings call the same
object built from the same card, so what a served model sees is what it was validated on
by construction (torchvision models own their transform the same way).

Two geometries:
- "center_crop" (classification): short side resized to `resize_size`, centre square
  (the cached square), then a centre crop of `image_size` (the 0.875 ratio of the
  torchvision references, 224 from 257).
- "letterbox" (detection, segmentation): long side resized to `image_size`, padded at the
  bottom and right with `pad_value`, so the whole image stays in view; outputs map back
  to the input by one scale factor (`scale`) and a crop (`content_size`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torchvision.transforms.v2 import functional as F

from fovea.tasks.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_RATIO = 1.15  # center_crop: cached square side / image_size

Geometry = Literal["center_crop", "letterbox"]


@dataclass(frozen=True)
class Preprocess:
    image_size: int  # side of the network's input square
    geometry: Geometry
    resize_size: int | None = None  # center_crop: side of the intermediate square
    pad_value: int = 0  # letterbox padding (0..255)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.geometry == "center_crop" and (self.resize_size or 0) < self.image_size:
            raise ValueError("center_crop needs resize_size >= image_size")

    @classmethod
    def center_crop(cls, image_size: int) -> Preprocess:
        return cls(image_size, "center_crop", resize_size=int(image_size * RESIZE_RATIO))

    @classmethod
    def letterbox(cls, image_size: int, *, pad_value: int = 0) -> Preprocess:
        return cls(image_size, "letterbox", pad_value=pad_value)

    # -- the card -----------------------------------------------------------------------

    def to_card(self) -> dict[str, Any]:
        card: dict[str, Any] = {
            "image_size": self.image_size,
            "resize": self.geometry,
            "mean": list(self.mean),
            "std": list(self.std),
        }
        if self.geometry == "center_crop":
            card["resize_size"] = self.resize_size
        else:
            card["pad_value"] = self.pad_value
        return card

    @classmethod
    def from_card(cls, card: Mapping[str, Any]) -> Preprocess:
        """Cards written before "resize" was recorded are center_crop when they carry a
        resize_size (classification), else letterbox padded with 0 (segmentation)."""
        try:
            geometry = card.get("resize") or (
                "center_crop" if "resize_size" in card else "letterbox"
            )
            return cls(
                image_size=int(card["image_size"]),
                geometry=geometry,
                resize_size=int(card["resize_size"]) if geometry == "center_crop" else None,
                pad_value=int(card.get("pad_value", 0)),
                mean=_triple(card.get("mean", IMAGENET_MEAN)),
                std=_triple(card.get("std", IMAGENET_STD)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"model card has no usable preprocessing: {exc}") from exc

    # -- geometry -----------------------------------------------------------------------

    @property
    def square_size(self) -> int:
        """Side of `fit`'s output (the cached squares)."""
        return self.resize_size if self.geometry == "center_crop" else self.image_size  # type: ignore[return-value]

    def fit(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, H, W] -> uint8 [..., 3, square_size, square_size]."""
        if self.geometry == "center_crop":
            return resize_and_center_crop(pixels, self.square_size)
        return letterbox(pixels, self.image_size, fill=self.pad_value)

    def fit_mask(self, masks: torch.Tensor, *, fill: int) -> torch.Tensor:
        """Integer label maps [..., H, W] with the geometry of `fit` (letterbox only):
        nearest-neighbour at pixel centres (labels are never blended), padding = `fill`."""
        if self.geometry != "letterbox":
            raise ValueError("label maps follow letterbox geometry only")
        return letterbox_mask(masks, self.image_size, fill=fill)

    def scale(self, height: int, width: int) -> float:
        """Input pixels -> network pixels (letterbox)."""
        return self.image_size / max(height, width)

    def content_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) of the image's part of the letterboxed square."""
        return letterbox_size(height, width, self.image_size)

    # -- numbers ------------------------------------------------------------------------

    def normalize(self, squares: torch.Tensor) -> torch.Tensor:
        """uint8 [..., 3, S', S'] (from `fit`) -> float [..., 3, image_size, image_size]."""
        if self.geometry == "center_crop" and squares.shape[-1] != self.image_size:
            squares = F.center_crop(squares, [self.image_size, self.image_size])
        # torchvision's own ops, as the training pipelines end: the same numbers bit for bit
        scaled = F.to_dtype(squares, torch.float32, scale=True)
        return F.normalize(scaled, list(self.mean), list(self.std))

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 3, H, W] -> the network's float input [N, 3, image_size, image_size]."""
        return self.normalize(self.fit(pixels))


def denormalize(
    images: torch.Tensor,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> torch.Tensor:
    """Normalised float [N, 3, H, W] -> uint8 [N, 3, H, W] for figures."""
    mean_t = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    return (images * std_t + mean_t).clamp(0, 1).mul(255).round().to(torch.uint8)


def as_nchw_rgb(images: np.ndarray) -> torch.Tensor:
    """An inference batch, uint8 NHW / NHWC (C = 1, 3 or 4) -> uint8 [N, 3, H, W]; alpha
    dropped, grey repeated."""
    array = np.asarray(images)
    if array.dtype != np.uint8:
        raise UserError(f"images must be uint8, got {array.dtype}")
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise UserError(f"images must be NHW or NHWC with 1, 3 or 4 channels, got {array.shape}")
    pixels = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)  # [N, C, H, W]
    if pixels.shape[1] == 1:
        return pixels.expand(-1, 3, -1, -1)
    return pixels[:, :3]


def resize_and_center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> [..., 3, size, size]: short side to `size`, then centre crop."""
    if images.shape[-2:] != (size, size):
        images = F.resize(images, [size], antialias=True)
        images = F.center_crop(images, [size, size])
    return images


def letterbox_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(h, w) of an image resized so its long side is `size`, aspect ratio kept."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def letterbox(images: torch.Tensor, size: int, *, fill: int = 0) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> [..., 3, size, size]: long side to `size` (antialiased),
    padded at the bottom and right with `fill`."""
    height, width = images.shape[-2:]
    h, w = letterbox_size(height, width, size)
    if (h, w) != (height, width):
        images = F.resize(images, [h, w], antialias=True)
    return torch.nn.functional.pad(images, (0, size - w, 0, size - h), value=fill)


def letterbox_mask(masks: torch.Tensor, size: int, *, fill: int) -> torch.Tensor:
    """Integer label maps [..., H, W] -> [..., size, size] with the geometry of `letterbox`."""
    height, width = masks.shape[-2:]
    h, w = letterbox_size(height, width, size)
    if (h, w) != (height, width):
        rows = ((torch.arange(h) + 0.5) * (height / h)).long().clamp_(max=height - 1)
        cols = ((torch.arange(w) + 0.5) * (width / w)).long().clamp_(max=width - 1)
        masks = masks[..., rows[:, None], cols[None, :]]
    padded = masks.new_full((*masks.shape[:-2], size, size), fill)
    padded[..., :h, :w] = masks
    return padded


def _triple(values: Sequence[float]) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return a, b, c
