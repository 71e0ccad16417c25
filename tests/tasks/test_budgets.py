"""Presets hold their budgets: every detection and segmentation preset, built with its
default backbone, has at most the parameters catalog.py promises; the catalog's defaults are
the models' own; and the size table GET /catalog serves (model_sizes.json) is what the
models measure now (parameters exactly, GFLOPs within 1%)."""

from __future__ import annotations

import pytest

from fovea.tasks import TASKS
from fovea.tasks.budgets import compute_table, default_backbones, measure
from fovea.tasks.catalog import CATALOG, SIZE_CLASSES, catalog_json, model_sizes

PRESETS = [(task, arch) for task in SIZE_CLASSES for arch in CATALOG[task].presets]


@pytest.mark.parametrize("task,arch", PRESETS)
def test_preset_with_its_default_backbone_is_within_budget(task: str, arch: str) -> None:
    preset = CATALOG[task].presets[arch]
    size = measure(task, arch=arch, backbone=preset.default_backbone)
    assert size["params"] <= preset.budget, (
        f"{task} {arch}/{preset.default_backbone}: {size['params']:,} parameters, "
        f"budget {preset.budget:,} ({preset.reference})"
    )


@pytest.mark.parametrize("task", list(SIZE_CLASSES))
def test_catalog_defaults_are_the_models_own(task: str) -> None:
    info = CATALOG[task]
    assert {a: p.default_backbone for a, p in info.presets.items()} == default_backbones(task)
    assert dict(TASKS[task].default_backbones) == default_backbones(task)
    assert tuple(info.presets) == info.architectures
    for arch, preset in info.presets.items():
        if preset.alias_of is not None:  # the same model under its old name
            target = info.presets[preset.alias_of]
            assert (preset.default_backbone, preset.budget) == (
                target.default_backbone,
                target.budget,
            ), arch


def test_presets_grow_with_their_size_letter() -> None:
    for task, names in (
        ("detection", ("yolo_n", "yolo_s", "yolo_m")),
        ("segmentation", ("unet_n", "unet_s", "unet_m")),
        ("segmentation", ("fpn_n", "fpn_s", "fpn_m")),
    ):
        table = model_sizes()[task]
        defaults = CATALOG[task].presets
        sizes = [table[n][defaults[n].default_backbone] for n in names]
        assert [s["params"] for s in sizes] == sorted(s["params"] for s in sizes), names
        assert [s["gflops"] for s in sizes] == sorted(s["gflops"] for s in sizes), names


def test_recorded_sizes_match_the_models() -> None:
    recorded, measured = model_sizes(), compute_table()
    assert {k: v for k, v in recorded.items() if k not in SIZE_CLASSES} == {
        k: v for k, v in measured.items() if k not in SIZE_CLASSES
    }
    for task in SIZE_CLASSES:
        assert recorded[task].keys() == measured[task].keys(), task
        for arch, per_backbone in measured[task].items():
            assert recorded[task][arch].keys() == per_backbone.keys(), (task, arch)
            for backbone, size in per_backbone.items():
                kept = recorded[task][arch][backbone]
                where = f"{task} {arch}/{backbone}: rerun `python -m fovea.tasks.budgets`"
                assert kept["params"] == size["params"], where
                assert kept["gflops"] == pytest.approx(size["gflops"], rel=0.01), where


def test_catalog_json_lists_presets_with_sizes() -> None:
    detection = catalog_json()["tasks"]["detection"]  # type: ignore[index]
    yolo_n = detection["presets"]["yolo_n"]
    assert yolo_n["default_backbone"] == "tiny"
    assert yolo_n["params"] <= yolo_n["budget_params"] == 3_200_000
    assert yolo_n["gflops"] > 0
    assert set(detection["sizes"]["yolo_m"]) == set(detection["backbones"])
    segmentation = catalog_json()["tasks"]["segmentation"]  # type: ignore[index]
    assert segmentation["presets"]["unet"]["alias_of"] == "unet_m"
