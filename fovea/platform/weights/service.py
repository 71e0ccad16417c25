"""The weights store: pretrained files kept by content, with their provenance.

Layout under Settings.weights_dir (FOVEA_WEIGHTS_ROOT, default <home>/weights; every Ray
node must reach it, like the checkpoints):

    index.json                  {"entries": {name: entry}}: what `fovea weights list` shows
    blobs/<sha256>.pth          the file as imported (.pth or .safetensors), named by content
    manifests/<sha256>.json     its state dict's key -> shape, read at import (torch), so
                                the API checks a job's weights against a model without torch

A name is "<arch>/<tag>" ("resnet18/imagenet1k-v1"). A job spec names an entry; the
stored spec pins it to its content ("resnet18/imagenet1k-v1@sha256:<hex>"), so a job runs
on the file that was checked at submit. Every write holds an exclusive lock on the index
and replaces it atomically; this module is its only writer. Torch is imported only to
read a file being imported (the CLI's process), never by the API.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fovea.platform.errors import NotFound, WeightsRefused
from fovea.tasks.catalog import TORCHVISION_WEIGHTS, WEIGHT_FILE_SUFFIXES
from fovea.tasks.weight_fit import classifier_fit

NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
PIN = "@sha256:"
# torchvision's published files end in the first hex digits of their SHA-256
HASH_PREFIX = re.compile(r"-([0-9a-f]{8,64})$")
CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightsEntry:
    name: str
    arch: str  # the torchvision classifier architecture the file is, e.g. "resnet18"
    sha256: str
    size: int  # bytes
    format: str  # "pth" | "safetensors"
    file_name: str  # as imported
    source: str  # where it came from (a URL, a paper, "trained by us"): provenance
    licence: str
    imported_at: str  # ISO 8601, UTC
    keys: int  # tensors in its state dict
    classes: int | None  # rows of its head (1000 for ImageNet); None: no head in the file

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def is_reference(weights: str) -> bool:
    """Whether model.weights names a store entry ("<arch>/<tag>[@sha256:<hex>]") rather
    than a file, a torchvision enum or a registered model."""
    name, _, _ = weights.partition(PIN)
    return bool(NAME.match(name)) and not name.lower().endswith(WEIGHT_FILE_SUFFIXES)


def split_reference(weights: str) -> tuple[str, str | None]:
    """ "name@sha256:<hex>" -> (name, hex); a bare name -> (name, None)."""
    name, pin, digest = weights.partition(PIN)
    return name, (digest if pin else None)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class WeightsStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- reading -------------------------------------------------------------------------
    def entries(self) -> list[WeightsEntry]:
        return sorted(self._read().values(), key=lambda e: e.name)

    def get(self, name: str) -> WeightsEntry:
        entry = self._read().get(name)
        if entry is None:
            raise NotFound(f"no weights named {name!r} in the store; see `fovea weights list`")
        return entry

    def blob(self, *, sha256: str, suffix: str) -> Path:
        """The stored file of that content; `suffix` is an entry's format (pth, ...)."""
        return self.root / "blobs" / f"{sha256}.{suffix}"

    def path_of(self, entry: WeightsEntry) -> Path:
        return self.blob(sha256=entry.sha256, suffix=entry.format)

    def manifest(self, entry: WeightsEntry) -> dict[str, list[int]]:
        return json.loads((self.root / "manifests" / f"{entry.sha256}.json").read_text())

    def verify(self, name: str) -> WeightsEntry:
        """The entry, after re-hashing its file; WeightsRefused when the file changed."""
        entry = self.get(name)
        path = self.path_of(entry)
        if not path.is_file():
            raise WeightsRefused(f"weights {name!r}: the stored file {path} is gone")
        actual = sha256_of(path)
        if actual != entry.sha256:
            raise WeightsRefused(
                f"weights {name!r} were changed after import: the stored file's SHA-256 is "
                f"{actual}, recorded {entry.sha256}; remove and import them again"
            )
        return entry

    def resolve(self, reference: str) -> tuple[WeightsEntry, Path]:
        """A checked spec's pinned reference -> its entry and file (not re-hashed)."""
        name, digest = split_reference(reference)
        entry = self.get(name)
        if digest is not None and digest != entry.sha256:
            raise WeightsRefused(
                f"weights {name!r} now hold another file (SHA-256 {entry.sha256[:12]}...) "
                f"than the job was submitted with ({digest[:12]}...); submit it again"
            )
        return entry, self.path_of(entry)

    # -- writing -------------------------------------------------------------------------
    def add(
        self,
        file: Path,
        *,
        arch: str,
        name: str | None = None,
        source: str = "",
        licence: str = "",
    ) -> WeightsEntry:
        """Import `file` (a classifier's .pth/.pt or .safetensors state dict) as `name`
        (default "<arch>/<file stem>"). Refused: an unknown arch, a torchvision hash prefix
        in the file name that the content does not match, a file that does not fit `arch`
        beyond its head, a name already taken by another file."""
        from fovea.tasks.weights import state_manifest  # torch: the importing process only

        if arch not in TORCHVISION_WEIGHTS:
            raise WeightsRefused(
                f"unknown --arch {arch!r}; valid: {', '.join(TORCHVISION_WEIGHTS)}"
            )
        suffix = file.suffix.lower()
        if suffix not in WEIGHT_FILE_SUFFIXES:
            raise WeightsRefused(f"{file}: a weights file ends with {WEIGHT_FILE_SUFFIXES}")
        name = name or f"{arch}/{file.stem.lower()}"
        if not is_reference(name):
            raise WeightsRefused(
                f"weights name {name!r} must read <arch>/<tag> (letters, digits, _ . -)"
            )
        sha256 = sha256_of(file)
        prefix = HASH_PREFIX.search(file.stem)
        if prefix and not sha256.startswith(prefix.group(1)):
            raise WeightsRefused(
                f"{file.name}: the name promises SHA-256 {prefix.group(1)}..., the file's is "
                f"{sha256[: len(prefix.group(1))]}...: a corrupt or different file"
            )
        try:
            manifest = state_manifest(file)  # torch.load(weights_only=True) or safetensors
        except Exception as exc:  # fovea.tasks.UserError and anything the readers raise
            raise WeightsRefused(str(exc)) from None
        fit = classifier_fit(manifest, model=arch)
        if not fit.ok:
            raise WeightsRefused(f"{file.name} is not a {arch} state dict: {fit.problem()}")
        head = TORCHVISION_WEIGHTS[arch].head + "weight"
        entry = WeightsEntry(
            name=name,
            arch=arch,
            sha256=sha256,
            size=file.stat().st_size,
            format="safetensors" if suffix == ".safetensors" else "pth",
            file_name=file.name,
            source=source,
            licence=licence,
            imported_at=datetime.now(UTC).isoformat(timespec="seconds"),
            keys=len(manifest),
            classes=manifest[head][0] if head in manifest else None,
        )
        with self._locked() as index:
            taken = index.get(name)
            if taken is not None and taken.sha256 != sha256:
                raise WeightsRefused(
                    f"weights {name!r} already hold another file ({taken.sha256[:12]}...); "
                    "remove them first or choose --name"
                )
            self._write_blob(file, entry=entry, manifest=manifest)
            index[name] = entry
            self._write(index)
        return entry

    def remove(self, name: str) -> WeightsEntry:
        """Drop `name`; its file goes when no other name holds it."""
        with self._locked() as index:
            entry = index.pop(name, None)
            if entry is None:
                raise NotFound(f"no weights named {name!r} in the store")
            self._write(index)
            if not any(e.sha256 == entry.sha256 for e in index.values()):
                self.path_of(entry).unlink(missing_ok=True)
                (self.root / "manifests" / f"{entry.sha256}.json").unlink(missing_ok=True)
        return entry

    # -- files ---------------------------------------------------------------------------
    def _read(self) -> dict[str, WeightsEntry]:
        path = self.root / "index.json"
        if not path.is_file():
            return {}
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {name: WeightsEntry(**fields) for name, fields in raw["entries"].items()}

    def _write(self, index: dict[str, WeightsEntry]) -> None:
        body = {"entries": {name: e.as_dict() for name, e in sorted(index.items())}}
        _atomic_write(self.root / "index.json", json.dumps(body, indent=1).encode())

    def _write_blob(self, file: Path, *, entry: WeightsEntry, manifest: dict) -> None:
        blob = self.path_of(entry)
        if not blob.is_file():
            blob.parent.mkdir(parents=True, exist_ok=True)
            partial = blob.with_suffix(".partial")
            shutil.copyfile(file, partial)
            if sha256_of(partial) != entry.sha256:  # changed while we copied it
                partial.unlink()
                raise WeightsRefused(f"{file} changed while it was being imported; try again")
            os.replace(partial, blob)
        manifests = self.root / "manifests"
        manifests.mkdir(parents=True, exist_ok=True)
        _atomic_write(manifests / f"{entry.sha256}.json", json.dumps(manifest).encode())

    @contextmanager
    def _locked(self) -> Iterator[dict[str, WeightsEntry]]:
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / ".lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield self._read()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
