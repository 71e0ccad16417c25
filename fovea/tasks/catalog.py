"""What exists, by name: tasks, architectures, backbones, dataset formats, losses, metrics,
output columns, torchvision weights and builtin datasets. Plain data; no torch import.

The API process checks job specs against this module, so it starts in well under a second
and never loads torch. The task classes own the real registries (`TASKS[...]`'s
`architectures` / `backbones`, the format and loss tables); tests/tasks/test_catalog.py
holds this file to them, so a name added there and forgotten here fails the suite.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class TaskInfo:
    name: str
    architectures: tuple[str, ...]
    # () when the architecture is the whole model (classification): no model.backbone
    backbones: tuple[str, ...]
    default_backbone: str | None
    formats: tuple[str, ...]  # dataset.format values, "builtin" for builtin:// URIs
    main_metric: str  # what `champion` and early stopping compare
    # train.loss_weights names and their defaults; empty: one loss, nothing to weigh
    loss_weights: Mapping[str, float]
    output_columns: tuple[str, ...]  # columns of the registered model's predict() frame
    # arch (no backbones) or backbone -> torchvision model whose weights enum it loads
    torchvision_models: Mapping[str, str]
    image_size_multiple: int = 1  # train.image_size must divide by this
    class_map: bool = False  # dataset.class_map (value masks) applies, "masks" format only

    def weights_key(self, *, arch: str, backbone: str | None) -> str:
        """The part of the model that pretrained weights initialise."""
        return (backbone or self.default_backbone or arch) if self.backbones else arch

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
            default_backbone=None,
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
            architectures=("yolo_n", "yolo_s", "yolo_m"),
            backbones=_ENCODERS,
            default_backbone="resnet18",
            formats=("coco", "yolo", "voc", BUILTIN_FORMAT),
            main_metric="map",
            loss_weights=_frozen({"cls": 1.0, "box": 2.0}),
            output_columns=("boxes", "scores", "labels", "class_names"),
            torchvision_models=_frozen({**_RESNETS, "mobilenet_v3_large": "mobilenet_v3_large"}),
            image_size_multiple=32,  # the coarsest feature stride
        ),
        "segmentation": TaskInfo(
            name="segmentation",
            architectures=("unet", "fpn"),
            backbones=_ENCODERS,
            default_backbone="resnet18",
            formats=("masks", "yolo", "coco", BUILTIN_FORMAT),
            main_metric="miou",
            loss_weights=_frozen({"ce": 1.0, "dice": 1.0}),
            output_columns=("mask", "classes"),
            torchvision_models=_frozen({**_RESNETS, "mobilenet_v3_large": "mobilenet_v3_large"}),
            class_map=True,
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
