"""Finding files in a dataset folder, naming them, and keeping every read inside the roots.

Torch-free (the API's submit-time scan uses it). Every dataset format lists its files with
`image_files` and hands each file it will read to a `RootGuard`, so a symlink inside a
dataset (a class folder, an image, a label file) cannot lead a job to files outside the
configured data roots: the check holds for every file read, not only the top folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fovea.tasks.errors import UserError

# Suffixes a dataset scan treats as images (lower case); everything else is ignored.
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pbm"}
)
# Validation folder names, in order of preference when several exist.
VAL_FOLDERS = ("val", "valid", "validation", "test")


@dataclass(frozen=True)
class Note:
    """Something odd but usable about a dataset: a job event, and a warning at submit."""

    kind: str
    message: str
    count: int = 0


class RootGuard:
    """Refuses paths that resolve (symlinks followed) outside every data root.

    `roots` None checks nothing (a notebook, a test with its own files); the platform always
    passes its configured roots.
    """

    def __init__(self, roots: Sequence[str | Path] | None) -> None:
        self.roots = None if roots is None else tuple(Path(r).resolve() for r in roots)

    def __call__(self, path: Path) -> Path:
        if self.roots is None:
            return path
        resolved = path.resolve()
        if not any(resolved == r or resolved.is_relative_to(r) for r in self.roots):
            shown = ", ".join(str(r) for r in self.roots)
            raise UserError(
                f"{path} resolves to {resolved}, outside the data roots ({shown}); a symlink "
                "inside a dataset must point inside a data root"
            )
        return path

    def all(self, paths: Sequence[Path]) -> list[Path]:
        return [self(p) for p in paths]


def image_files(folder: Path) -> list[Path]:
    """Image files under `folder` (recursively, symlinked folders not entered), sorted;
    hidden files and folders left out."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def subdirs(folder: Path) -> dict[str, Path]:
    """Visible child folders by lower-case name."""
    return {
        p.name.lower(): p
        for p in sorted(folder.iterdir())
        if p.is_dir() and not p.name.startswith(".")
    }


def paired_folders(
    folder: Path, first: Sequence[str], second: Sequence[str], *, layout: str
) -> tuple[Path, Path]:
    """The first child folder named in `first` and the first named in `second` (names
    lower case); else a UserError naming what was found and `layout`, what is expected."""
    children = subdirs(folder)
    found = [next((children[n] for n in names if n in children), None) for names in (first, second)]
    if found[0] is None or found[1] is None:
        raise UserError(
            f"dataset path {folder} has no {layout} (found folders {sorted(children) or 'none'})"
        )
    return found[0], found[1]


def relative_key(path: Path, root: Path) -> str:
    """The name a file goes by in splits and manifests: its posix path under `root`."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def require_folder(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset path {root} does not exist or is not a folder")
    return root


def suffix_hint() -> str:
    return "looked for " + ", ".join(sorted(IMAGE_SUFFIXES))
