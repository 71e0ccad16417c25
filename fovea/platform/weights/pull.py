"""`fovea weights pull`: a torchvision weights enum's published file, into the store.

Only here does Fovea download weights, and only when a person asks: never inside a job.
The file is checked against the SHA-256 prefix in its published name (the store's import
does that), taken from the local torch hub cache when it is already there, and refused
with the way round when this machine cannot reach the download.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from fovea.platform.errors import WeightsRefused
from fovea.platform.weights.service import WeightsEntry, WeightsStore
from fovea.tasks.catalog import TORCHVISION_WEIGHTS

LICENCE = "torchvision pretrained weights: see https://github.com/pytorch/vision#pre-trained-model-license"
TIMEOUT_S = 30.0


def store_name(arch: str, member: str) -> str:
    """("resnet18", "IMAGENET1K_V1") -> "resnet18/imagenet1k-v1"."""
    return f"{arch}/{member.lower().replace('_', '-')}"


def parse(name: str) -> tuple[str, str]:
    """ "resnet18/imagenet1k-v1", "ResNet18_Weights.IMAGENET1K_V1" or
    "ResNet18_Weights.DEFAULT" -> (arch, enum member)."""
    by_enum = {w.enum: arch for arch, w in TORCHVISION_WEIGHTS.items()}
    enum, dot, member = name.partition(".")
    if dot and enum in by_enum:
        arch = by_enum[enum]
    else:
        arch, _, tag = name.partition("/")
        member = tag.upper().replace("-", "_")
    weights = TORCHVISION_WEIGHTS.get(arch)
    if weights is None or member not in (*weights.members, "DEFAULT"):
        known = [store_name(a, m) for a, w in TORCHVISION_WEIGHTS.items() for m in w.members]
        raise WeightsRefused(f"unknown torchvision weights {name!r}; valid: {', '.join(known)}")
    return arch, weights.members[-1] if member == "DEFAULT" else member


def pull(store: WeightsStore, name: str, *, timeout_s: float = TIMEOUT_S) -> WeightsEntry:
    import torchvision

    from fovea.tasks.weights import torchvision_cache_path

    arch, member = parse(name)
    url = torchvision.models.get_model_weights(arch)[member].url
    entry_name = store_name(arch, member)
    cached = torchvision_cache_path(url)
    if cached.is_file():
        return store.add(cached, arch=arch, name=entry_name, source=url, licence=LICENCE)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / Path(url).name  # keeps the name's hash prefix for the check
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as answer, target.open("wb") as fh:
                shutil.copyfileobj(answer, fh)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WeightsRefused(
                f"cannot download {url} ({reason}): this machine looks offline. Fetch the file "
                f"where you can, then `fovea weights import {Path(url).name} --arch {arch} "
                f"--name {entry_name} --source {url}`"
            ) from None
        return store.add(target, arch=arch, name=entry_name, source=url, licence=LICENCE)
