"""Reading pretrained weights safely: torchvision enums from the local cache, local files.

Shared by the tasks. A torchvision weights enum name loads only from the local torch hub
cache (workers are often offline, and a silent multi-minute download is worse than a clear
error); a local .pt/.pth/.safetensors file loads without unpickling code.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision

from fovea.tasks.base import UserError

WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".safetensors")


def is_weights_file(weights: str) -> bool:
    return weights.lower().endswith(WEIGHT_FILE_SUFFIXES)


def torchvision_cache_path(url: str) -> Path:
    """Where torch.hub keeps the file downloaded from `url`."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name


def torchvision_state_dict(
    *, torchvision_name: str | None, weights: str, arch: str
) -> tuple[dict[str, torch.Tensor], Path]:
    """The state dict of torchvision model `torchvision_name` for the enum name `weights`
    ("ResNet18_Weights.IMAGENET1K_V1", "IMAGENET1K_V1" or "DEFAULT"), and its cache path."""
    if "/" in weights or "\\" in weights:
        raise UserError(
            f"model.weights file {weights!r} must end with one of {WEIGHT_FILE_SUFFIXES}"
        )
    if torchvision_name is None:
        raise UserError(
            f"model.weights {weights!r}: {arch} has no torchvision weights; use None or a "
            f"local file ({', '.join(WEIGHT_FILE_SUFFIXES)})"
        )
    enum = torchvision.models.get_model_weights(torchvision_name)
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


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file (never unpickling code); DDP / compile prefixes off."""
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
