"""Classification: learning on real data, metrics, inference, architectures and weights."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import ResNet18_Weights

from fovea.tasks import AugmentConfig, DataConfig, ModelConfig, TrainConfig, UserError, get_task
from fovea.tasks.classification.metrics import classification_metrics
from fovea.tasks.classification.model import ARCHITECTURES, build_classifier
from fovea.tasks.engine import fit


def test_smallcnn_learns_digits_well_above_chance() -> None:
    torch.manual_seed(0)
    task = get_task("classification")
    # digits are not mirror-symmetric: horizontal flips would teach the wrong thing
    data_config = DataConfig(
        uri="builtin://digits",
        format="builtin",
        image_size=32,
        augment=AugmentConfig(horizontal_flip=False),
    )
    bundle = task.build_data(data_config)
    model_config = ModelConfig(arch="smallcnn")
    model = task.build_model(model_config, num_classes=10)
    config = TrainConfig(epochs=4, batch_size=64, lr=3e-3, weight_decay=0.01)
    result = fit(task, model, bundle, config, device=torch.device("cpu"))

    metrics = result.metrics
    assert metrics["top1"] > 0.9  # chance is 0.1
    assert metrics["top5"] >= metrics["top1"] and metrics["roc_auc_macro"] > 0.97
    assert metrics["f1_macro"] > 0.85
    assert all(metrics[f"recall/{d}"] > 0.6 for d in range(10))
    table = result.eval.tables["confusion_matrix.json"]
    matrix = np.array(table["matrix"])
    assert matrix.shape == (10, 10) and matrix.sum() == len(bundle.val) == 359
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics["top1"], abs=1e-6)

    # serving path: same preprocessing as validation, hence the same predictions
    card = task.model_card(model_config, data_config, class_names=bundle.class_names)
    served = task.load_for_inference(card, result.state_dict)
    cached = bundle.val.data.images.permute(0, 2, 3, 1).numpy()  # uint8 [N, S, S, 3]
    predicted = task.predict_arrays(served, card, cached)
    assert predicted["class_id"].dtype == np.int64
    assert predicted["probabilities"].shape == (359, 10)
    np.testing.assert_allclose(predicted["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float((predicted["class_id"] == bundle.val.data.labels.numpy()).mean())
    assert accuracy == pytest.approx(metrics["top1"], abs=1e-6)


def test_metrics_on_known_logits() -> None:
    targets = torch.tensor([0, 0, 1, 1, 2, 2])
    predicted = torch.tensor([0, 1, 1, 1, 2, 0])
    logits = torch.nn.functional.one_hot(predicted, 3).float() * 5
    metrics, confusion = classification_metrics(logits, targets, class_names=["a", "b", "c"])
    assert metrics["top1"] == pytest.approx(4 / 6)
    assert "top5" not in metrics  # 3 classes: top-5 would always be 1
    assert metrics["precision/b"] == pytest.approx(2 / 3)
    assert metrics["recall/b"] == pytest.approx(1.0)
    assert metrics["f1/a"] == pytest.approx(0.5)
    assert metrics["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_gives_logits_for_its_classes(arch: str) -> None:
    model = build_classifier(arch=arch, num_classes=3).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_unknown_arch_lists_the_valid_ones() -> None:
    with pytest.raises(UserError, match=r"unknown model\.arch 'vit_h'; valid: smallcnn, resnet18"):
        get_task("classification").build_model(ModelConfig(arch="vit_h"), num_classes=3)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_weights_fine_tune_on_a_different_number_of_classes(
    tmp_path: Path, suffix: str
) -> None:
    source = build_classifier(arch="smallcnn", num_classes=10)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}  # as saved under DDP
    path = tmp_path / f"digits{suffix}"
    if suffix == ".pt":
        torch.save({"model": state, "epoch": 3}, path)
    else:
        save_file(state, str(path))
    tuned = build_classifier(arch="smallcnn", num_classes=4, weights=str(path))
    assert tuned.training
    for name, value in tuned.state_dict().items():
        if name.startswith("head.2."):
            assert value.shape[0] == 4  # new head for the new classes
        else:
            assert torch.equal(value, source.state_dict()[name]), name


def test_local_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pth"
    torch.save(build_classifier(arch="resnet18", num_classes=3).state_dict(), path)
    with pytest.raises(UserError, match=r"does not fit model\.arch smallcnn"):
        build_classifier(arch="smallcnn", num_classes=3, weights=str(path))


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:  # unpickling this would create the marker file
        return (Path.touch, (self.marker,))


def test_pickled_code_in_a_weights_file_is_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": _RunsCode(marker)}, path)
    with pytest.raises(UserError, match=r"cannot load model\.weights file"):
        build_classifier(arch="smallcnn", num_classes=3, weights=str(path))
    assert not marker.exists()


def test_torchvision_weights_load_only_from_the_local_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(UserError, match="not in the local torch hub cache") as caught:
        build_classifier(arch="resnet18", num_classes=5, weights="ResNet18_Weights.IMAGENET1K_V1")
    assert "offline" in str(caught.value) and str(expected) in str(caught.value)

    # once the file is there (copied in by an operator), it loads without any network
    expected.parent.mkdir(parents=True)
    imagenet = build_classifier(arch="resnet18", num_classes=1000)
    torch.save(imagenet.state_dict(), expected)
    for name in ("DEFAULT", "ResNet18_Weights.IMAGENET1K_V1", "IMAGENET1K_V1"):
        model = build_classifier(arch="resnet18", num_classes=5, weights=name)
        assert torch.equal(model.conv1.weight, imagenet.conv1.weight)
        assert model.fc.out_features == 5
    assert ResNet18_Weights.DEFAULT.url.endswith(expected.name)

    with pytest.raises(UserError, match=re.escape("do not fit resnet18; valid: ['DEFAULT'")):
        build_classifier(arch="resnet18", num_classes=5, weights="ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(UserError, match="smallcnn has no torchvision weights"):
        build_classifier(arch="smallcnn", num_classes=5, weights="DEFAULT")


def test_model_card_is_json_and_complete() -> None:
    card = get_task("classification").model_card(
        ModelConfig(arch="resnet18"),
        DataConfig(uri="builtin://digits", format="builtin", image_size=64),
        class_names=["a", "b"],
    )
    assert json.loads(json.dumps(card)) == card
    assert {k: card[k] for k in ("task", "arch", "num_classes", "image_size")} == {
        "task": "classification",
        "arch": "resnet18",
        "num_classes": 2,
        "image_size": 64,
    }
    assert card["mean"] == pytest.approx([0.485, 0.456, 0.406]) and card["resize_size"] == 73
