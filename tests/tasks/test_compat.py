"""Registered models keep loading: every (task, arch, backbone) builds the same state-dict
keys and shapes, and computes the same outputs from the same weights, as the code that
wrote tests/tasks/fixtures/pre_refactor_models.json (main before the shared encoder zoo).

Weights are not stored: each tensor is filled from a generator seeded by a hash of its
name, so the same keys give the same weights in any version of the code.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from fovea.tasks import ModelConfig, get_task

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "pre_refactor_models.json").read_text())


def _keys_digest(state: dict[str, torch.Tensor]) -> str:
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(state.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def _fill(model: torch.nn.Module) -> None:
    state = model.state_dict()
    filled = {}
    for key in sorted(state):
        value = state[key]
        if not value.dtype.is_floating_point:
            filled[key] = value
            continue
        seed = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
        generator = torch.Generator().manual_seed(seed)
        if key.endswith("running_var"):
            filled[key] = torch.rand(value.shape, generator=generator) + 0.5
        else:
            filled[key] = torch.randn(value.shape, generator=generator) * 0.05
    model.load_state_dict(filled)


def _summary(tensor: torch.Tensor) -> dict[str, object]:
    flat = tensor.detach().double().flatten()
    index = torch.linspace(0, flat.numel() - 1, 16).long()
    return {"sum": float(flat.sum()), "abs_sum": float(flat.abs().sum()), "samples": flat[index]}


@pytest.mark.parametrize("combo", sorted(FIXTURE))
def test_state_dicts_of_earlier_versions_still_fit(combo: str) -> None:
    task_name, arch, backbone = combo.split("/")
    expected = FIXTURE[combo]
    task = get_task(task_name)
    model = task.build_model(
        ModelConfig(arch=arch, backbone=None if backbone == "None" else backbone), num_classes=3
    )
    state = model.state_dict()
    assert len(state) == expected["num_keys"]
    assert _keys_digest(state) == expected["keys_sha256"]
    if "outputs" not in expected:
        return
    _fill(model)
    model.eval()
    images = torch.randn((2, 3, 64, 64), generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        if task_name == "detection":
            boxes, scores = model.decoded(images)
            got = {"boxes": boxes, "scores": scores}
        else:
            got = {"logits": model(images)}
    for name, tensor in got.items():
        summary, want = _summary(tensor), expected["outputs"][name]
        assert summary["sum"] == pytest.approx(want["sum"], rel=1e-4, abs=1e-3), name
        assert summary["abs_sum"] == pytest.approx(want["abs_sum"], rel=1e-4), name
        torch.testing.assert_close(
            summary["samples"],
            torch.tensor(want["samples"], dtype=torch.float64),
            rtol=1e-4,
            atol=1e-4,
        )
