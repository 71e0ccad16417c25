"""Synthetic shapes: circles, squares and triangles on textured backgrounds, exactly labelled.

One generator for segmentation and detection alike. Each image holds 1..max_shapes
non-overlapping, fully visible shapes of random size, colour and position (triangles also
at a random rotation). Shapes are painted with hard edges and no anti-aliasing, so the
labels are exact, not approximations: a pixel belongs to a shape's mask if and only if it
was painted with that shape's colour, and each box is the tight pixel bound of its mask.

Image i depends only on (seed, i), never on the count: `count=400` gives the first 400
images of `count=800`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fovea.tasks.data.builtin import SHAPES_MIN_SIZE as MIN_SIZE
from fovea.tasks.data.cache import check_cache_fits

SHAPE_CLASSES = ("circle", "square", "triangle")
GAP = 2  # pixels kept free between two shapes
RADIUS_RANGE = (0.12, 0.25)  # of the image side: shape "radius" (circumradius, half side)
MIN_COLOUR_DISTANCE = 110.0  # RGB distance between a shape and its background's mean
PLACEMENT_TRIES = 60


@dataclass
class ShapesData:
    """Generated images with every label a segmentation or detection task needs.

    Class ids in `labels` index `class_names` (no background); semantic masks reserve 0
    for the background, so their values are 1 + class id.
    """

    images: torch.Tensor  # [N, 3, S, S] uint8
    semantic_masks: torch.Tensor  # [N, S, S] uint8: 0 background, 1 + class id
    instance_masks: torch.Tensor  # [N, S, S] uint8: 0 background, k for the image's k-th shape
    labels: list[torch.Tensor]  # per image [K] int64 class ids
    boxes: list[torch.Tensor]  # per image [K, 4] float32 xyxy, pixel edges (x2 = last col + 1)
    class_names: tuple[str, ...] = SHAPE_CLASSES

    def __len__(self) -> int:
        return int(self.images.shape[0])


def generate_shapes(*, count: int, size: int, seed: int, max_shapes: int = 3) -> ShapesData:
    """`count` images of `size` x `size` pixels with 1..`max_shapes` shapes each."""
    if count < 1 or size < MIN_SIZE or max_shapes < 1:
        raise ValueError(
            f"need count >= 1, size >= {MIN_SIZE}, max_shapes >= 1; got {count}, {size}, "
            f"{max_shapes}"
        )
    check_cache_fits(count, size)
    images = torch.empty((count, 3, size, size), dtype=torch.uint8)
    semantic = torch.empty((count, size, size), dtype=torch.uint8)
    instances = torch.empty((count, size, size), dtype=torch.uint8)
    labels, boxes = [], []
    for i in range(count):
        image, instance, classes = _render(np.random.default_rng([seed, i]), size, max_shapes)
        images[i] = torch.from_numpy(image).permute(2, 0, 1)
        instances[i] = torch.from_numpy(instance)
        lookup = np.concatenate([[0], np.asarray(classes, dtype=np.uint8) + 1])
        semantic[i] = torch.from_numpy(lookup[instance].astype(np.uint8))
        labels.append(torch.as_tensor(classes, dtype=torch.long))
        boxes.append(torch.from_numpy(_tight_boxes(instance, len(classes))))
    return ShapesData(images, semantic, instances, labels, boxes)


def _render(
    rng: np.random.Generator, size: int, max_shapes: int
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(image uint8 [S, S, 3], instance map uint8 [S, S], class id per instance)."""
    background = _background(rng, size)  # float [S, S, 3]
    mean_colour = background.reshape(-1, 3).mean(axis=0)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # pixel centres
    instance = np.zeros((size, size), dtype=np.uint8)
    image = background
    placed: list[tuple[float, float, float]] = []  # (cx, cy, bounding radius)
    classes: list[int] = []
    for _ in range(int(rng.integers(1, max_shapes + 1))):
        found = _place(rng, size, placed)
        if found is None:
            break
        cx, cy, radius = found
        class_id = int(rng.integers(len(SHAPE_CLASSES)))
        inside = _SHAPES[class_id](xs - cx, ys - cy, radius, rng)
        if not inside.any():  # cannot happen above MIN_SIZE; kept as a guard
            continue
        placed.append((cx, cy, radius))
        classes.append(class_id)
        instance[inside] = len(classes)
        colour = _contrasting_colour(rng, mean_colour)
        shade = colour + rng.normal(0.0, 6.0, size=(int(inside.sum()), 3))
        image[inside] = shade
    return np.clip(image, 0, 255).round().astype(np.uint8), instance, classes


def _place(
    rng: np.random.Generator, size: int, placed: list[tuple[float, float, float]]
) -> tuple[float, float, float] | None:
    """A centre and radius fully inside the image and GAP away from every placed shape."""
    low, high = RADIUS_RANGE
    for _ in range(PLACEMENT_TRIES):
        radius = max(3.0, float(rng.uniform(low, high)) * size)
        cx, cy = rng.uniform(radius + 1, size - radius - 1, size=2)
        if all(math.hypot(cx - x, cy - y) > radius + r + GAP for x, y, r in placed):
            return float(cx), float(cy), radius
    return None


def _circle(dx: np.ndarray, dy: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    return dx**2 + dy**2 <= radius**2


def _square(dx: np.ndarray, dy: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    half = radius / math.sqrt(2)  # corners on the bounding circle
    return (np.abs(dx) <= half) & (np.abs(dy) <= half)


def _triangle(
    dx: np.ndarray, dy: np.ndarray, radius: float, rng: np.random.Generator
) -> np.ndarray:
    """Equilateral, vertices on the bounding circle, at a random rotation."""
    angle = float(rng.uniform(0, 2 * math.pi))
    vertices = [
        (
            radius * math.cos(angle + k * 2 * math.pi / 3),
            radius * math.sin(angle + k * 2 * math.pi / 3),
        )
        for k in range(3)
    ]
    inside = np.ones(dx.shape, dtype=bool)
    for (x0, y0), (x1, y1) in zip(vertices, vertices[1:] + vertices[:1], strict=True):
        # counter-clockwise vertices: the inside is left of every edge
        inside &= (x1 - x0) * (dy - y0) - (y1 - y0) * (dx - x0) >= 0
    return inside


_SHAPES = (_circle, _square, _triangle)  # indexed by class id, in SHAPE_CLASSES order


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """float [S, S, 3]: two close colours blended by a random texture, plus pixel noise."""
    base = rng.uniform(30, 225, size=3)
    other = np.clip(base + rng.uniform(-40, 40, size=3), 0, 255)
    ys, xs = np.mgrid[0:size, 0:size] / size
    kind = int(rng.integers(4))
    angle = rng.uniform(0, 2 * math.pi)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    if kind == 0:  # linear gradient
        t = (along - along.min()) / max(float(np.ptp(along)), 1e-6)
    elif kind == 1:  # stripes
        t = 0.5 + 0.5 * np.sin(2 * math.pi * rng.uniform(2, 8) * along)
    elif kind == 2:  # checkerboard
        cells = int(rng.integers(3, 9))
        t = ((np.floor(xs * cells) + np.floor(ys * cells)) % 2).astype(np.float64)
    else:  # smooth blotches: a coarse random grid, bilinearly upsampled
        coarse = torch.from_numpy(rng.uniform(0, 1, size=(1, 1, 5, 5)))
        t = torch.nn.functional.interpolate(
            coarse, size=(size, size), mode="bilinear", align_corners=False
        )[0, 0].numpy()
    texture = base * (1 - t[..., None]) + other * t[..., None]
    return texture + rng.normal(0.0, 8.0, size=(size, size, 3))


def _contrasting_colour(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    best, best_distance = None, -1.0
    for _ in range(50):
        colour = rng.uniform(0, 255, size=3)
        distance = float(np.linalg.norm(colour - background))
        if distance >= MIN_COLOUR_DISTANCE:
            return colour
        if distance > best_distance:
            best, best_distance = colour, distance
    assert best is not None
    return best


def _tight_boxes(instance: np.ndarray, count: int) -> np.ndarray:
    """float32 [K, 4] xyxy pixel-edge bounds of each instance's pixels."""
    boxes = np.zeros((count, 4), dtype=np.float32)
    for k in range(count):
        rows, cols = np.nonzero(instance == k + 1)
        boxes[k] = (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
    return boxes
