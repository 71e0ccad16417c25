"""torchvision.transforms.v2 pipelines on cached uint8 tensors, built from AugmentConfig.

Inputs are the decode-once cache squares (uint8 [3, S, S], S = resize_size_for(image_size),
see cache.py), so the pipelines never resize whole photos: training takes a random-resized
crop of the square, evaluation its centre crop. Outputs are float [3, image_size,
image_size] normalised with the ImageNet statistics every torchvision backbone expects.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fovea.tasks.base import AugmentConfig

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RANDOM_CROP_SCALE = (0.6, 1.0)  # milder than ImageNet's 0.08: datasets here are small
NOISE_SIGMA = 0.03  # in [0, 1] pixel units, before normalisation
ERASING_P = 0.25


def train_transform(augment: AugmentConfig, *, image_size: int) -> v2.Compose:
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
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if augment.gaussian_noise:
        steps.append(v2.GaussianNoise(sigma=NOISE_SIGMA))  # clipped back to [0, 1]
    steps.append(v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    if augment.random_erasing:
        # after normalising, so the erased patch (value 0) is the mean colour
        steps.append(v2.RandomErasing(p=ERASING_P, value=0.0))
    return v2.Compose(steps)


def eval_transform(
    *,
    image_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Centre crop + normalise; works on [3, S, S] and on batches [N, 3, S, S] alike."""
    return v2.Compose(
        [
            v2.CenterCrop(image_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Normalised float [N, 3, H, W] -> uint8 [N, 3, H, W] for figures."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images * std + mean).clamp(0, 1).mul(255).round().to(torch.uint8)


def joint_train_transform(
    augment: AugmentConfig, *, image_size: int, ignore_index: int
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
        steps.append(v2.RandomResizedCrop(image_size, scale=RANDOM_CROP_SCALE, antialias=True))
    if augment.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.color_jitter:
        steps.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3))
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    if augment.gaussian_noise:
        steps.append(v2.GaussianNoise(sigma=NOISE_SIGMA))
    steps.append(v2.Normalize(IMAGENET_MEAN, IMAGENET_STD))
    return v2.Compose(steps)


def joint_eval_transform() -> v2.Compose:
    """Image + mask at image_size already (letterboxed cache): only scale and normalise."""
    return v2.Compose(
        [
            v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
