"""One contract test over every task in TASKS: data, model, loss, evaluation, inference."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset

from fovea.tasks import TASKS, Task, UserError, get_task
from tests.support.task_cases import TINY

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_every_task_has_a_contract_case() -> None:
    assert set(TINY) == set(TASKS)


def test_unknown_task_lists_valid_names() -> None:
    with pytest.raises(UserError, match=r"unknown task 'detectron'; valid: classification"):
        get_task("detectron")


@pytest.mark.parametrize("name", sorted(TASKS))
def test_task_contract(name: str) -> None:
    torch.manual_seed(0)
    task = get_task(name)
    assert isinstance(task, Task)
    assert task.name == name
    data_config, model_config = TINY[name]
    bundle = task.build_data(data_config)
    assert len(bundle.train) > 0 and len(bundle.val) > 0
    assert len(bundle.class_names) >= 2
    assert all(isinstance(v, int) for v in bundle.stats.values())
    model = task.build_model(model_config, num_classes=len(bundle.class_names))
    assert model.training

    # one training batch: named losses, a scalar total, gradients everywhere
    loader = DataLoader(bundle.train, batch_size=8, shuffle=True, collate_fn=bundle.collate_fn)
    batch = task.to_device(next(iter(loader)), torch.device("cpu"))
    assert task.batch_size_of(batch) == 8
    losses = task.compute_loss(model, batch)
    assert "loss" in losses
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)
    assert sum(float(p.grad.abs().sum()) for p in trainable) > 0

    # evaluation: the main metric, finite floats, PNG figures, JSON tables
    model.eval()
    val = Subset(bundle.val, range(40))
    val_loader = DataLoader(val, batch_size=16, collate_fn=bundle.collate_fn)
    result = task.evaluate(
        model, val_loader, device=torch.device("cpu"), class_names=bundle.class_names
    )
    assert task.main_metric in result.metrics
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.metrics.values())
    assert result.figures and all(png.startswith(PNG_SIGNATURE) for png in result.figures.values())
    json.dumps(result.tables)

    # inference round trip through a JSON model card and a state dict
    card = json.loads(
        json.dumps(task.model_card(model_config, data_config, class_names=bundle.class_names))
    )
    loaded = task.load_for_inference(card, model.state_dict())
    assert not loaded.training
    rng = np.random.default_rng(0)
    for images in (
        rng.integers(0, 256, (5, 20, 24, 3), dtype=np.uint8),  # NHWC, not square
        rng.integers(0, 256, (3, 12, 12), dtype=np.uint8),  # NHW grey
    ):
        original = task.predict_arrays(model, card, images)
        again = task.predict_arrays(loaded, card, images)
        assert original.keys() == again.keys()
        for key in original:
            assert len(original[key]) == len(images)
            np.testing.assert_array_equal(original[key], again[key])
