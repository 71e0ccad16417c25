"""What exists, by name: tasks, architectures, backbones, dataset formats, losses, metrics,
output columns, torchvision weights and builtin datasets. Plain data; no torch import.

The API process checks job specs against this module, so it starts in well under a second
and never loads torch. The task classes own the real registries (`TASKS[...]`'s
`architectures` / `backbones`, the format and loss tables); tests/tasks/test_catalog.py
holds this file to them, so a name added there and forgotten here fails the suite.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import MappingProxyType

WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".safetensors")  # what the tasks load as files
BUILTIN_PREFIX = "builtin://"
BUILTIN_FORMAT = "builtin"  # the format of every builtin:// dataset


@dataclass(frozen=True)
class TorchvisionWeights:
    """A torchvision weights enum: its class name and members ("DEFAULT" is an alias)."""

    enum: str  # e.g. "ResNet18_Weights"
    members: tuple[str, ...]  # e.g. ("IMAGENET1K_V1",)
    head: str  # the final layer's key prefix: re-initialised when the class count differs
    classifier: str  # the key prefix an encoder built from this model leaves out

    def names(self) -> tuple[str, ...]:
        """Every spelling the tasks accept: MEMBER, Enum.MEMBER, DEFAULT, Enum.DEFAULT."""
        members = (*self.members, "DEFAULT")
        return (*members, *(f"{self.enum}.{m}" for m in members))


# torchvision model name -> its ImageNet weights (torchvision 0.19 .. 0.29 ship these)
TORCHVISION_WEIGHTS: Mapping[str, TorchvisionWeights] = MappingProxyType(
    {
        "resnet18": TorchvisionWeights("ResNet18_Weights", ("IMAGENET1K_V1",), "fc.", "fc."),
        "resnet34": TorchvisionWeights("ResNet34_Weights", ("IMAGENET1K_V1",), "fc.", "fc."),
        "resnet50": TorchvisionWeights(
            "ResNet50_Weights", ("IMAGENET1K_V1", "IMAGENET1K_V2"), "fc.", "fc."
        ),
        "mobilenet_v3_small": TorchvisionWeights(
            "MobileNet_V3_Small_Weights", ("IMAGENET1K_V1",), "classifier.3.", "classifier."
        ),
        "mobilenet_v3_large": TorchvisionWeights(
            "MobileNet_V3_Large_Weights",
            ("IMAGENET1K_V1", "IMAGENET1K_V2"),
            "classifier.3.",
            "classifier.",
        ),
        "efficientnet_b0": TorchvisionWeights(
            "EfficientNet_B0_Weights", ("IMAGENET1K_V1",), "classifier.1.", "classifier."
        ),
        "convnext_tiny": TorchvisionWeights(
            "ConvNeXt_Tiny_Weights", ("IMAGENET1K_V1",), "classifier.2.", "classifier."
        ),
    }
)


# train.* values a job with model.weights gets where it leaves them out (null): the head
# learns alone for an epoch, then the backbone follows at a tenth of the learning rate
FINE_TUNE_DEFAULTS: Mapping[str, float] = MappingProxyType(
    {"freeze_backbone_epochs": 1, "backbone_lr_scale": 0.1}
)
# ... and one without weights (training from scratch: nothing to protect)
SCRATCH_DEFAULTS: Mapping[str, float] = MappingProxyType(
    {"freeze_backbone_epochs": 0, "backbone_lr_scale": 1.0}
)


# ---- presets and their budgets ---------------------------------------------------------------

# parameters and GFLOPs of every preset on every backbone, written by
# `python -m fovea.tasks.budgets` (which says how they are counted), checked by
# tests/tasks/test_budgets.py
MODEL_SIZES = Path(__file__).with_name("model_sizes.json")
SIZE_IMAGE = 640  # GFLOPs are of one 1x3x640x640 forward pass
SIZE_CLASSES: Mapping[str, int] = MappingProxyType({"detection": 80, "segmentation": 2})


@dataclass(frozen=True)
class Preset:
    """A named model size: the backbone it gets when model.backbone is null, and the most
    parameters it may have with that backbone (tests/tasks/test_budgets.py)."""

    default_backbone: str
    budget: int  # parameters, at SIZE_CLASSES classes
    reference: str  # what the budget is measured against
    alias_of: str | None = None  # a name kept from before presets: the same model


_SMP_UNET = "smp U-Net + resnet18: 14.3 M"
# torchvision's FeaturePyramidNetwork has a 3x3 output conv per level: 1.1 M more than U-Net
_SMP_FPN = _SMP_UNET + " (FPN: +1.1 M of output convs)"
_SMALL = "a small CNN for tests and small images on CPU"
DETECTION_PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        "yolo_n": Preset("tiny", 3_200_000, "YOLOv8n: 3.2 M"),
        "yolo_s": Preset("mobilenet_v3_large", 11_500_000, "YOLOv8s: 11.2 M"),
        "yolo_m": Preset("resnet18", 26_000_000, "YOLOv8m: 25.9 M"),
    }
)
SEGMENTATION_PRESETS: Mapping[str, Preset] = MappingProxyType(
    {
        # the names from before presets, first in every listing, so specs keep working
        "unet": Preset("resnet18", 14_500_000, _SMP_UNET, alias_of="unet_m"),
        "fpn": Preset("resnet18", 15_500_000, _SMP_FPN, alias_of="fpn_m"),
        "unet_n": Preset("tiny", 1_000_000, _SMALL),
        "unet_s": Preset("mobilenet_v3_large", 7_500_000, "about half of " + _SMP_UNET),
        "unet_m": Preset("resnet18", 14_500_000, _SMP_UNET),
        "fpn_n": Preset("tiny", 1_000_000, _SMALL),
        "fpn_s": Preset("mobilenet_v3_large", 7_500_000, "about half of " + _SMP_UNET),
        "fpn_m": Preset("resnet18", 15_500_000, _SMP_FPN),
    }
)


@cache
def model_sizes() -> dict[str, object]:
    """MODEL_SIZES as read: {"image_size", "num_classes", "flops", <task>: {arch: {backbone:
    {"params", "gflops"}}}}."""
    return json.loads(MODEL_SIZES.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class TaskInfo:
    name: str
    architectures: tuple[str, ...]
    # () when the architecture is the whole model (classification): no model.backbone
    backbones: tuple[str, ...]
    formats: tuple[str, ...]  # dataset.format values, "builtin" for builtin:// URIs
    main_metric: str  # what `champion` and early stopping compare
    # train.loss_weights names and their defaults; empty: one loss, nothing to weigh
    loss_weights: Mapping[str, float]
    output_columns: tuple[str, ...]  # columns of the registered model's predict() frame
    # arch (no backbones) or backbone -> torchvision model whose weights enum it loads
    torchvision_models: Mapping[str, str]
    image_size_multiple: int = 1  # train.image_size must divide by this
    class_map: bool = False  # dataset.class_map (value masks) applies, "masks" format only
    # arch -> its default backbone and budget; empty when there are no backbones
    presets: Mapping[str, Preset] = field(default_factory=lambda: MappingProxyType({}))

    def default_backbone_of(self, arch: str) -> str | None:
        """The backbone `arch` gets when model.backbone is null (None: no such preset)."""
        preset = self.presets.get(arch)
        return preset.default_backbone if preset else None

    @property
    def default_backbone(self) -> str | None:
        """The first architecture's default backbone: GET /catalog's `default_backbone`,
        from before each preset had its own (`presets`)."""
        return self.default_backbone_of(self.architectures[0])

    def weights_key(self, *, arch: str, backbone: str | None) -> str:
        """The part of the model that pretrained weights initialise."""
        return (backbone or self.default_backbone_of(arch) or arch) if self.backbones else arch

    def torchvision_weights(self, *, arch: str, backbone: str | None) -> TorchvisionWeights | None:
        model = self.torchvision_models.get(self.weights_key(arch=arch, backbone=backbone))
        return TORCHVISION_WEIGHTS[model] if model else None


def _frozen(mapping: Mapping[str, object]) -> Mapping:  # type: ignore[type-arg]
    return MappingProxyType(dict(mapping))


_RESNETS = {name: name for name in ("resnet18", "resnet34", "resnet50")}
_ENCODERS = ("tiny", "resnet18", "resnet34", "resnet50", "mobilenet_v3_large")

CATALOG: Mapping[str, TaskInfo] = MappingProxyType(
    {
        "classification": TaskInfo(
            name="classification",
            architectures=(
                "smallcnn",
                "resnet18",
                "resnet34",
                "resnet50",
                "mobilenet_v3_small",
                "mobilenet_v3_large",
                "efficientnet_b0",
                "convnext_tiny",
            ),
            backbones=(),
            formats=("imagefolder", BUILTIN_FORMAT),
            main_metric="top1",
            loss_weights=_frozen({}),  # cross-entropy alone (train.label_smoothing shapes it)
            output_columns=("class_id", "label", "score", "probabilities"),
            torchvision_models=_frozen(
                {
                    **_RESNETS,
                    "mobilenet_v3_small": "mobilenet_v3_small",
                    "mobilenet_v3_large": "mobilenet_v3_large",
                    "efficientnet_b0": "efficientnet_b0",
                    "convnext_tiny": "convnext_tiny",
                }
            ),
        ),
        "detection": TaskInfo(
            name="detection",
            architectures=tuple(DETECTION_PRESETS),
            backbones=_ENCODERS,
            formats=("coco", "yolo", "voc", BUILTIN_FORMAT),
            main_metric="map",
            loss_weights=_frozen({"cls": 1.0, "box": 2.0}),
            output_columns=("boxes", "scores", "labels", "class_names"),
            torchvision_models=_frozen({**_RESNETS, "mobilenet_v3_large": "mobilenet_v3_large"}),
            image_size_multiple=32,  # the coarsest feature stride
            presets=DETECTION_PRESETS,
        ),
        "segmentation": TaskInfo(
            name="segmentation",
            architectures=tuple(SEGMENTATION_PRESETS),
            backbones=_ENCODERS,
            formats=("masks", "yolo", "coco", BUILTIN_FORMAT),
            main_metric="miou",
            loss_weights=_frozen({"ce": 1.0, "dice": 1.0}),
            output_columns=("mask", "classes"),
            torchvision_models=_frozen({**_RESNETS, "mobilenet_v3_large": "mobilenet_v3_large"}),
            class_map=True,
            presets=SEGMENTATION_PRESETS,
        ),
    }
)

TASK_NAMES: tuple[str, ...] = tuple(CATALOG)


def get_task_info(name: str) -> TaskInfo:
    if name not in CATALOG:
        raise KeyError(f"unknown task {name!r}; valid: {', '.join(CATALOG)}")
    return CATALOG[name]


# ---- builtin datasets -----------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltinParam:
    default: int | None  # None: decided at load (e.g. the training image size)
    low: int
    high: int
    help: str


@dataclass(frozen=True)
class BuiltinDataset:
    tasks: frozenset[str]
    description: str
    params: Mapping[str, BuiltinParam] = field(default_factory=lambda: MappingProxyType({}))


BUILTIN_DATASETS: Mapping[str, BuiltinDataset] = MappingProxyType(
    {
        "digits": BuiltinDataset(
            tasks=frozenset({"classification"}),
            description="scikit-learn handwritten digits, 1,797 8x8 grey images, 10 classes",
        ),
        "shapes": BuiltinDataset(
            tasks=frozenset({"segmentation", "detection"}),
            description="generated circles, squares and triangles with exact masks and boxes",
            params=_frozen(
                {
                    "n": BuiltinParam(500, 1, 100_000, "number of images"),
                    "size": BuiltinParam(None, 16, 2048, "image side in pixels"),
                    "seed": BuiltinParam(0, 0, 2**31 - 1, "generator seed"),
                    "max_shapes": BuiltinParam(3, 1, 12, "shapes per image, at most"),
                }
            ),
        ),
    }
)


def builtin_problem(uri: str, *, task: str) -> str | None:
    """What is wrong with "builtin://<name>[?k=v&...]" for `task`, or None if it is fine."""
    name, _, query = uri.removeprefix(BUILTIN_PREFIX).partition("?")
    dataset = BUILTIN_DATASETS.get(name.strip("/"))
    fitting = sorted(n for n, d in BUILTIN_DATASETS.items() if task in d.tasks)
    listing = ", ".join(BUILTIN_PREFIX + n for n in fitting) or "none"
    if not uri.startswith(BUILTIN_PREFIX) or dataset is None:
        return f"unknown builtin dataset {uri!r}; valid for {task}: {listing}"
    if task not in dataset.tasks:
        return f"{uri!r} is for {', '.join(sorted(dataset.tasks))}, not {task}; valid: {listing}"
    seen: set[str] = set()
    for pair in query.split("&") if query else ():
        key, equals, value = pair.partition("=")
        param = dataset.params.get(key)
        if not equals or not key:
            return f"{uri!r}: parameters are written name=value, got {pair!r}"
        if param is None:
            return (
                f"{uri!r}: unknown parameter {key!r}; valid: {', '.join(dataset.params) or 'none'}"
            )
        if key in seen:
            return f"{uri!r}: parameter {key!r} is given twice"
        seen.add(key)
        number = _integer(value)
        if number is None or not param.low <= number <= param.high:
            return (
                f"{uri!r}: {key} must be an integer in [{param.low}, {param.high}], got {value!r}"
            )
    return None


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def catalog_json() -> dict[str, object]:
    """The catalog as plain JSON (GET /catalog): what a job spec may name, per task."""
    return {
        "tasks": {
            name: {
                "architectures": list(info.architectures),
                "backbones": list(info.backbones),
                "default_backbone": info.default_backbone,
                "presets": _presets_json(name, info),
                # every arch on every backbone: {"params": n, "gflops": g} (see model_sizes)
                "sizes": model_sizes().get(name, {}),
                "formats": list(info.formats),
                "main_metric": info.main_metric,
                "loss_weights": dict(info.loss_weights),
                "output_columns": list(info.output_columns),
                "image_size_multiple": info.image_size_multiple,
                "pretrained": {
                    key: TORCHVISION_WEIGHTS[model].enum
                    for key, model in info.torchvision_models.items()
                },
                # arch or backbone -> the architecture of the weights-store entries (and
                # torchvision classifiers, and registered Fovea classifiers) it starts from
                "weights_from": dict(info.torchvision_models),
                "builtin_datasets": sorted(
                    BUILTIN_PREFIX + n for n, d in BUILTIN_DATASETS.items() if name in d.tasks
                ),
            }
            for name, info in CATALOG.items()
        },
        "fine_tune_defaults": dict(FINE_TUNE_DEFAULTS),
        "model_sizes": {
            "image_size": SIZE_IMAGE,
            "num_classes": dict(SIZE_CLASSES),
            "gflops": "FLOPs / 1e9 of one forward pass at image_size, a multiply-add counted "
            "as 2 FLOPs (torch FlopCounterMode; convolutions and matrix products only)",
        },
        "builtin_datasets": {
            BUILTIN_PREFIX + name: {
                "tasks": sorted(d.tasks),
                "description": d.description,
                "params": {
                    key: {"default": p.default, "low": p.low, "high": p.high, "help": p.help}
                    for key, p in d.params.items()
                },
            }
            for name, d in BUILTIN_DATASETS.items()
        },
    }


def _presets_json(task: str, info: TaskInfo) -> dict[str, object]:
    """arch -> its default backbone, budget and size with that backbone."""
    sizes = model_sizes().get(task, {})
    return {
        arch: {
            "default_backbone": p.default_backbone,
            "budget_params": p.budget,
            "budget_reference": p.reference,
            "alias_of": p.alias_of,
            **sizes.get(arch, {}).get(p.default_backbone, {}),  # params, gflops
        }
        for arch, p in info.presets.items()
    }
