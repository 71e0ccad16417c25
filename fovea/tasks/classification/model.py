"""Classification architectures: torchvision backbones with a new head, plus a small CNN.

`ARCHITECTURES` is the explicit list. Weights (ModelConfig.weights) are either a
torchvision enum name, loaded only from the local torch hub cache (workers are often
offline, and a silent multi-minute download is worse than a clear error), or a local
.pt/.pth/.safetensors file, loaded without unpickling code and with the classifier head
skipped when its shape differs, so fine-tuning on a new number of classes works.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from fovea.tasks.base import UserError

log = logging.getLogger(__name__)


class SmallCNN(nn.Module):
    """Five 3x3 conv layers, two stride-2 downsamplings, global pooling: for 16-64 px inputs.

    With width 24: 0.16M parameters and ~17 MMACs at 32x32, about 800 images/s for a
    training step on 2 CPU cores; any input size works thanks to the global pooling.
    """

    def __init__(self, *, num_classes: int, width: int = 24, dropout: float = 0.1) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv_bn(3, w),  # [N, w, H, W]
            _conv_bn(w, 2 * w, stride=2),  # [N, 2w, H/2, W/2]
            _conv_bn(2 * w, 2 * w),
            _conv_bn(2 * w, 4 * w, stride=2),  # [N, 4w, H/4, W/4]
            _conv_bn(4 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w, num_classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.features(images)  # [N, 4w, H/4, W/4]
        return self.head(self.pool(features))  # [N, num_classes] logits


def _conv_bn(c_in: int, c_out: int, *, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


@dataclass(frozen=True)
class Arch:
    build: Callable[[], nn.Module]  # the model with its original head
    head: str  # attribute path of the final nn.Linear, e.g. "fc" or "classifier.3"
    torchvision_name: str | None = None  # for resolving weights enums


def _tv(name: str, head: str) -> Arch:
    return Arch(lambda: torchvision.models.get_model(name, weights=None), head, name)


ARCHITECTURES: dict[str, Arch] = {
    "smallcnn": Arch(lambda: SmallCNN(num_classes=10), "head.2"),
    "resnet18": _tv("resnet18", "fc"),
    "resnet34": _tv("resnet34", "fc"),
    "resnet50": _tv("resnet50", "fc"),
    "mobilenet_v3_small": _tv("mobilenet_v3_small", "classifier.3"),
    "mobilenet_v3_large": _tv("mobilenet_v3_large", "classifier.3"),
    "efficientnet_b0": _tv("efficientnet_b0", "classifier.1"),
    "convnext_tiny": _tv("convnext_tiny", "classifier.2"),
}
WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".safetensors")


def build_classifier(*, arch: str, num_classes: int, weights: str | None = None) -> nn.Module:
    """The model for `arch` with a `num_classes` head, in training mode."""
    spec = get_arch(arch)
    model = spec.build()
    if weights is not None and not weights.lower().endswith(WEIGHT_FILE_SUFFIXES):
        # torchvision weights fit the original (ImageNet) head: load before replacing it
        state, path = _torchvision_state_dict(spec, arch=arch, weights=weights)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"cached weights {path} do not fit {arch}: {exc}") from exc
    old_head = model.get_submodule(spec.head)
    if not isinstance(old_head, nn.Linear):
        raise TypeError(f"{arch}: {spec.head} is {type(old_head).__name__}, not nn.Linear")
    model.set_submodule(spec.head, nn.Linear(old_head.in_features, num_classes))
    if weights is not None and weights.lower().endswith(WEIGHT_FILE_SUFFIXES):
        _load_file_weights(model, spec, path=Path(weights), arch=arch)
    return model.train()


def get_arch(arch: str) -> Arch:
    if arch not in ARCHITECTURES:
        raise UserError(f"unknown model.arch {arch!r}; valid: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[arch]


def torchvision_cache_path(url: str) -> Path:
    """Where torch.hub keeps the file downloaded from `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def _torchvision_state_dict(
    spec: Arch, *, arch: str, weights: str
) -> tuple[dict[str, torch.Tensor], Path]:
    if "/" in weights or "\\" in weights:
        raise UserError(
            f"model.weights file {weights!r} must end with one of {WEIGHT_FILE_SUFFIXES}"
        )
    if spec.torchvision_name is None:
        raise UserError(
            f"model.weights {weights!r}: {arch} has no torchvision weights; use None or a "
            f"local file ({', '.join(WEIGHT_FILE_SUFFIXES)})"
        )
    enum = torchvision.models.get_model_weights(spec.torchvision_name)
    enum_name, _, member = weights.rpartition(".")
    if enum_name not in ("", enum.__name__) or member not in ("DEFAULT", *enum.__members__):
        valid = ["DEFAULT", *(f"{enum.__name__}.{m}" for m in enum.__members__)]
        raise UserError(f"model.weights {weights!r} do not fit {arch}; valid: {valid}")
    chosen = enum.DEFAULT if member == "DEFAULT" else enum[member]
    path = torchvision_cache_path(chosen.url)
    if not path.is_file():
        raise UserError(
            f"model.weights {weights!r} ({chosen}) are not in the local torch hub cache and "
            f"this machine appears offline, so they cannot be downloaded; expected the file "
            f"{path} (put it there, or train with weights=None)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True), path
    except Exception as exc:  # truncated download, wrong file under the expected name
        raise UserError(f"cannot load cached weights {path}: {exc}; delete the file") from exc


def _load_file_weights(model: nn.Module, spec: Arch, *, path: Path, arch: str) -> None:
    """Load a local weights file; only the head may be missing or differently shaped."""
    state = _read_weights_file(path)
    own = model.state_dict()
    head_prefix = spec.head + "."
    skipped = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    bad_skipped = [k for k in skipped if not k.startswith(head_prefix)]
    bad_missing = [k for k in missing if not k.startswith(head_prefix)]
    if bad_skipped or bad_missing or unexpected:
        raise UserError(
            f"weights file {path} does not fit model.arch {arch}: "
            f"{len(bad_missing)} missing, {len(unexpected)} unexpected and "
            f"{len(bad_skipped)} differently shaped parameters (outside the head "
            f"{spec.head!r}), e.g. {(bad_missing + unexpected + bad_skipped)[:5]}"
        )
    loadable = {k: v for k, v in state.items() if k not in skipped}
    model.load_state_dict(loadable, strict=False)
    if skipped or missing:
        log.info(
            "loaded %s into %s; head %r kept freshly initialised (%s)",
            path,
            arch,
            spec.head,
            "shape differs" if skipped else "absent from the file",
        )


def _read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"model.weights file {path} does not exist")
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, bad headers, truncation: all the user's file
        raise UserError(f"cannot load model.weights file {path}: {exc}") from exc
    if isinstance(raw, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(raw.get(key), Mapping):
                raw = raw[key]
                break
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise UserError(
            f"model.weights file {path} is not a state dict (name -> tensor), nor a dict "
            "holding one under 'state_dict' or 'model'"
        )
    # weights saved from DistributedDataParallel or torch.compile carry a prefix
    return {_strip_prefixes(str(k)): v for k, v in raw.items()}


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        key = key.removeprefix(prefix)
    return key
