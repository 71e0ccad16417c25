"""Submit-time checks of a JobSpec beyond its schema: names against the catalog, paths
against the data roots, models against the registry, requests against the limits.

Each failure is a SpecError naming the field, so a bad job is refused at the door (422)
instead of failing minutes later in a worker. The worker keeps its own checks as the last
line of defence. Nothing here imports torch (the catalog is plain data).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fovea.platform.errors import NotFound, SpecError, Unavailable, WeightsRefused
from fovea.platform.jobs.spec import DatasetSpec, JobSpec, ModelSpec, TrainSpec
from fovea.tasks.catalog import (
    BUILTIN_FORMAT,
    BUILTIN_PREFIX,
    CATALOG,
    WEIGHT_FILE_SUFFIXES,
    TaskInfo,
    builtin_problem,
)
from fovea.tasks.data.files import Note
from fovea.tasks.errors import UserError
from fovea.tasks.weight_fit import classifier_fit, encoder_fit

log = logging.getLogger(__name__)

MODEL_URI_PREFIX = "models:/"
REGISTRY_RETRY_AFTER_S = 5


@dataclass(frozen=True)
class JobLimits:
    """The most one job may ask for (Settings.max_job_cpus, ...; FOVEA_MAX_JOB_CPUS, ...)."""

    cpus: float
    gpus: float
    epochs: int
    image_size: int


def check_spec(
    spec: JobSpec,
    *,
    data_roots: Sequence[Path],
    limits: JobLimits | None = None,
    tracking_uri: str | None = None,
    weights_root: Path | None = None,
) -> JobSpec:
    """A copy of `spec` with its paths resolved (workers need no working directory) and a
    weights-store name pinned to its file's SHA-256, or a SpecError naming the first field
    that is wrong. Without `limits` the per-job resource limits are not checked, without
    `tracking_uri` a registered model named by model.weights is not looked up, without
    `weights_root` a store name is not (a schedule's template: all are checked when it
    fires)."""
    spec = spec.model_copy(deep=True)
    info = CATALOG[spec.task]
    _check_model(spec.model, info)
    if limits is not None:
        _check_requests(spec, limits)
    _check_train(spec.train, info)
    spec.dataset.uri = _check_dataset(spec.dataset, info, data_roots=data_roots)
    spec.model.weights = _check_weights(
        spec.model,
        info,
        data_roots=data_roots,
        tracking_uri=tracking_uri,
        weights_root=weights_root,
    )
    if spec.train.freeze_backbone_epochs and spec.resources.workers > 1:
        raise SpecError(
            "train.freeze_backbone_epochs",
            "freezing needs resources.workers 1 (a DDP model cannot change which of its "
            "parameters train); use 0 or null",
        )
    return spec


def scan_notes(spec: JobSpec, *, data_roots: Sequence[Path]) -> list[Note]:
    """The cheap structural scan of a checked spec's dataset (fovea/tasks/data/scan.py): a
    layout the format cannot read is a SpecError naming what to change; what is odd but
    usable comes back as notes for the job's events. Builtin datasets have no layout."""
    if spec.dataset.uri.startswith(BUILTIN_PREFIX):
        return []
    from fovea.tasks.data.scan import scan_dataset

    try:
        scan = scan_dataset(
            task=spec.task,
            dataset_format=spec.dataset.format,
            root=spec.dataset.uri,
            roots=tuple(str(root) for root in data_roots),
        )
    except UserError as exc:
        raise SpecError("dataset.uri", str(exc)) from None
    except OSError as exc:  # unreadable folder: permissions, a file vanishing mid-scan
        raise SpecError("dataset.uri", f"cannot read the dataset: {exc}") from None
    return scan.notes


def resolve_data_path(raw: str, *, roots: Sequence[Path], field: str) -> Path:
    """Resolve a user path (symlinks followed) and require it under one of the data roots.
    A relative path is taken from the server's working directory (the CLI sends absolute
    paths, resolved against the user's)."""
    if "\x00" in raw:
        raise SpecError(field, "path contains a NUL byte")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    resolved = path.resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        shown = ", ".join(str(r) for r in roots)
        raise SpecError(field, f"{raw!r} is outside the configured data roots ({shown})")
    if not resolved.exists():
        raise SpecError(field, f"{raw!r} does not exist")
    return resolved


def _one_of(kind: str, value: str, valid: Sequence[str]) -> str:
    return f"unknown {kind} {value!r}; valid: {', '.join(valid)}"


def _check_model(model: ModelSpec, info: TaskInfo) -> None:
    if model.arch not in info.architectures:
        raise SpecError(
            "model.arch", _one_of(f"{info.name} architecture", model.arch, info.architectures)
        )
    if model.backbone is None:
        return
    if not info.backbones:
        raise SpecError(
            "model.backbone",
            f"{info.name} models take no backbone (the architecture is the whole model); "
            "leave it out",
        )
    if model.backbone not in info.backbones:
        raise SpecError(
            "model.backbone", _one_of(f"{info.name} backbone", model.backbone, info.backbones)
        )


def _check_requests(spec: JobSpec, limits: JobLimits) -> None:
    asked = {  # field -> (value, limit, the setting that raises it)
        # all workers together: the limits are per job
        "resources.cpus": (spec.resources.total_cpus, limits.cpus, "FOVEA_MAX_JOB_CPUS"),
        "resources.gpus": (spec.resources.total_gpus, limits.gpus, "FOVEA_MAX_JOB_GPUS"),
        "train.epochs": (spec.train.epochs, limits.epochs, "FOVEA_MAX_EPOCHS"),
        "train.image_size": (spec.train.image_size, limits.image_size, "FOVEA_MAX_IMAGE_SIZE"),
    }
    workers = spec.resources.workers
    for field, (value, limit, setting) in asked.items():
        if value > limit:
            many = workers > 1 and field.startswith("resources.")
            what = f"{value:g}" + (f" ({workers} workers together)" if many else "")
            raise SpecError(
                field, f"{what} is more than this platform allows per job ({limit:g}; {setting})"
            )


def _check_train(train: TrainSpec, info: TaskInfo) -> None:
    multiple = info.image_size_multiple
    if train.image_size % multiple:
        raise SpecError(
            "train.image_size",
            f"must be a multiple of {multiple} for {info.name}, got {train.image_size}",
        )
    if not train.loss_weights:
        return
    if not info.loss_weights:
        raise SpecError(
            "train.loss_weights",
            f"{info.name} has a single loss (cross-entropy) and takes no loss weights; leave "
            "it out (train.label_smoothing shapes the loss)",
        )
    for name in train.loss_weights:
        if name not in info.loss_weights:
            raise SpecError(
                f"train.loss_weights.{name}",
                _one_of(f"{info.name} loss", name, list(info.loss_weights)),
            )
    if not any({**info.loss_weights, **train.loss_weights}.values()):
        raise SpecError("train.loss_weights", "at least one loss weight must be > 0")


def _check_dataset(dataset: DatasetSpec, info: TaskInfo, *, data_roots: Sequence[Path]) -> str:
    """The dataset URI to store: builtin:// as given, a path resolved under a data root."""
    if dataset.class_map is not None and not (info.class_map and dataset.format == "masks"):
        raise SpecError(
            "dataset.class_map",
            "applies to segmentation datasets in the masks format only (value masks)",
        )
    if dataset.class_map:
        classes = len(set(dataset.class_map.values()))
        if dataset.ignore_index < classes:
            raise SpecError(
                "dataset.ignore_index",
                f"{dataset.ignore_index} is also a class index of the {classes} classes in "
                f"dataset.class_map; choose a value >= {classes} (default 255)",
            )
    if dataset.uri.startswith(BUILTIN_PREFIX):
        problem = builtin_problem(dataset.uri, task=info.name)
        if problem:
            raise SpecError("dataset.uri", problem)
        return dataset.uri
    files = [f for f in info.formats if f != BUILTIN_FORMAT]
    if dataset.format == BUILTIN_FORMAT:
        raise SpecError(
            "dataset.format",
            f"builtin is the format of {BUILTIN_PREFIX}<name> datasets; for a folder use "
            f"one of {', '.join(files)}",
        )
    if dataset.format not in info.formats:
        raise SpecError(
            "dataset.format",
            f"{dataset.format!r} is not a {info.name} format; valid: {', '.join(files)}",
        )
    path = resolve_data_path(dataset.uri, roots=data_roots, field="dataset.uri")
    if not path.is_dir():
        raise SpecError("dataset.uri", f"{dataset.uri!r} is not a directory")
    return str(path)


def _check_weights(
    model: ModelSpec,
    info: TaskInfo,
    *,
    data_roots: Sequence[Path],
    tracking_uri: str | None,
    weights_root: Path | None,
) -> str | None:
    """The weights value to store: a registered model's URI as given (it exists), a store
    name pinned to its content, a file path resolved under a data root, or a torchvision
    enum name that fits the model."""
    weights = model.weights
    if weights is None:
        return None
    if weights.startswith(MODEL_URI_PREFIX):
        if tracking_uri is not None:
            _check_registered(weights, tracking_uri=tracking_uri)
        return weights
    from fovea.platform.weights.service import is_reference

    if is_reference(weights):
        if weights_root is None:
            return weights
        return _check_stored(weights, model, info, weights_root=weights_root)
    # the tasks load a file when the suffix says so (fovea.tasks.weights.is_weights_file),
    # so "x_Weights.y.pt" is a file, and under a data root like any other
    is_file = weights.lower().endswith(WEIGHT_FILE_SUFFIXES)
    if is_file or "/" in weights or "\\" in weights:
        path = resolve_data_path(weights, roots=data_roots, field="model.weights")
        if not path.is_file():
            raise SpecError("model.weights", f"{weights!r} is not a file")
        if not is_file:
            suffixes = ", ".join(WEIGHT_FILE_SUFFIXES)
            raise SpecError("model.weights", f"{weights!r}: a weights file ends with {suffixes}")
        return str(path)
    key = info.weights_key(arch=model.arch, backbone=model.backbone)
    torchvision = info.torchvision_weights(arch=model.arch, backbone=model.backbone)
    if torchvision is None:
        raise SpecError(
            "model.weights",
            f"{key} has no torchvision weights; use null, a weights file "
            f"({', '.join(WEIGHT_FILE_SUFFIXES)}) or {MODEL_URI_PREFIX}<name>@<alias>",
        )
    if weights not in torchvision.names():
        valid = ", ".join((*(f"{torchvision.enum}.{m}" for m in torchvision.members), "DEFAULT"))
        raise SpecError("model.weights", f"{weights!r} are not weights of {key}; valid: {valid}")
    return weights


def _check_stored(weights: str, model: ModelSpec, info: TaskInfo, *, weights_root: Path) -> str:
    """A store name, checked: the entry exists, its file is unchanged since import (re-hashed)
    and its keys fit the part of the model it initialises; pinned as name@sha256:<hex>."""
    from fovea.platform.weights.service import PIN, WeightsStore, split_reference

    store = WeightsStore(weights_root)
    name, digest = split_reference(weights)
    try:
        entry = store.verify(name)
    except (NotFound, WeightsRefused) as exc:
        raise SpecError("model.weights", str(exc)) from None
    if digest is not None and digest != entry.sha256:
        raise SpecError("model.weights", f"{name!r} no longer holds the file {digest[:12]}...")
    key = info.weights_key(arch=model.arch, backbone=model.backbone)
    target = info.torchvision_models.get(key)
    if target is None:
        raise SpecError("model.weights", f"{key} takes no pretrained weights (train it from null)")
    manifest = store.manifest(entry)
    fit = (
        encoder_fit(manifest, model=target)
        if info.backbones
        else classifier_fit(manifest, model=target)
    )
    if not fit.ok:
        raise SpecError(
            "model.weights",
            f"{name!r} ({entry.arch} weights) do not fit {key}: {fit.problem()}",
        )
    return f"{name}{PIN}{entry.sha256}"


def _check_registered(uri: str, *, tracking_uri: str) -> None:
    """The registered model version `uri` names exists in the API's MLflow registry."""
    from fovea.tracking.registry import ModelNotFoundError, resolve_model_uri  # mlflow: lazy

    try:
        resolve_model_uri(tracking_uri=tracking_uri, uri=uri)
    except ModelNotFoundError as exc:
        raise SpecError("model.weights", str(exc)) from None
    except Exception as exc:  # the registry is down or busy: the spec may well be fine
        log.warning("model registry lookup of %s failed", uri, exc_info=True)
        raise Unavailable(
            f"the model registry did not answer ({type(exc).__name__}); try again",
            retry_after_s=REGISTRY_RETRY_AFTER_S,
        ) from None
