"""Classification data: dataset formats to a DataBundle of (image, label) datasets."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from fovea.tasks.base import DataBundle, DataConfig, EventSink, UserError
from fovea.tasks.data.builtin import get_builtin
from fovea.tasks.data.cache import LabelledImages, SplitImages
from fovea.tasks.data.imagefolder import load_imagefolder
from fovea.tasks.data.transforms import eval_transform, train_transform


class ImageClassificationDataset(Dataset):
    """Cached uint8 squares -> (float [3, image_size, image_size], int64 label)."""

    def __init__(self, data: LabelledImages, *, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.data.images[index]), self.data.labels[index]


def _imagefolder(config: DataConfig, events: EventSink) -> SplitImages:
    return load_imagefolder(
        config.uri,
        image_size=config.image_size,
        val_split=config.val_split,
        seed=config.seed,
        max_pixels=config.max_image_pixels,
        events=events,
    )


def _builtin(config: DataConfig, events: EventSink) -> SplitImages:
    builtin = get_builtin(config.uri, task="classification")
    return builtin.load(image_size=config.image_size, val_split=config.val_split, seed=config.seed)


FORMATS: dict[str, Callable[[DataConfig, EventSink], SplitImages]] = {
    "imagefolder": _imagefolder,
    "builtin": _builtin,
}


def build_classification_data(config: DataConfig, *, events: EventSink) -> DataBundle:
    if config.format not in FORMATS:
        raise UserError(
            f"dataset.format {config.format!r} is not a classification format; "
            f"valid: {', '.join(FORMATS)}"
        )
    split = FORMATS[config.format](config, events)
    class_names = split.train.class_names
    if len(class_names) < 2:
        raise UserError(
            f"dataset {config.uri} has {len(class_names)} class(es); classification needs >= 2"
        )
    return DataBundle(
        train=ImageClassificationDataset(
            split.train, transform=train_transform(config.augment, image_size=config.image_size)
        ),
        val=ImageClassificationDataset(
            split.val, transform=eval_transform(image_size=config.image_size)
        ),
        class_names=class_names,
        stats=split.stats,
    )
