"""Parameters and GFLOPs of every detection and segmentation preset on every backbone: the
table (`model_sizes.json`) that the torch-free catalog serves in GET /catalog.

`python -m fovea.tasks.budgets` rewrites the table after a model changes; `--check` only
compares (exit 1 on a difference). tests/tasks/test_budgets.py recomputes it the same way
and holds every preset, with its default backbone, to its budget in catalog.py.

How the numbers are counted, so they compare with published ones:
- parameters: every parameter of the model (`numel`), trainable or not, at the table's
  class count (detection 80, COCO's, as YOLOv8's published 3.2 / 11.2 / 25.9 M are;
  segmentation 2, a binary task, as smp's U-Net + resnet18 14.3 M is).
- GFLOPs: FLOPs / 1e9 of one forward pass of a 1x3x640x640 input, counted by
  `torch.utils.flop_counter.FlopCounterMode`, which counts a multiply-add as 2 FLOPs and
  counts convolutions and matrix products only (BatchNorm, activations, upsampling and
  additions are left out). That is the convention of Ultralytics' "GFLOPs" (2 x the MACs
  that thop counts), so yolo_n here and YOLOv8n's 8.7 compare. Detection: backbone, neck
  and head, before box decoding and NMS; segmentation: the whole model, logits at 640 px.

Models are built on the meta device (shapes, no memory, no arithmetic), so the whole table
takes seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fovea.tasks.catalog import MODEL_SIZES, SIZE_CLASSES, SIZE_IMAGE
from fovea.tasks.detection.model import DEFAULT_BACKBONES as DETECTION_DEFAULTS
from fovea.tasks.detection.model import LEVELS, build_detector
from fovea.tasks.segmentation.model import DEFAULT_BACKBONES as SEGMENTATION_DEFAULTS
from fovea.tasks.segmentation.model import build_segmenter

GFLOPS_DIGITS = 3  # 0.001 GFLOPs: under 0.1% of the smallest model's count
Size = dict[str, int | float]  # {"params": int, "gflops": float}


def _detector(arch: str, backbone: str) -> tuple[nn.Module, Callable[[torch.Tensor], object]]:
    model = build_detector(arch=arch, backbone=backbone, num_classes=SIZE_CLASSES["detection"])
    return model, lambda x: model.head(model.neck(model.backbone(x)[LEVELS]))


def _segmenter(arch: str, backbone: str) -> tuple[nn.Module, Callable[[torch.Tensor], object]]:
    classes = SIZE_CLASSES["segmentation"]
    model = build_segmenter(arch=arch, backbone=backbone, num_classes=classes)
    return model, model


BUILDERS = {
    "detection": (_detector, DETECTION_DEFAULTS),
    "segmentation": (_segmenter, SEGMENTATION_DEFAULTS),
}


def measure(task: str, *, arch: str, backbone: str) -> Size:
    """{"params": parameters, "gflops": GFLOPs at SIZE_IMAGE px} of one model (module doc)."""
    build, _ = BUILDERS[task]
    with torch.device("meta"):
        model, forward = build(arch, backbone)
        model.eval()
        with FlopCounterMode(display=False) as counter:
            forward(torch.zeros(1, 3, SIZE_IMAGE, SIZE_IMAGE))
    params = sum(p.numel() for p in model.parameters())
    return {"params": params, "gflops": round(counter.get_total_flops() / 1e9, GFLOPS_DIGITS)}


def default_backbones(task: str) -> dict[str, str]:
    """arch -> its default backbone, from the task's model.py."""
    return dict(BUILDERS[task][1])


def compute_table() -> dict[str, object]:
    """The contents of model_sizes.json: task -> arch -> backbone -> size."""
    from fovea.tasks.backbones import ENCODERS

    return {
        "image_size": SIZE_IMAGE,
        "num_classes": dict(SIZE_CLASSES),
        "flops": "FlopCounterMode, multiply-add = 2 FLOPs, convolutions and matmuls only",
        **{
            task: {
                arch: {b: measure(task, arch=arch, backbone=b) for b in ENCODERS}
                for arch in default_backbones(task)
            }
            for task in BUILDERS
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fovea.tasks.budgets", description=__doc__)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    table = compute_table()
    text = json.dumps(table, indent=1) + "\n"
    if args.check:
        same = MODEL_SIZES.read_text(encoding="utf-8") == text
        print(f"{MODEL_SIZES.name}: {'up to date' if same else 'differs: rerun without --check'}")
        return 0 if same else 1
    MODEL_SIZES.write_text(text, encoding="utf-8")
    for task in BUILDERS:
        for arch, backbone in default_backbones(task).items():
            size = table[task][arch][backbone]  # type: ignore[index]
            print(
                f"{task:<12} {arch:<7} {backbone:<19} {size['params'] / 1e6:6.2f} M "
                f"{size['gflops']:7.1f} GFLOPs@{SIZE_IMAGE}"
            )
    print(f"wrote {MODEL_SIZES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
