"""Classification data: ImageFolder or builtin://digits to a DataBundle of (image, label)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from fovea.tasks.base import DataBundle, DataConfig, EventSink, UserError
from fovea.tasks.data.builtin import load_builtin
from fovea.tasks.data.cache import decode_and_report, skipped_counts
from fovea.tasks.data.files import RootGuard, relative_key
from fovea.tasks.data.imagefolder import read_imagefolder
from fovea.tasks.data.split import split_for
from fovea.tasks.data.transforms import train_transform
from fovea.tasks.preprocess import Preprocess


@dataclass
class LabelledImages:
    images: torch.Tensor  # [N, 3, S, S] uint8: Preprocess.fit squares
    labels: torch.Tensor  # [N] int64, indices into class_names
    keys: list[str]  # [N] relative paths ("#<index>" for builtin data)
    class_names: list[str]
    is_val: list[bool] | None = None  # the dataset's own split, if it has one

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: Sequence[int]) -> LabelledImages:
        index = torch.as_tensor(indices, dtype=torch.long)
        keys = [self.keys[i] for i in indices]
        return LabelledImages(self.images[index], self.labels[index], keys, self.class_names)


class ImageClassificationDataset(Dataset):
    """Cached uint8 squares -> (float [3, image_size, image_size], int64 label)."""

    def __init__(self, data: LabelledImages, *, transform: Callable[[torch.Tensor], torch.Tensor]):
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.data.images[index]), self.data.labels[index]


def _imagefolder(
    config: DataConfig, preprocess: Preprocess, events: EventSink
) -> tuple[LabelledImages, dict[str, int]]:
    dataset = read_imagefolder(config.uri, guard=RootGuard(config.roots))
    images = dataset.images
    decoded = decode_and_report(
        images,
        lambda position, _h, _w: images[position].label,
        preprocess=preprocess,
        config=config,
        events=events,
        draft=True,
    )
    kept = decoded.sources
    if dataset.val_folder is not None:
        events(
            "dataset_split",
            f"using {dataset.val_folder.name}/ as the validation split "
            f"({sum(i.is_val for i in kept)} images)",
            {"val_folder": str(dataset.val_folder)},
        )
    data = LabelledImages(
        decoded.images,
        torch.as_tensor(decoded.labels, dtype=torch.long),
        [relative_key(i.image, dataset.root) for i in kept],
        dataset.class_names,
        [i.is_val for i in kept] if dataset.val_folder is not None else None,
    )
    return data, {"classes": len(dataset.class_names), **skipped_counts(decoded.rejected)}


def _builtin(
    config: DataConfig, preprocess: Preprocess, events: EventSink
) -> tuple[LabelledImages, dict[str, int]]:
    digits = load_builtin(config.uri, task="classification", image_size=config.image_size)
    images = preprocess.fit(digits.images)
    keys = [f"#{i}" for i in range(len(images))]
    data = LabelledImages(images, digits.labels, keys, list(digits.class_names))
    return data, {"classes": len(digits.class_names), "corrupt_images_skipped": 0}


FORMATS: dict[str, Callable[..., tuple[LabelledImages, dict[str, int]]]] = {
    "imagefolder": _imagefolder,
    "builtin": _builtin,
}


def build_classification_data(
    config: DataConfig, *, preprocess: Preprocess, events: EventSink
) -> DataBundle:
    if config.format not in FORMATS:
        raise UserError(
            f"dataset.format {config.format!r} is not a classification format; "
            f"valid: {', '.join(FORMATS)}"
        )
    data, stats = FORMATS[config.format](config, preprocess, events)
    if len(data.class_names) < 2:
        raise UserError(
            f"dataset {config.uri} has {len(data.class_names)} class(es); classification needs >= 2"
        )
    split = split_for(config, keys=data.keys, is_val=data.is_val, labels=data.labels.tolist())
    train, val = data.subset(split.train), data.subset(split.val)
    _check_every_class_has_images(train, config.uri)
    return DataBundle(
        train=ImageClassificationDataset(
            train, transform=train_transform(config.augment, preprocess=preprocess)
        ),
        val=ImageClassificationDataset(val, transform=preprocess.normalize),
        class_names=data.class_names,
        stats={**stats, **split.stats},
        val_files=val.keys,
    )


def _check_every_class_has_images(train: LabelledImages, uri: str) -> None:
    counts = torch.bincount(train.labels, minlength=len(train.class_names))
    empty = [n for n, count in zip(train.class_names, counts.tolist(), strict=True) if not count]
    if empty:
        raise UserError(
            f"classes without readable training images in {uri}: {empty}; remove their "
            "folders or add images"
        )
