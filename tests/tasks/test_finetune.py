"""Fine-tuning: a classifier's weights into three tasks, the frozen-backbone epochs and the
backbone's learning rate (fovea/tasks/finetune.py, weights.py, weight_fit.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torchvision

from fovea.tasks import DataBundle, ModelConfig, TrainConfig, UserError, get_task
from fovea.tasks.backbones import ENCODERS
from fovea.tasks.catalog import TORCHVISION_WEIGHTS
from fovea.tasks.classification.model import ARCHITECTURES
from fovea.tasks.engine import _training, fit
from fovea.tasks.finetune import backbone_modules, with_defaults
from fovea.tasks.weight_fit import classifier_fit, encoder_fit, signature
from fovea.tasks.weights import load_report, state_manifest


def _classifier_file(tmp_path: Path, arch: str = "resnet18") -> Path:
    torch.manual_seed(1)
    path = tmp_path / f"{arch}.pth"
    torch.save(torchvision.models.get_model(arch, weights=None).state_dict(), path)
    return path


@pytest.mark.parametrize("arch", list(TORCHVISION_WEIGHTS))
def test_signatures_and_heads_match_torchvision(arch: str) -> None:
    """signatures.json and the catalog's head prefixes are torchvision's and the tasks'."""
    state = torchvision.models.get_model(arch, weights=None).state_dict()
    assert signature(arch) == {k: tuple(v.shape) for k, v in state.items()}
    info = TORCHVISION_WEIGHTS[arch]
    assert info.head == ARCHITECTURES[arch].head + "."
    if arch in ENCODERS:
        assert ENCODERS[arch].classifier_prefixes == (info.classifier,)


@pytest.mark.parametrize(
    ("task", "arch", "part"),
    [("detection", "yolo_n", "backbone"), ("segmentation", "unet", "encoder")],
)
def test_a_classifier_file_initialises_the_encoder(
    tmp_path: Path, task: str, arch: str, part: str
) -> None:
    path = _classifier_file(tmp_path)
    state = torch.load(path, weights_only=True)
    model = get_task(task).build_model(
        ModelConfig(arch=arch, backbone="resnet18", weights=str(path)), num_classes=3
    )
    encoder = model.get_submodule(part).state_dict()
    assert all(torch.equal(encoder[k], state[k]) for k in encoder)
    report = load_report(model)
    assert report is not None and report.part == part
    assert report.loaded == len(state) - 2 == 120  # resnet18 minus fc.weight, fc.bias
    assert report.dropped == ("fc.weight", "fc.bias")
    # the same decision without torch, from the recorded manifest
    assert encoder_fit(state_manifest(path), model="resnet18").loaded == 120


def test_a_wrong_architecture_names_the_keys(tmp_path: Path) -> None:
    path = _classifier_file(tmp_path, "resnet18")
    with pytest.raises(UserError, match=r"fit the encoder: 96 missing, 0 unexpected .*layer1\.2"):
        get_task("segmentation").build_model(
            ModelConfig(arch="unet", backbone="resnet34", weights=str(path)), num_classes=2
        )
    fit_ = encoder_fit(state_manifest(path), model="resnet34")
    assert len(fit_.missing) == 96  # resnet34 has 216 encoder keys, resnet18 120 and not fit_.ok
    assert classifier_fit(state_manifest(path), model="resnet18").ok


def test_defaults_fill_only_what_is_left_out() -> None:
    config = TrainConfig(epochs=3, backbone_lr_scale=0.5)
    filled_config, filled = with_defaults(config, pretrained=True)
    assert filled == {"freeze_backbone_epochs": 1}
    assert filled_config.backbone_lr_scale == 0.5
    assert with_defaults(TrainConfig(epochs=1), pretrained=True)[1] == {
        "freeze_backbone_epochs": 0,
        "backbone_lr_scale": 0.1,
    }
    assert with_defaults(config, pretrained=True, workers=2)[0].freeze_backbone_epochs == 0
    assert with_defaults(TrainConfig(), pretrained=False)[0].backbone_lr_scale == 1.0


def test_frozen_epochs_keep_the_backbone_then_it_moves_at_the_scaled_lr(
    tmp_path: Path, tiny_digits: DataBundle
) -> None:
    """resnet18 from a file (1000-class head) on real digits: epoch 1 trains the head alone
    (backbone parameters and BatchNorm statistics bit-identical), epoch 2 moves everything,
    the backbone at lr * backbone_lr_scale."""
    task = get_task("classification")
    path = _classifier_file(tmp_path)
    model = task.build_model(ModelConfig(arch="resnet18", weights=str(path)), num_classes=10)
    report = load_report(model)
    assert report is not None and report.fresh == ("fc.bias", "fc.weight")  # 1000 -> 10
    config = TrainConfig(
        epochs=2,
        batch_size=32,
        lr=1e-3,
        scheduler="constant",
        warmup_epochs=0,
        amp=False,
        freeze_backbone_epochs=1,
        backbone_lr_scale=0.1,
        early_stopping_patience=None,
        num_workers=0,
    )
    snapshots = [{k: v.clone() for k, v in model.state_dict().items()}]
    fit(
        task,
        model,
        tiny_digits,
        config,
        device=torch.device("cpu"),
        on_checkpoint=lambda _p, _e: snapshots.append(
            {k: v.clone() for k, v in model.state_dict().items()}
        ),
    )
    start, after_frozen, after_thawed = snapshots
    backbone = [k for k in start if not k.startswith("fc.")]
    stats = [k for k in backbone if "running_" in k or "num_batches" in k]
    assert len(stats) == 60  # 20 BatchNorm layers x (mean, var, count)
    assert all(torch.equal(start[k], after_frozen[k]) for k in backbone)
    assert not torch.equal(start["fc.weight"], after_frozen["fc.weight"])  # the head learnt
    moved = [k for k in backbone if not torch.equal(after_frozen[k], after_thawed[k])]
    assert len(moved) == len(backbone)  # every weight and statistic of the backbone
    # the optimizer the engine builds: the backbone's groups at lr * 0.1, the head's at lr
    training = _training(model, config, device=torch.device("cpu"), steps_per_epoch=8)
    lrs = {g["name"]: g["lr"] for g in training.optimizer.param_groups}
    assert lrs == {"head": pytest.approx(1e-3), "backbone": pytest.approx(1e-4)}
    in_backbone = {id(p) for m in backbone_modules(model) for p in m.parameters()}
    for group in training.optimizer.param_groups:
        assert all((id(p) in in_backbone) == (group["name"] == "backbone") for p in group["params"])


def test_backbone_of_each_task() -> None:
    detector = get_task("detection").build_model(
        ModelConfig(arch="yolo_n", backbone="tiny"), num_classes=2
    )
    segmenter = get_task("segmentation").build_model(
        ModelConfig(arch="fpn", backbone="tiny"), num_classes=2
    )
    small = get_task("classification").build_model(ModelConfig(arch="smallcnn"), num_classes=2)
    assert backbone_modules(detector) == [detector.backbone]
    assert backbone_modules(segmenter) == [segmenter.encoder]
    assert backbone_modules(small) == [small.features, small.pool]
    assert dataclasses.is_dataclass(TrainConfig)
