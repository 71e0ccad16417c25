"""What a job trained on: a manifest of the dataset's files and one digest over it.

Standard library only (no torch, no PIL): the API and scheduler processes use it to tell
whether a dataset changed since a model was trained, and workers to record what they read.

A manifest lists every regular file under the dataset folder (hidden files and folders
left out), by path relative to that folder (posix), with one line per file:
- mode "stat" (default, cheap: one stat() per file): `path \\t size \\t mtime_ns`. Adding,
  removing, renaming, resizing or rewriting a file changes the digest; so does `touch`
  or a copy that does not keep modification times (a false "changed", never a false
  "unchanged" short of a same-size rewrite that restores the old mtime).
- mode "content": `path \\t size \\t sha256(bytes)`: reads every byte, immune to mtimes.
The digest is sha256 over the sorted lines, written "sha256:<hex>". Builtin datasets
(`builtin://digits?...`) are generated from their URI, so the digest is that of the URI.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Mode = Literal["stat", "content", "uri"]
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Manifest:
    digest: str  # "sha256:<hex>"
    mode: Mode
    uri: str
    files: int  # files hashed
    bytes: int
    # files per top-level folder (for ImageFolder: per class), at most MAX_FOLDERS of them
    folders: dict[str, int] = field(default_factory=dict)
    missing: int = 0  # only when a file list was given: listed files that do not exist

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


MAX_FOLDERS = 200


def dataset_manifest(
    uri: str, *, mode: Mode = "stat", files: Iterable[str] | None = None
) -> Manifest:
    """The manifest of dataset folder `uri` (or of a builtin URI).

    `files`: hash only these relative posix paths (e.g. a frozen evaluation set); those
    that do not exist are counted in `missing`.
    """
    if uri.startswith("builtin://"):
        digest = "sha256:" + hashlib.sha256(uri.encode()).hexdigest()
        names = sorted(set(files or ()))
        if names:  # "#<index>" members of a builtin split: hash the list with the URI
            digest = _digest([uri, *names])
        return Manifest(digest=digest, mode="uri", uri=uri, files=len(names), bytes=0)
    if mode not in ("stat", "content"):
        raise ValueError(f"mode must be 'stat' or 'content', got {mode!r}")
    root = Path(uri)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    missing = 0
    if files is None:
        paths = sorted(_walk(root))
    else:
        paths = []
        for rel in sorted(set(files)):
            if (root / rel).is_file():
                paths.append(rel)
            else:
                missing += 1
    lines = []
    total = 0
    folders: Counter[str] = Counter()
    for rel in paths:
        full = root / rel
        st = full.stat()
        total += st.st_size
        third = _sha256_file(full) if mode == "content" else str(st.st_mtime_ns)
        lines.append(f"{rel}\t{st.st_size}\t{third}")
        if "/" in rel:
            folders[rel.split("/", 1)[0]] += 1
    return Manifest(
        digest=_digest(lines),
        mode=mode,
        uri=str(root),
        files=len(paths),
        bytes=total,
        folders=dict(sorted(folders.most_common(MAX_FOLDERS))),
        missing=missing,
    )


def _walk(root: Path) -> Iterable[str]:
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        rel_folder = Path(folder).relative_to(root)
        for name in names:
            if name.startswith("."):
                continue
            full = Path(folder) / name
            if full.is_file():
                yield (rel_folder / name).as_posix()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _digest(lines: Iterable[str]) -> str:
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogateescape"))
        h.update(b"\n")
    return "sha256:" + h.hexdigest()
