"""Segmentation benchmark: U-Net and FPN side by side on builtin://shapes and ISBI 2012.

Each (dataset, architecture) pair trains from scratch through `fovea.tasks` and the shared
engine (no pretrained weights: workers are offline) with a fixed seed and split, then
reports on the validation split:
- mIoU, mean Dice and pixel accuracy (dataset-level, from one pixel confusion matrix);
- training images/s (steady state, as FitResult.train_images_per_s: data loading included,
  evaluation and the first 10% of the first epoch's steps excluded);
- inference latency per image: median over `--latency-runs` single-image calls of
  `predict_arrays` (uint8 image in, class-index mask out: letterbox, normalise, forward,
  upsample, argmax), after warm-up.

Defaults keep the whole run near 10 minutes on 2 busy CPU cores with 1 torch thread (on a
shared machine, 2 threads were ~15x slower than 1 here); scale up with --epochs-*,
--shapes-n, --*-size, --threads, --backbone. Run: `python bench/segmentation.py --help`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
ISBI = REPO.parent / "shared" / "datasets" / "segmentation" / "isbi2012-membrane"
ISBI_CLASS_MAP = {0: "membrane", 255: "cell"}  # black lines between cells, white interiors


@dataclass
class Row:
    dataset: str
    arch: str
    backbone: str
    image_size: int
    epochs: int
    train_val: str
    miou: float
    dice: float
    pixel_acc: float
    train_images_per_s: float
    latency_ms: float
    fit_s: float


def run_one(
    *,
    dataset: str,
    uri: str,
    fmt: str,
    arch: str,
    args: argparse.Namespace,
    image_size: int,
    epochs: int,
    lr: float,
    augment_all: bool,
) -> Row:
    from fovea.tasks import AugmentConfig, DataConfig, ModelConfig, TrainConfig, get_task
    from fovea.tasks.engine import fit

    task = get_task("segmentation")
    augment = (
        AugmentConfig()
        if augment_all
        else AugmentConfig(random_resized_crop=False, rotation_degrees=0, color_jitter=False)
    )
    data_config = DataConfig(
        uri=uri,
        format=fmt,
        image_size=image_size,
        val_split=0.2,
        seed=args.seed,
        augment=augment,
        class_map=ISBI_CLASS_MAP if fmt == "masks" else None,
    )
    data = task.build_data(data_config)
    torch.manual_seed(args.seed)
    model_config = ModelConfig(arch=arch, backbone=args.backbone)
    model = task.build_model(model_config, num_classes=len(data.class_names))
    train = TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=lr,
        weight_decay=1e-4,
        warmup_epochs=0.5,
        early_stopping_patience=None,
        seed=args.seed,
    )
    started = time.perf_counter()
    result = fit(task, model, data, train, device=torch.device("cpu"))
    fit_s = time.perf_counter() - started

    card = task.model_card(model_config, data_config, class_names=data.class_names)
    served = task.load_for_inference(card, result.state_dict)
    image = data.val.data.images[:1].permute(0, 2, 3, 1).numpy()  # uint8 [1, S, S, 3]
    for _ in range(3):  # warm-up: allocator, first-call costs
        task.predict_arrays(served, card, image)
    timings = []
    for _ in range(args.latency_runs):
        tick = time.perf_counter()
        task.predict_arrays(served, card, image)
        timings.append(time.perf_counter() - tick)
    metrics = result.metrics
    return Row(
        dataset=dataset,
        arch=arch,
        backbone=args.backbone,
        image_size=image_size,
        epochs=epochs,
        train_val=f"{len(data.train)}/{len(data.val)}",
        miou=metrics["miou"],
        dice=metrics["dice"],
        pixel_acc=metrics["pixel_acc"],
        train_images_per_s=result.train_images_per_s,
        latency_ms=1000 * statistics.median(timings),
        fit_s=fit_s,
    )


def print_table(rows: list[Row]) -> None:
    header = (
        f"{'dataset':<8} {'arch':<5} {'backbone':<9} {'size':>4} {'epochs':>6} "
        f"{'train/val':>9} {'mIoU':>6} {'Dice':>6} {'pix acc':>7} {'train img/s':>11} "
        f"{'infer ms/img':>12} {'fit s':>6}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.dataset:<8} {r.arch:<5} {r.backbone:<9} {r.image_size:>4} {r.epochs:>6} "
            f"{r.train_val:>9} {r.miou:>6.3f} {r.dice:>6.3f} {r.pixel_acc:>7.3f} "
            f"{r.train_images_per_s:>11.1f} {r.latency_ms:>12.1f} {r.fit_s:>6.0f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18", help="encoder of both models")
    parser.add_argument("--archs", default="unet,fpn")
    parser.add_argument("--datasets", default="shapes,isbi")
    parser.add_argument("--shapes-n", type=int, default=300, help="generated images")
    parser.add_argument("--shapes-size", type=int, default=64)
    parser.add_argument("--epochs-shapes", type=int, default=10)
    parser.add_argument("--isbi-size", type=int, default=128, help="512 px images resized")
    parser.add_argument("--epochs-isbi", type=int, default=25)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--latency-runs", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    datasets = {
        "shapes": dict(
            uri=f"builtin://shapes?n={args.shapes_n}&seed=0",
            fmt="builtin",
            image_size=args.shapes_size,
            epochs=args.epochs_shapes,
            augment_all=False,  # flips only: few epochs
        ),
        "isbi": dict(
            uri=str(ISBI),
            fmt="masks",
            image_size=args.isbi_size,
            epochs=args.epochs_isbi,
            augment_all=True,  # 24 training images
        ),
    }
    wanted = args.datasets.split(",")
    if "isbi" in wanted and not ISBI.is_dir():
        print(f"skipping isbi: {ISBI} is absent", file=sys.stderr)
        wanted.remove("isbi")
    started = time.perf_counter()
    rows = []
    for dataset in wanted:
        for arch in args.archs.split(","):
            row = run_one(dataset=dataset, arch=arch, args=args, lr=args.lr, **datasets[dataset])
            print(
                f"  {dataset} {arch}: mIoU {row.miou:.3f} in {row.fit_s:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    print(
        f"\nsegmentation bench: seed {args.seed}, val_split 0.2, batch {args.batch_size}, "
        f"lr {args.lr}, AdamW, {args.threads} thread(s), CPU, from scratch"
    )
    print_table(rows)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
