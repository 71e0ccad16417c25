"""Built-in datasets that ship with installed packages: no download, no data root needed.

`BUILTINS` is the explicit list. Each entry names the tasks whose data structures its loader
returns (`digits`: classification; `shapes`: images with exact masks and boxes, for
segmentation and detection), so a job asking for one its task cannot use gets a clear error
instead of a crash.

A builtin may take integer parameters as a query string, validated here with errors that
name the parameter: `builtin://shapes?n=400&size=96&seed=0`. The name before `?` is the
dataset; `parse_builtin_uri` is what both the API (at submit) and the tasks (at load) use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fovea.tasks.errors import UserError

if TYPE_CHECKING:  # torch-free at import: the API validates builtin URIs without it
    import torch

    from fovea.tasks.data.shapes import ShapesData

URI_PREFIX = "builtin://"
SHAPES_MIN_SIZE = 16


@dataclass
class DigitsData:
    images: torch.Tensor  # [N, 3, 8, 8] uint8, grey repeated
    labels: torch.Tensor  # [N] int64
    class_names: tuple[str, ...] = tuple(str(d) for d in range(10))


def load_digits(*, image_size: int) -> DigitsData:
    """scikit-learn's `load_digits`: 1,797 8x8 grey digits (values 0..16), 10 classes, at
    their own size (the task fits them to its input)."""
    import torch
    from sklearn.datasets import load_digits as sklearn_digits  # sklearn imports slowly

    digits = sklearn_digits()
    grey = torch.as_tensor(digits.images * (255.0 / 16.0)).round().to(torch.uint8)  # [N, 8, 8]
    rgb = grey.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()  # [N, 3, 8, 8]
    return DigitsData(rgb, torch.as_tensor(digits.target, dtype=torch.long))


def load_shapes(
    *, image_size: int, n: int, size: int | None, seed: int, max_shapes: int
) -> ShapesData:
    """`n` generated images (see shapes.py) at `size` pixels, by default the training size.

    The split is left to the task (with the job's seed); `seed` here fixes the images, so
    runs with different training seeds see the same dataset.
    """
    from fovea.tasks.data.shapes import generate_shapes

    return generate_shapes(count=n, size=size or image_size, seed=seed, max_shapes=max_shapes)


@dataclass(frozen=True)
class Param:
    """An integer query parameter of a builtin; None as default means "decided at load"."""

    default: int | None
    low: int
    high: int
    help: str


@dataclass(frozen=True)
class Builtin:
    tasks: frozenset[str]  # the tasks that can use what `load` returns
    description: str
    # keyword-only: image_size and the dataset's params
    load: Callable[..., Any]
    params: Mapping[str, Param] = field(default_factory=dict)


BUILTINS: dict[str, Builtin] = {
    "digits": Builtin(
        tasks=frozenset({"classification"}),
        description="scikit-learn handwritten digits, 1,797 8x8 grey images, 10 classes",
        load=load_digits,
    ),
    "shapes": Builtin(
        tasks=frozenset({"segmentation", "detection"}),
        description=(
            "generated circles, squares and triangles on textured backgrounds, with exact "
            "masks and boxes"
        ),
        load=load_shapes,
        params={
            "n": Param(500, 1, 100_000, "number of images"),
            "size": Param(
                None, SHAPES_MIN_SIZE, 2048, "image side in pixels (default: image_size)"
            ),
            "seed": Param(0, 0, 2**31 - 1, "generator seed (the split uses the job's seed)"),
            "max_shapes": Param(3, 1, 12, "shapes per image, at most"),
        },
    ),
}


def parse_builtin_uri(uri: str) -> tuple[str, dict[str, int | None]]:
    """ "builtin://<name>[?k=v&...]" -> (name, every parameter with defaults filled).

    Raises UserError naming the unknown dataset, or the parameter and what is wrong with it.
    """
    if not uri.startswith(URI_PREFIX):
        raise UserError(f"builtin datasets are named {URI_PREFIX}<name>, got {uri!r}")
    name, has_query, query = uri.removeprefix(URI_PREFIX).partition("?")
    name = name.strip("/")
    builtin = BUILTINS.get(name)
    if builtin is None:
        valid = ", ".join(URI_PREFIX + n for n in sorted(BUILTINS))
        raise UserError(f"unknown builtin dataset {uri!r}; valid: {valid}")
    given: dict[str, str] = {}
    for pair in query.split("&") if has_query and query else []:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise UserError(f"{uri!r}: parameters are written name=value, got {pair!r}")
        if key in given:
            raise UserError(f"{uri!r}: parameter {key!r} is given twice")
        given[key] = value
    unknown = sorted(set(given) - set(builtin.params))
    if unknown:
        valid = ", ".join(builtin.params) or "none"
        raise UserError(f"{uri!r}: unknown parameter {unknown[0]!r}; valid: {valid}")
    params: dict[str, int | None] = {}
    for key, param in builtin.params.items():
        if key not in given:
            params[key] = param.default
            continue
        try:
            value = int(given[key])
        except ValueError:
            raise UserError(f"{uri!r}: {key} must be an integer, got {given[key]!r}") from None
        if not param.low <= value <= param.high:
            raise UserError(
                f"{uri!r}: {key} must be in [{param.low}, {param.high}] ({param.help}), got {value}"
            )
        params[key] = value
    return name, params


def load_builtin(uri: str, *, task: str, image_size: int) -> Any:
    """The data of "builtin://<name>[?params]" for `task`, params validated."""
    builtin = get_builtin(uri, task=task)
    _, params = parse_builtin_uri(uri)
    return builtin.load(image_size=image_size, **params)


def get_builtin(uri: str, *, task: str) -> Builtin:
    """The builtin dataset named by "builtin://<name>[?params]", checked to fit `task`."""
    valid = sorted(name for name, builtin in BUILTINS.items() if task in builtin.tasks)
    listing = ", ".join(URI_PREFIX + name for name in valid) or "none"
    if not uri.startswith(URI_PREFIX):
        raise UserError(f"builtin datasets are named {URI_PREFIX}<name>, got {uri!r}")
    builtin = BUILTINS.get(uri.removeprefix(URI_PREFIX).partition("?")[0].strip("/"))
    if builtin is None:
        raise UserError(f"unknown builtin dataset {uri!r}; valid for {task}: {listing}")
    if task not in builtin.tasks:
        raise UserError(
            f"builtin dataset {uri!r} is for {', '.join(sorted(builtin.tasks))}, not {task}; "
            f"valid: {listing}"
        )
    parse_builtin_uri(uri)  # the parameters
    return builtin
