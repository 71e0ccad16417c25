"""Preset benchmark: every detection and segmentation preset, with its default backbone,
trained at equal epochs on a shared dataset, to choose defaults by issue #29's rule (the
smallest preset within 1 point of the next larger one).

Detection presets (yolo_n / yolo_s / yolo_m) train on bccd (Pascal VOC, 3 classes, its own
ImageSets split); segmentation presets (unet_n/s/m, fpn_n/s/m; `unet` / `fpn` are aliases of
the `_m` ones and are not repeated) on ISBI 2012 membranes (30 images, 80/20 split). All
from scratch (offline machines: no pretrained weights), one seed, CPU. Per preset it prints:
- params and GFLOPs@640 (the catalog's table, `python -m fovea.tasks.budgets`: a
  multiply-add counts 2 FLOPs; detection at 80 classes, segmentation at 2);
- training images/s (FitResult.train_images_per_s: steady state, data loading included,
  evaluation excluded) with `--threads` torch threads;
- inference ms per image: median of `--latency-runs` forward passes of one 320 px image
  on ONE thread, after 3 warm-ups (detection: network and box decoding, no NMS;
  segmentation: logits at the input size);
- the main metric on the validation split at the best epoch: mAP@[.5:.95] / mIoU;
and the load average (os.getloadavg) before and after each preset, since the machine may
be shared. Small runs: `--epochs 2 --image-size 160 --limit 48`. Run:
`python bench/presets.py --help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Subset

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"
BCCD = DATASETS / "detection" / "bccd"
ISBI = DATASETS / "segmentation" / "isbi2012-membrane"
ISBI_CLASS_MAP = {0: "membrane", 255: "cell"}
LATENCY_SIZE = 320


@dataclass(frozen=True)
class Setting:
    """How one task's presets train: the dataset and the recipe they share."""

    uri: Path
    fmt: str
    batch_size: int
    lr: float
    weight_decay: float
    class_map: dict[int, str] | None = None


SETTINGS = {
    "detection": Setting(BCCD, "voc", batch_size=8, lr=3e-3, weight_decay=0.01),
    "segmentation": Setting(
        ISBI, "masks", batch_size=4, lr=2e-3, weight_decay=1e-4, class_map=ISBI_CLASS_MAP
    ),
}


@dataclass
class Row:
    task: str
    preset: str
    backbone: str
    params: int
    gflops: float
    train_val: str
    images_per_s: float
    latency_ms: float
    metric: float
    load_before: float
    load_after: float
    fit_s: float


def presets(task: str) -> list[tuple[str, str]]:
    """(arch, default backbone) of every preset of `task`, aliases left out."""
    from fovea.tasks.catalog import CATALOG

    return [
        (arch, p.default_backbone)
        for arch, p in CATALOG[task].presets.items()
        if p.alias_of is None
    ]


def run_one(task_name: str, arch: str, backbone: str, args: argparse.Namespace) -> Row:
    from fovea.tasks import DataConfig, ModelConfig, TrainConfig, get_task
    from fovea.tasks.catalog import model_sizes
    from fovea.tasks.engine import fit

    setting = SETTINGS[task_name]
    load_before = os.getloadavg()[0]
    task = get_task(task_name)
    data_config = DataConfig(
        uri=str(setting.uri),
        format=setting.fmt,
        image_size=args.image_size,
        seed=args.seed,
        class_map=setting.class_map,
    )
    data = task.build_data(data_config)
    if args.limit:  # the first images of each split, the same for every preset
        data = dataclasses.replace(
            data,
            train=Subset(data.train, range(min(args.limit, len(data.train)))),
            val=Subset(data.val, range(min(args.val_limit or args.limit, len(data.val)))),
        )
    torch.manual_seed(args.seed)
    model = task.build_model(ModelConfig(arch=arch), num_classes=len(data.class_names))
    config = TrainConfig(
        epochs=args.epochs,
        batch_size=setting.batch_size,
        lr=setting.lr,
        weight_decay=setting.weight_decay,
        warmup_epochs=min(1.0, args.epochs / 4),
        early_stopping_patience=None,
        seed=args.seed,
    )
    started = time.perf_counter()
    result = fit(task, model, data, config, device=torch.device("cpu"))
    fit_s = time.perf_counter() - started
    model.load_state_dict(result.state_dict)
    print(f"  {task_name} {arch}/{backbone}: fit {fit_s:.0f} s", file=sys.stderr, flush=True)
    size = model_sizes()[task_name][arch][backbone]  # type: ignore[index]
    return Row(
        task=task_name,
        preset=arch,
        backbone=backbone,
        params=int(size["params"]),
        gflops=float(size["gflops"]),
        train_val=f"{len(data.train)}/{len(data.val)}",
        images_per_s=result.train_images_per_s,
        latency_ms=latency_ms(model.eval(), task_name, runs=args.latency_runs),
        metric=result.metrics[task.main_metric],
        load_before=load_before,
        load_after=os.getloadavg()[0],
        fit_s=fit_s,
    )


@torch.no_grad()
def latency_ms(model: torch.nn.Module, task: str, *, runs: int) -> float:
    """Median ms for one LATENCY_SIZE image on one thread (module doc)."""
    forward = model.decoded if task == "detection" else model
    image = torch.randn(1, 3, LATENCY_SIZE, LATENCY_SIZE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        timings = []
        for i in range(runs + 3):
            tick = time.perf_counter()
            forward(image)
            if i >= 3:
                timings.append(1000 * (time.perf_counter() - tick))
    finally:
        torch.set_num_threads(threads)
    return statistics.median(timings)


def print_table(rows: list[Row]) -> None:
    print(
        f"{'task':<12} {'preset':<7} {'backbone':<18} {'params':>7} {'GFLOPs@640':>10} "
        f"{'train/val':>9} {'train img/s':>11} {'ms/img@320':>10} {'metric':>13} "
        f"{'load before/after':>17} {'fit s':>6}"
    )
    for r in rows:
        metric = f"{'mAP' if r.task == 'detection' else 'mIoU'} {r.metric:.3f}"
        print(
            f"{r.task:<12} {r.preset:<7} {r.backbone:<18} {r.params / 1e6:6.2f}M "
            f"{r.gflops:10.1f} {r.train_val:>9} {r.images_per_s:11.1f} {r.latency_ms:10.1f} "
            f"{metric:>13} {r.load_before:8.2f}/{r.load_after:<8.2f} {r.fit_s:6.0f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="the same for every preset")
    parser.add_argument("--image-size", type=int, default=320, help="training size, % 32 == 0")
    parser.add_argument("--limit", type=int, default=0, help="at most this many train images")
    parser.add_argument("--val-limit", type=int, default=0, help="... val images (--limit)")
    parser.add_argument("--tasks", default="detection,segmentation")
    parser.add_argument("--presets", default="", help="comma-separated; default: all")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    wanted = set(filter(None, args.presets.split(",")))
    started, load_start = time.perf_counter(), os.getloadavg()
    rows = []
    for task in args.tasks.split(","):
        if not SETTINGS[task].uri.is_dir():
            print(f"{task}: skipped, {SETTINGS[task].uri} is absent", file=sys.stderr)
            continue
        for arch, backbone in presets(task):
            if wanted and arch not in wanted:
                continue
            rows.append(run_one(task, arch, backbone, args))
    print(
        f"\npresets bench {time.strftime('%Y-%m-%d %H:%M')}: {args.epochs} epochs at "
        f"{args.image_size} px, limit {args.limit or 'none'}, seed {args.seed}, "
        f"{args.threads} training thread(s), CPU, from scratch, torch {torch.__version__}; "
        f"load average (1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in load_start)}, "
        f"at end {'/'.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print_table(rows)
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
