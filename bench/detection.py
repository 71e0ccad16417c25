"""Detection benchmark: yolo_n trained by the shared engine on builtin://shapes and on bccd.

For each dataset it prints mAP@[.5:.95] and mAP@.5 on the validation split (best epoch),
training images/s (steady state, as the engine measures it: data loading included,
evaluation excluded) and inference latency per image (batch of 1, median of --latency-runs)
without NMS (decoded boxes and scores for every cell) and with NMS (Detector.detect at the
evaluation threshold 0.001, i.e. the heaviest case).

Defaults: shapes with 2,500 images at 160 px (2,000 train, fixed seed), 8 epochs; bccd at
320 px, 20 epochs; both from scratch (no pretrained weights: the machines are offline). On
2 otherwise idle cores a shapes epoch takes ~30 s (~70 images/s), so the whole run is
about 10-15 minutes; with the cores shared it can take twice that or more (one run saw
epochs at 5-12 images/s while another benchmark ran). Scale with the flags, e.g.
`--shapes-epochs 4 --bccd-epochs 8`, `--skip-shapes`, `--skip-bccd`, `--backbone resnet18`.
Run: `python bench/detection.py` (or `--help`).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BCCD = REPO.parent / "shared" / "datasets" / "detection" / "bccd"


def run(
    *,
    label: str,
    uri: str,
    fmt: str,
    image_size: int,
    epochs: int,
    args: argparse.Namespace,
) -> dict[str, float]:
    from fovea.tasks import DataConfig, ModelConfig, TrainConfig, get_task
    from fovea.tasks.engine import fit

    task = get_task("detection")
    data_config = DataConfig(uri=uri, format=fmt, image_size=image_size, seed=args.seed)
    started = time.perf_counter()
    data = task.build_data(data_config)
    load_s = time.perf_counter() - started
    model = task.build_model(
        ModelConfig(arch=args.arch, backbone=args.backbone), num_classes=len(data.class_names)
    )
    config = TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=0.01,
        warmup_epochs=1.0,
        early_stopping_patience=None,
        seed=args.seed,
    )
    started = time.perf_counter()
    reporter = EpochPrinter(label)
    result = fit(task, model, data, config, device=torch.device("cpu"), reporter=reporter)
    fit_s = time.perf_counter() - started
    model.load_state_dict(result.state_dict)
    model.eval()
    without_nms, with_nms = latency(model, image_size=image_size, runs=args.latency_runs)
    figures = {
        "map": result.metrics["map"],
        "map_50": result.metrics["map_50"],
        "train_images_per_s": result.train_images_per_s,
        "latency_ms_no_nms": without_nms,
        "latency_ms_nms": with_nms,
    }
    print(
        f"{label}: {len(data.train)} train / {len(data.val)} val images at {image_size} px, "
        f"{len(data.class_names)} classes, {epochs} epochs (best {result.best_epoch}); "
        f"data {load_s:.1f} s, fit {fit_s:.0f} s\n"
        f"  mAP@[.5:.95] {figures['map']:.3f}   mAP@.5 {figures['map_50']:.3f}   "
        f"train {figures['train_images_per_s']:.1f} images/s   latency/image "
        f"{without_nms:.1f} ms without NMS, {with_nms:.1f} ms with NMS",
        flush=True,
    )
    return figures


class EpochPrinter:
    """Engine Reporter that prints one line per epoch (the bench runs for minutes)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.started = time.perf_counter()

    def log_metrics(self, metrics: dict[str, float], *, step: int) -> None:
        if "val/map" in metrics:
            print(
                f"  {self.label} epoch {step}: mAP {metrics['val/map']:.3f}, mAP@.5 "
                f"{metrics['val/map_50']:.3f}, {metrics['epoch/train_images_per_s']:.1f} "
                f"images/s, {time.perf_counter() - self.started:.0f} s so far",
                flush=True,
            )

    def progress(self, **kwargs: object) -> None:
        pass

    def event(self, kind: str, message: str, data: object = None) -> None:
        print(f"  {self.label}: {kind}: {message}", flush=True)

    def should_stop(self) -> bool:
        return False


@torch.no_grad()
def latency(model: torch.nn.Module, *, image_size: int, runs: int) -> tuple[float, float]:
    """Median milliseconds for one image: decoded outputs only, and detect() with NMS."""
    image = torch.randn(1, 3, image_size, image_size)
    timings: dict[str, list[float]] = {"decoded": [], "detect": []}
    for name, call in (
        ("decoded", lambda: model.decoded(image)),
        ("detect", lambda: model.detect(image, score_threshold=0.001)),
    ):
        for i in range(runs + 5):  # 5 warm-up calls
            tick = time.perf_counter()
            call()
            if i >= 5:
                timings[name].append((time.perf_counter() - tick) * 1000)
    return statistics.median(timings["decoded"]), statistics.median(timings["detect"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="yolo_n")
    parser.add_argument("--backbone", default="tiny", help="tiny | resnet18 | ... (see model.py)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--shapes-n", type=int, default=2500, help="images (80%% train)")
    parser.add_argument("--shapes-size", type=int, default=160)
    parser.add_argument("--shapes-epochs", type=int, default=8)
    parser.add_argument("--bccd-size", type=int, default=320)
    parser.add_argument("--bccd-epochs", type=int, default=20)
    parser.add_argument("--skip-shapes", action="store_true")
    parser.add_argument("--skip-bccd", action="store_true")
    parser.add_argument("--latency-runs", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"fovea detection bench: {args.arch}/{args.backbone}, {args.threads} threads, "
        f"torch {torch.__version__}, seed {args.seed}",
        flush=True,
    )
    if not args.skip_shapes:
        run(
            label="shapes",
            uri=f"builtin://shapes?n={args.shapes_n}&size={args.shapes_size}&seed={args.seed}",
            fmt="builtin",
            image_size=args.shapes_size,
            epochs=args.shapes_epochs,
            args=args,
        )
    if not args.skip_bccd:
        if not BCCD.is_dir():
            print(f"bccd: skipped, {BCCD} is absent")
            return
        run(
            label="bccd",
            uri=str(BCCD),
            fmt="voc",
            image_size=args.bccd_size,
            epochs=args.bccd_epochs,
            args=args,
        )


if __name__ == "__main__":
    main()
