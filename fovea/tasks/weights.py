"""Reading pretrained weights safely: torchvision enums from the local cache, local files.

Shared by the tasks. A torchvision weights enum name loads only from the local torch hub
cache (workers are often offline, and a silent multi-minute download is worse than a clear
error); a local .pt/.pth/.safetensors file loads without unpickling code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from fovea.tasks.errors import UserError

log = logging.getLogger(__name__)

WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".safetensors")
SHOWN_KEYS = 5  # a message names at most this many keys
REPORT_ATTR = "fovea_weights_report"  # where a built model keeps its LoadReport


@dataclass(frozen=True)
class LoadReport:
    """What a weights file gave a model: for the job's events and the run."""

    source: str
    part: str  # the model part it went into: "model", "backbone" or "encoder"
    loaded: int  # tensors loaded
    fresh: tuple[str, ...]  # keys of the model's head left freshly initialised
    dropped: tuple[str, ...]  # keys of the file left out (a classifier's head)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "part": self.part,
            "loaded": self.loaded,
            "fresh": list(self.fresh),
            "dropped": list(self.dropped),
        }


def load_report(model: nn.Module) -> LoadReport | None:
    """The LoadReport of the weights file `model` was built from, if any."""
    return getattr(model, REPORT_ATTR, None)


def state_manifest(path: Path) -> dict[str, list[int]]:
    """Key -> shape of the state dict in a weights file (what the weights store records)."""
    return {key: list(value.shape) for key, value in read_weights_file(path).items()}


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


def load_with_fresh_head(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    head_prefix: str,
    source: Path,
    name: str,
    hint: str = "",
) -> LoadReport:
    """Load `state` into `model`; only parameters under `head_prefix` may be missing or
    differently shaped (fine-tuning on another number of classes keeps a fresh head).
    Anything else wrong is a UserError naming the file and a few offending keys."""
    own = model.state_dict()
    skipped = [k for k, v in state.items() if k in own and v.shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state]
    bad_skipped = [k for k in skipped if not k.startswith(head_prefix)]
    bad_missing = [k for k in missing if not k.startswith(head_prefix)]
    if bad_skipped or bad_missing or unexpected:
        raise UserError(
            f"weights file {source} does not fit {name}: "
            f"{len(bad_missing)} missing, {len(unexpected)} unexpected and "
            f"{len(bad_skipped)} differently shaped parameters outside the head "
            f"{head_prefix.rstrip('.')!r}, "
            f"e.g. {(bad_missing + unexpected + bad_skipped)[:SHOWN_KEYS]}"
            + (f" {hint}" if hint else "")
        )
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    if skipped or missing:
        log.info(
            "loaded %s into %s; head %r kept freshly initialised (%s)",
            source,
            name,
            head_prefix.rstrip("."),
            "shape differs" if skipped else "absent from the file",
        )
    report = LoadReport(
        source=str(source),
        part="model",
        loaded=len(state) - len(skipped),
        fresh=tuple(sorted({*skipped, *missing})),
        dropped=(),
    )
    setattr(model, REPORT_ATTR, report)
    return report


def load_classifier_body(
    body: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    classifier_prefixes: tuple[str, ...],
    source: str,
    part: str,
) -> LoadReport:
    """A torchvision classifier's state dict into a backbone / encoder built from it, its
    classifier layers left out; anything else missing, unexpected or differently shaped is
    a UserError naming a few keys and how many (never a silent partial load)."""
    kept = {k: v for k, v in state.items() if not k.startswith(classifier_prefixes)}
    own = body.state_dict()
    missing = [k for k in own if k not in kept]
    unexpected = [k for k in kept if k not in own]
    reshaped = [k for k, v in kept.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or reshaped:
        raise UserError(
            f"weights {source} do not fit the {part}: {len(missing)} missing, "
            f"{len(unexpected)} unexpected and {len(reshaped)} differently shaped keys, "
            f"e.g. {(missing + unexpected + reshaped)[:SHOWN_KEYS]}"
        )
    body.load_state_dict(kept)
    return LoadReport(
        source=source,
        part=part,
        loaded=len(kept),
        fresh=(),
        dropped=tuple(k for k in state if k not in kept),
    )


def split_weights(weights: str | None) -> tuple[str | None, Path | None]:
    """`model.weights` as (torchvision enum name, local weights file): at most one is set."""
    if weights is None:
        return None, None
    return (None, Path(weights)) if is_weights_file(weights) else (weights, None)


def load_weights_file(
    model: nn.Module,
    path: Path,
    encoder_attr: str,
    classifier_prefixes: tuple[str, ...],
    head_prefix: str,
    name: str,
    *,
    hint: str = "",
) -> LoadReport:
    """A weights file into a model built around an encoder (`model.<encoder_attr>`): either
    a whole model of this kind (keys under "<encoder_attr>."; the head may differ in shape,
    so fine-tuning on new classes works) or a torchvision classifier of the same backbone,
    whose body goes into the encoder."""
    state = read_weights_file(path)
    if not any(k.startswith(f"{encoder_attr}.") for k in state):
        report = load_classifier_body(
            model.get_submodule(encoder_attr),
            state,
            classifier_prefixes=classifier_prefixes,
            source=str(path),
            part=encoder_attr,
        )
        log.info("loaded %s into the %s of %s", path, encoder_attr, name)
        setattr(model, REPORT_ATTR, report)
        return report
    return load_with_fresh_head(
        model, state, head_prefix=head_prefix, source=path, name=name, hint=hint
    )


def _strip_prefixes(key: str) -> str:
    for prefix in ("module.", "_orig_mod."):
        key = key.removeprefix(prefix)
    return key
