"""ONNX export: onnxruntime gives PyTorch's outputs, for any batch size, card included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from fovea.tasks import DataConfig, ModelConfig, UserError, get_task
from fovea.tasks.export import export_onnx

# |onnxruntime - PyTorch| <= ATOL + RTOL * |PyTorch|, elementwise, float32 on CPU
ATOL, RTOL = 1e-4, 1e-4


def _settled(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, as after training."""
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d | torch.nn.GroupNorm):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, 64, 64))
    return model.eval()


@pytest.mark.parametrize("arch", ["unet", "fpn"])
def test_segmentation_onnx_matches_pytorch(arch: str, tmp_path: Path) -> None:
    task = get_task("segmentation")
    model_config = ModelConfig(arch=arch, backbone="resnet18")
    model = task.build_model(model_config, num_classes=3)
    torch.nn.init.normal_(model.segmentation_head[0].weight, std=0.2)  # logits of size ~1
    model = _settled(model)
    card = task.model_card(
        model_config,
        DataConfig(uri="x", format="masks", image_size=64),
        class_names=["bg", "a", "b"],
    )
    path = export_onnx(task, model, card, tmp_path / f"{arch}.onnx")
    assert not model.training  # the caller's model is left as it was

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    metadata = session.get_modelmeta().custom_metadata_map
    assert json.loads(metadata["fovea.card"]) == json.loads(json.dumps(card))
    for batch in (1, 3):  # the batch axis is dynamic
        images = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            expected = model(images).numpy()
        (actual,) = session.run(None, {"images": images.numpy()})
        assert actual.shape == expected.shape == (batch, 3, 64, 64)
        np.testing.assert_allclose(actual, expected, atol=ATOL, rtol=RTOL)
        assert np.abs(expected).max() > 1000 * ATOL  # not a comparison of near-zero outputs
        assert (actual.argmax(1) == expected.argmax(1)).mean() > 0.999


def test_export_is_generic_over_tasks(tmp_path: Path) -> None:
    task = get_task("classification")
    model_config = ModelConfig(arch="smallcnn")
    model = task.build_model(model_config, num_classes=4).eval()
    card = task.model_card(
        model_config,
        DataConfig(uri="x", format="imagefolder", image_size=32),
        class_names=list("abcd"),
    )
    path = export_onnx(task, model, card, tmp_path / "deep" / "cls.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randn(5, 3, 32, 32)
    (actual,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(actual, model(images).numpy(), atol=ATOL, rtol=RTOL)
    with pytest.raises(UserError, match="model card is for task 'classification'"):
        export_onnx(get_task("segmentation"), model, card, tmp_path / "x.onnx")
