"""The torch-free catalog agrees with the real task registries, torchvision and MLflow
output formats; and the API process loads no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torchvision

from fovea.tasks import TASKS, ModelConfig, TrainConfig, UserError, get_task
from fovea.tasks.catalog import (
    BUILTIN_DATASETS,
    BUILTIN_FORMAT,
    CATALOG,
    TORCHVISION_WEIGHTS,
    WEIGHT_FILE_SUFFIXES,
    builtin_problem,
)

REPO = Path(__file__).resolve().parents[2]


def test_catalog_names_every_task() -> None:
    assert list(CATALOG) == list(TASKS)


@pytest.mark.parametrize("task", list(TASKS))
def test_architectures_backbones_metric(task: str) -> None:
    cls, info = TASKS[task], CATALOG[task]
    assert info.name == cls.name == task
    assert info.architectures == tuple(cls.architectures)
    assert info.backbones == tuple(getattr(cls, "backbones", ()))
    assert info.main_metric == cls.main_metric
    assert (info.default_backbone is None) == (not info.backbones)
    assert info.default_backbone is None or info.default_backbone in info.backbones


def _format_tables() -> dict[str, set[str]]:
    from fovea.tasks.classification.data import FORMATS as classification
    from fovea.tasks.detection.data import FORMATS as detection
    from fovea.tasks.segmentation.data import PARSERS as segmentation

    # detection and segmentation read builtin:// datasets beside their file formats
    return {
        "classification": set(classification),
        "detection": {*detection, BUILTIN_FORMAT},
        "segmentation": {*segmentation, BUILTIN_FORMAT},
    }


def test_formats() -> None:
    tables = _format_tables()
    assert {task: set(info.formats) for task, info in CATALOG.items()} == tables


def test_image_size_multiple_and_class_map() -> None:
    from fovea.tasks.detection.data import SIZE_MULTIPLE

    assert CATALOG["detection"].image_size_multiple == SIZE_MULTIPLE
    assert CATALOG["classification"].image_size_multiple == 1
    assert CATALOG["segmentation"].image_size_multiple == 1
    assert [t for t, info in CATALOG.items() if info.class_map] == ["segmentation"]


def test_loss_weights() -> None:
    from fovea.tasks.detection.loss import DEFAULT_WEIGHTS as detection
    from fovea.tasks.segmentation.loss import DEFAULT_WEIGHTS as segmentation

    assert dict(CATALOG["detection"].loss_weights) == detection
    assert dict(CATALOG["segmentation"].loss_weights) == segmentation
    for task in ("detection", "segmentation"):
        for name in CATALOG[task].loss_weights:  # each name is one the task takes
            get_task(task, train=TrainConfig(loss_weights={name: 0.5}))
        with pytest.raises(UserError, match="unknown"):
            get_task(task, train=TrainConfig(loss_weights={"focal": 1.0}))
    # classification has one loss (cross-entropy): nothing to weigh
    assert dict(CATALOG["classification"].loss_weights) == {}


def test_classification_has_a_single_loss() -> None:
    import torch

    task = get_task("classification")
    model = task.build_model(ModelConfig(arch="smallcnn"), num_classes=3)
    losses = task.compute_loss(model, (torch.rand(2, 3, 16, 16), torch.tensor([0, 2])))
    assert set(losses) == {"loss"}


def test_output_columns() -> None:
    from fovea.tracking.pyfunc import OUTPUT_FORMATS

    for task, info in CATALOG.items():
        schema = OUTPUT_FORMATS[task].schema
        assert schema is not None
        assert info.output_columns == tuple(schema.input_names()), task


def test_weight_file_suffixes() -> None:
    from fovea.tasks.weights import WEIGHT_FILE_SUFFIXES as real

    assert real == WEIGHT_FILE_SUFFIXES


def test_torchvision_enums() -> None:
    for model, weights in TORCHVISION_WEIGHTS.items():
        enum = torchvision.models.get_model_weights(model)
        assert weights.enum == enum.__name__
        assert set(weights.members) == set(enum.__members__) - {"DEFAULT"}


def _rejects_as_invalid(task: str, *, arch: str, backbone: str | None, weights: str) -> bool:
    """True when the task's own builder refuses `weights` as a name that does not fit.
    Valid names get past that check and stop at the offline cache (or load when cached)."""
    try:
        get_task(task).build_model(
            ModelConfig(arch=arch, backbone=backbone, weights=weights), num_classes=3
        )
    except UserError as exc:
        return "local torch hub cache" not in str(exc)
    return False


def _weight_cases() -> list[tuple[str, str, str | None]]:
    cases = []
    for task, info in CATALOG.items():
        if info.backbones:
            arch = info.architectures[0]
            cases += [(task, arch, b) for b in info.backbones]
        else:
            cases += [(task, a, None) for a in info.architectures]
    return cases


@pytest.mark.parametrize("task,arch,backbone", _weight_cases())
def test_weights_per_model_agree_with_the_builders(
    task: str, arch: str, backbone: str | None
) -> None:
    tv = CATALOG[task].torchvision_weights(arch=arch, backbone=backbone)
    if tv is None:  # a model of our own: no torchvision weights at all
        assert _rejects_as_invalid(task, arch=arch, backbone=backbone, weights="DEFAULT")
        return
    for name in (f"{tv.enum}.{tv.members[-1]}", "DEFAULT"):
        assert not _rejects_as_invalid(task, arch=arch, backbone=backbone, weights=name), name
    wrong = "ResNet18_Weights.IMAGENET1K_V1" if tv.enum != "ResNet18_Weights" else "NOPE"
    assert _rejects_as_invalid(task, arch=arch, backbone=backbone, weights=wrong)


def test_builtin_datasets() -> None:
    from fovea.tasks.data.builtin import BUILTINS

    assert set(BUILTIN_DATASETS) == set(BUILTINS)
    for name, real in BUILTINS.items():
        ours = BUILTIN_DATASETS[name]
        assert ours.tasks == real.tasks
        assert {k: (p.default, p.low, p.high) for k, p in ours.params.items()} == {
            k: (p.default, p.low, p.high) for k, p in real.params.items()
        }


@pytest.mark.parametrize(
    "uri",
    [
        "builtin://digits",
        "builtin://digits?n=3",
        "builtin://shapes",
        "builtin://shapes?",
        "builtin://shapes?n=200&size=64",
        "builtin://shapes?n=0",
        "builtin://shapes?n=100001",
        "builtin://shapes?size=15",
        "builtin://shapes?n=2&n=3",
        "builtin://shapes?n",
        "builtin://shapes?n=x",
        "builtin://shapes?n=5&",
        "builtin://shapes?colour=3",
        "builtin://cifar10",
        "builtin:///shapes",
    ],
)
@pytest.mark.parametrize("task", list(TASKS))
def test_builtin_uris_checked_alike(uri: str, task: str) -> None:
    from fovea.tasks.data.builtin import get_builtin

    try:
        get_builtin(uri, task=task)
        real = None
    except UserError as exc:
        real = str(exc)
    ours = builtin_problem(uri, task=task)
    assert (ours is None) == (real is None), (ours, real)


def _fresh_import(module: str) -> dict:
    code = (
        "import json, sys, time\n"
        "t = time.perf_counter()\n"
        f"import {module}\n"
        "elapsed = time.perf_counter() - t\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'torchvision', 'torchmetrics'))\n"
        "print(json.dumps({'seconds': elapsed, 'heavy': heavy}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", ["fovea.tasks.catalog", "fovea.platform.api.app", "fovea.cli"])
def test_importing_loads_no_torch(module: str) -> None:
    result = _fresh_import(module)
    assert result["heavy"] == [], result["heavy"][:10]
    # the time is reported, not asserted (tests do not time things; bench/ does)
    print(f"import {module}: {result['seconds']:.2f} s")
