"""Training augmentations (torchvision.transforms.v2) on cached uint8 squares.

Inputs are the decode-once cache squares (uint8 [3, S, S] from `Preprocess.fit`, see
cache.py), so the pipelines never resize whole photos. Outputs are normalised with the
model's `Preprocess` mean and std, so training and evaluation feed the network alike;
evaluation needs no pipeline of its own (`Preprocess.normalize`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fovea.tasks.base import AugmentConfig
from fovea.tasks.preprocess import Preprocess

RANDOM_CROP_SCALE = (0.6, 1.0)  # milder than ImageNet's 0.08: datasets here are small
NOISE_SIGMA = 0.03  # in [0, 1] pixel units, before normalisation
ERASING_P = 0.25
COLOR_JITTER = {"brightness": 0.3, "contrast": 0.3, "saturation": 0.3}


def train_transform(augment: AugmentConfig, *, preprocess: Preprocess) -> v2.Compose:
    """Classification: cached square [3, S', S'] -> float [3, image_size, image_size]."""
    image_size = preprocess.image_size
    steps: list[v2.Transform] = []
    if augment.rotation_degrees > 0:
        # rotate the larger cached square first so the crop below cuts most black corners
        steps.append(v2.RandomRotation(augment.rotation_degrees))
    if augment.random_resized_crop:
        steps.append(v2.RandomResizedCrop(image_size, scale=RANDOM_CROP_SCALE, antialias=True))
    else:
        steps.append(v2.CenterCrop(image_size))
    if augment.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.color_jitter:
        steps.append(v2.ColorJitter(**COLOR_JITTER))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if augment.gaussian_noise:
        steps.append(v2.GaussianNoise(sigma=NOISE_SIGMA))  # clipped back to [0, 1]
    steps.append(v2.Normalize(list(preprocess.mean), list(preprocess.std)))
    if augment.random_erasing:
        # after normalising, so the erased patch (value 0) is the mean colour
        steps.append(v2.RandomErasing(p=ERASING_P, value=0.0))
    return v2.Compose(steps)


def joint_train_transform(
    augment: AugmentConfig, *, preprocess: Preprocess, ignore_index: int
) -> v2.Compose:
    """Image + label map (tv_tensors.Image, tv_tensors.Mask) -> float image, same-geometry
    mask. v2 moves the mask with the image and resamples it nearest-neighbour; colour
    jitter and noise touch only the image; pixels rotated in from outside the image are
    `ignore_index` in the mask. Inputs are the letterboxed cache squares at image_size.
    Random erasing is not applied: erased pixels would keep labels they no longer show.
    """
    steps: list[v2.Transform] = []
    if augment.rotation_degrees > 0:
        steps.append(
            v2.RandomRotation(
                augment.rotation_degrees,
                fill={tv_tensors.Image: 0, tv_tensors.Mask: ignore_index},
            )
        )
    if augment.random_resized_crop:
        steps.append(
            v2.RandomResizedCrop(preprocess.image_size, scale=RANDOM_CROP_SCALE, antialias=True)
        )
    if augment.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.color_jitter:
        steps.append(v2.ColorJitter(**COLOR_JITTER))
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    if augment.gaussian_noise:
        steps.append(v2.GaussianNoise(sigma=NOISE_SIGMA))
    steps.append(v2.Normalize(list(preprocess.mean), list(preprocess.std)))
    return v2.Compose(steps)


def normalize_image_only(preprocess: Preprocess) -> Callable[..., tuple]:
    """Evaluation of dense tasks: (image, target) -> (normalised image, target unchanged)."""

    def transform(image: torch.Tensor, target: object) -> tuple[torch.Tensor, object]:
        return preprocess.normalize(image.as_subclass(torch.Tensor)), target

    return transform
