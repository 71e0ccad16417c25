"""Drift benchmark: false alarms and detection rates on real photos, and report speed.

A small classifier is trained on flowers5 (../shared/datasets/classification/flowers5)
through `fovea.tasks` with half the photos held out. The held-out half is split again:
one part becomes the frozen reference (profiled exactly as a registered version's is at the
end of training), the other is the pool live windows are drawn from. Every window of
`--window` images is profiled by the same code a serving replica runs (fovea/tasks/profile.py),
its embeddings projected and stored as float16 as the prediction log keeps them, and
tested with the platform's drift tests (fovea/platform/monitoring/statistics.py, default settings):
- same distribution: held-out photos the reference does not contain (false alarms);
- Gaussian blur sigma 2, brightness x0.6, JPEG quality 10: the same photos, shifted;
- coco128 photos (../shared/datasets/detection/coco128): a new camera and new scenes
  (random crops and flips, so each window holds `--window` distinct images).
Each condition runs `--windows` windows (seeds); the table prints the share of windows
whose verdict is "drift", the median seconds per report, and which test families fired.
Last, a report on 10,000 reference + 10,000 live embeddings (the report subsamples to its
maximum window) is timed.

Run: `python bench/drift.py` (about 5-10 minutes on 2 CPU cores); `--help` for sizes.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
sys.path.insert(0, str(REPO))


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from fovea.platform.monitoring.statistics import DriftSettings, Samples, compare
    from fovea.tasks import DataConfig, ModelConfig, TrainConfig, get_task
    from fovea.tasks.data.images import open_image
    from fovea.tasks.engine import fit
    from fovea.tasks.profile import profile_image_list
    from fovea.tasks.reference import build_reference

    print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
    task = get_task("classification")
    data_config = DataConfig(
        uri=str(DATASETS / "classification" / "flowers5"),
        format="imagefolder",
        image_size=args.image_size,
        val_split=0.5,
        seed=0,
    )
    bundle = task.build_data(data_config)
    model_config = ModelConfig(arch=args.arch)
    torch.manual_seed(0)
    model = task.build_model(model_config, num_classes=len(bundle.class_names))
    started = time.perf_counter()
    result = fit(
        task,
        model,
        bundle,
        TrainConfig(epochs=args.epochs, batch_size=64, lr=0.002, warmup_epochs=0.5),
        device=torch.device("cpu"),
    )
    print(
        f"trained {args.arch} at {args.image_size}px for {args.epochs} epochs in "
        f"{time.perf_counter() - started:.0f} s: top-1 {result.metrics['top1']:.3f}",
        flush=True,
    )
    card = task.model_card(model_config, data_config, class_names=bundle.class_names)
    served = task.load_for_inference(card, result.state_dict)

    root = Path(data_config.uri)
    held_out = [np.asarray(open_image(root / key, max_pixels=10**8)) for key in bundle.val_files]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(held_out))
    reference_images = [held_out[i] for i in order[: args.reference]]
    pool = [held_out[i] for i in order[args.reference :]]
    reference = build_reference(
        profile_image_list(task, served, card, reference_images),
        meta={"task": task.name, "class_names": bundle.class_names},
    )
    print(
        f"reference: {args.reference} photos, {reference.embeddings.shape[1]} components keep "
        f"{reference.explained_variance:.0%} of the embedding variance; live pool "
        f"{len(pool)} photos",
        flush=True,
    )
    ref_samples = Samples(reference.stats, reference.embeddings, reference.summary)
    coco = [
        np.asarray(Image.open(p).convert("RGB"))
        for p in sorted((DATASETS / "detection" / "coco128" / "images").rglob("*.jpg"))
    ]

    def profiled(images: list[np.ndarray]) -> Samples:
        profile = profile_image_list(task, served, card, images)
        logged = reference.project(profile.embeddings).astype(np.float16).astype(np.float32)
        return Samples(profile.stats, logged, profile.summary)

    conditions = {
        "same distribution": lambda r: [pool[i] for i in pick(r, len(pool), args.window)],
        "blur sigma 2": lambda r: shifted(pool, r, args.window, blur),
        "brightness x0.6": lambda r: shifted(pool, r, args.window, darker),
        "JPEG quality 10": lambda r: shifted(pool, r, args.window, jpeg10),
        "coco128 photos": lambda r: [
            crop(coco[i], r) for i in r.integers(0, len(coco), args.window)
        ],
    }
    settings = DriftSettings()
    print(f"\n{args.windows} windows of {args.window} images per condition; alpha {settings.alpha}")
    print(f"{'condition':<20} {'drift rate':>10} {'s/report':>9}  families that fired")
    rows = []
    for name, make in conditions.items():
        verdicts, seconds, fired = [], [], Counter()
        for seed in range(args.windows):
            live = profiled(make(np.random.default_rng(1000 + seed)))
            tick = time.perf_counter()
            window = compare(ref_samples, live, task=task.name, class_names=bundle.class_names,
                             settings=settings, seed=seed)  # fmt: skip
            seconds.append(time.perf_counter() - tick)
            verdicts.append(window.verdict)
            fired.update(f for f, p in window.family_p.items() if p < settings.alpha / 4)
        rate = verdicts.count("drift") / len(verdicts)
        rows.append((name, rate))
        families = ", ".join(f"{f} {n}/{args.windows}" for f, n in fired.most_common()) or "none"
        print(
            f"{name:<20} {rate:>10.0%} {statistics.median(seconds):>9.3f}  {families}", flush=True
        )

    big_ref = Samples(
        {k: np.random.default_rng(1).normal(size=10_000) for k in reference.stats},
        np.random.default_rng(2).normal(size=(10_000, 32)).astype(np.float32),
        [{"class_id": 0, "confidence": 0.9, "entropy": 0.1}] * 10_000,
    )
    big_live = Samples(
        {k: np.random.default_rng(3).normal(size=10_000) for k in reference.stats},
        np.random.default_rng(4).normal(size=(10_000, 32)).astype(np.float32),
        [{"class_id": 1, "confidence": 0.8, "entropy": 0.2}] * 10_000,
    )
    tick = time.perf_counter()
    compare(big_ref, big_live, task=task.name, class_names=bundle.class_names)
    big = time.perf_counter() - tick
    print(
        f"\nreport on 10,000 reference + 10,000 live embeddings: {big:.2f} s (subsampled to "
        f"{settings.max_reference} + {settings.max_window}; goal < 5 s)"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    false_alarms = rows[0][1]
    missed = [name for name, rate in rows[1:] if rate < 0.95]
    print(
        f"verdict: false alarms {false_alarms:.0%} (goal <= 5%), "
        + ("every shift detected in >= 95% of windows" if not missed else f"below 95%: {missed}")
    )


def pick(rng: np.random.Generator, total: int, count: int) -> np.ndarray:
    return rng.choice(total, size=count, replace=count > total)


def shifted(
    pool: list[np.ndarray], rng: np.random.Generator, count: int, change
) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    return [change(pool[i]) for i in pick(rng, len(pool), count)]


def blur(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(2)))


def darker(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(ImageEnhance.Brightness(Image.fromarray(pixels)).enhance(0.6))


def jpeg10(pixels: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=10)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def crop(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random square crop (60-100% of the short side), maybe mirrored, at 128 px like the
    flower photos: many distinct pictures from 128 photos."""
    height, width = pixels.shape[:2]
    side = int(min(height, width) * rng.uniform(0.6, 1.0))
    top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
    image = Image.fromarray(pixels[top : top + side, left : left + side]).resize((128, 128))
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(image)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reference", type=int, default=1000, help="held-out photos")
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--windows", type=int, default=20, help="windows per condition")
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args()


if __name__ == "__main__":
    main()
