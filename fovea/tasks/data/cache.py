"""Decode-once image cache: every image decoded and fitted a single time into a uint8 tensor.

Why: on a 2-core CPU worker, decoding a JPEG and resizing it each epoch costs more than a
small model's forward/backward pass. Decoding once up front (in a thread pool: PIL and
torch release the GIL) and keeping [N, 3, S, S] uint8 in memory makes every later epoch
pay only for tensor augmentations.

The trade-offs, accepted on purpose:
- memory: N * 3 * S^2 bytes (4,317 flowers at S=147: 280 MB; 10,000 images at S=257:
  2 GB); `MAX_CACHE_BYTES` refuses a dataset that would not fit with a clear UserError.
- the geometry is the model's (`Preprocess.fit`: a centred square a little larger than the
  input for classification, the letterboxed input square for dense tasks), fixed at cache
  time: multi-scale training would need a re-decode.

`decode_images` is the one decode loop of every format and task: a task gives the files,
the fit, and how to label an image once its size is known (a class, boxes, a mask).
Unreadable and oversized files are skipped, counted and reported once (`report_rejected`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar

import numpy as np
import torch
from PIL import Image

from fovea.tasks.base import DataConfig, EventSink
from fovea.tasks.data.files import Note
from fovea.tasks.data.images import CorruptImageError, ImageTooLargeError, open_image
from fovea.tasks.errors import UserError
from fovea.tasks.preprocess import Preprocess

MAX_CACHE_BYTES = 16 * 2**30
MAX_REPORTED_EXAMPLES = 10

S = TypeVar("S")
T = TypeVar("T")
L = TypeVar("L")


@dataclass
class Rejected:
    path: str
    reason: str
    too_large: bool  # else corrupt


@dataclass
class Decoded(Generic[L]):
    images: torch.Tensor  # [K, 3, S, S] uint8, the kept images in source order
    labels: list[L]  # [K]
    kept: list[int]  # source positions of the K kept images
    rejected: list[Rejected]
    sources: list = field(default_factory=list)  # [K] the kept sources (decode_and_report)


class ImageSource(Protocol):
    image: Path


def decode_parallel(
    decode: Callable[[S], T | Rejected], sources: Sequence[S]
) -> tuple[list[int], list[T], list[Rejected]]:
    """Run `decode` over `sources` on a small thread pool (PIL and torch release the GIL
    while decoding and resizing); returns the kept positions, their values in order, and
    the rejections for the caller to count and report."""
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        outcomes = list(pool.map(decode, sources))
    kept = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, Rejected)]
    rejected = [outcome for outcome in outcomes if isinstance(outcome, Rejected)]
    return kept, [outcomes[i] for i in kept], rejected  # type: ignore[misc]


def decode_images(
    paths: Sequence[Path],
    *,
    fit: Callable[[torch.Tensor], torch.Tensor],
    size: int,
    label_of: Callable[[int, int, int], L],
    max_pixels: int,
    uri: str,
    draft_size: int | None = None,
) -> Decoded[L]:
    """Decode `paths` into uint8 [K, 3, size, size] with `fit` (uint8 [3, H, W] -> [3,
    size, size]) and label each kept image with `label_of(position, height, width)`.

    A file that cannot be read or is over `max_pixels` (a label file too: `label_of` may
    raise CorruptImageError) is skipped and returned in `rejected`; a UserError from
    `label_of` (a mask that does not fit its image) fails the whole load.
    """
    check_cache_fits(len(paths), size)
    cache = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)

    def decode(position: int) -> L | Rejected:
        try:
            image = open_image(paths[position], max_pixels=max_pixels, draft_size=draft_size)
            label = label_of(position, image.height, image.width)
        except (ImageTooLargeError, CorruptImageError) as exc:
            return Rejected(exc.path, exc.reason, too_large=isinstance(exc, ImageTooLargeError))
        cache[position] = fit(pil_to_tensor(image))
        return label

    kept, labels, rejected = decode_parallel(decode, range(len(paths)))
    if not kept:
        raise UserError(f"dataset path {uri} has no readable images ({len(paths)} tried)")
    images = cache[kept] if len(kept) < len(paths) else cache
    return Decoded(images, labels, kept, rejected)


def decode_and_report(
    sources: Sequence[ImageSource],
    label_of: Callable[[int, int, int], L],
    *,
    preprocess: Preprocess,
    config: DataConfig,
    events: EventSink,
    draft: bool = False,
) -> Decoded[L]:
    """`decode_images` of the sources' images into `preprocess`'s squares, with the job
    events around it: how many images are being decoded (it takes a while), then the files
    skipped. `draft`: let JPEG decoding downscale on the fly (DCT scaling; big photos load
    several times faster). The kept sources come back in `Decoded.sources`."""
    report_decoding(len(sources), events)
    decoded = decode_images(
        [source.image for source in sources],
        fit=preprocess.fit,
        size=preprocess.square_size,
        label_of=label_of,
        max_pixels=config.max_image_pixels,
        uri=config.uri,
        draft_size=preprocess.square_size if draft else None,
    )
    report_rejected(decoded.rejected, events)
    decoded.sources = [sources[i] for i in decoded.kept]
    return decoded


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> uint8 [3, H, W]."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def check_cache_fits(count: int, size: int) -> None:
    needed = count * 3 * size * size
    if needed > MAX_CACHE_BYTES:
        raise UserError(
            f"{count:,} images at {size}x{size} would need {needed / 2**30:.1f} GiB of memory "
            f"(limit {MAX_CACHE_BYTES / 2**30:.0f} GiB); lower train.image_size or use "
            "fewer images"
        )


def skipped_counts(rejected: Sequence[Rejected]) -> dict[str, int]:
    """The job-event counters of files left out: unreadable vs over the pixel limit."""
    return {
        "corrupt_images_skipped": sum(not r.too_large for r in rejected),
        "oversized_images_skipped": sum(r.too_large for r in rejected),
    }


# ---- what a user should hear about: one event each, the same words for every task ----


def report_decoding(count: int, events: EventSink) -> None:
    """Before the decode pass, which takes a while on big datasets: the job shows it."""
    events("decoding", f"decoding {count:,} images", {"images": count})


def report_rejected(rejected: Sequence[Rejected], events: EventSink) -> None:
    if not rejected:
        return
    examples = [{"path": r.path, "reason": r.reason} for r in rejected[:MAX_REPORTED_EXAMPLES]]
    counts = skipped_counts(rejected)
    events(
        "images_skipped",
        f"skipped {len(rejected)} images: {counts['corrupt_images_skipped']} unreadable, "
        f"{counts['oversized_images_skipped']} over the pixel limit; e.g. "
        f"{examples[0]['path']}: {examples[0]['reason']}",
        {**counts, "examples": examples},
    )


def report_notes(notes: Sequence[Note], events: EventSink) -> None:
    for note in notes:
        events("dataset_note", note.message, {"kind": note.kind, "count": note.count})


def report_bad_labels(counts: Mapping[str, int], events: EventSink) -> dict[str, int]:
    """One "bad_labels" event for labels repaired or dropped; returns the counts as ints."""
    bad = {reason: int(n) for reason, n in counts.items()}
    if any(bad.values()):
        shown = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in bad.items() if n)
        events("bad_labels", f"repaired or dropped labels: {shown}", bad)
    return bad
