"""The shared engine: resume, early stopping, cancel, schedules, EMA, non-finite losses."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from fovea.tasks import DataBundle, EvalResult, ModelConfig, TrainConfig, UserError
from fovea.tasks.classification import ClassificationTask
from fovea.tasks.engine import FitResult, fit, select_device
from fovea.tasks.optim import FINAL_LR_FRACTION, build_optimizer, lr_factor

CPU = torch.device("cpu")
FAST = TrainConfig(epochs=2, batch_size=32, lr=3e-3, warmup_epochs=0.5, seed=7)


def run(
    bundle: DataBundle,
    config: TrainConfig,
    *,
    task: ClassificationTask | None = None,
    checkpoint_dir: Path | None = None,
    reporter: Any = None,
) -> FitResult:
    task = task or ClassificationTask()
    torch.manual_seed(config.seed)  # same initial weights for runs compared with each other
    model = task.build_model(ModelConfig(arch="smallcnn"), num_classes=len(bundle.class_names))
    kwargs = {"reporter": reporter} if reporter is not None else {}
    return fit(task, model, bundle, config, device=CPU, checkpoint_dir=checkpoint_dir, **kwargs)


def without_timings(row: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in row.items() if k not in ("epoch_seconds", "train_images_per_s")}


def test_fit_reports_history_metrics_and_logs(tiny_digits: DataBundle, reporter: Any) -> None:
    result = run(tiny_digits, FAST, reporter=reporter)
    assert (result.epochs_run, result.best_epoch, len(result.history)) == (2, 2, 2)
    assert not (result.cancelled or result.stopped_early) and result.resumed_from_epoch is None
    assert (
        result.metrics
        == result.eval.metrics
        == {k.removeprefix("val/"): v for k, v in result.history[1].items() if k.startswith("val/")}
    )
    assert result.history[1]["train/loss"] < result.history[0]["train/loss"]
    assert {"epoch", "lr", "epoch_seconds", "train_images_per_s", "val/top1"} <= set(
        result.history[0]
    )
    assert result.train_images_per_s > 0
    assert all(v.device == CPU for v in result.state_dict.values())
    # 8 steps an epoch: progress after each; step logs at step 8 of each epoch (every 10 steps
    # or at epoch end, step = global step); epoch logs with step = epoch
    assert len(reporter.progress_calls) == 16
    assert reporter.progress_calls[-1] == {
        "epoch": 2, "epochs": 2, "step": 8, "steps": 8,
        "metrics": reporter.progress_calls[-1]["metrics"],
    }  # fmt: skip
    steps = [step for step, metrics in reporter.logged if "train/loss" in metrics]
    epochs = [step for step, metrics in reporter.logged if "val/top1" in metrics]
    assert (steps, epochs) == ([8, 16], [1, 2])
    epoch_log = next(metrics for step, metrics in reporter.logged if "val/top1" in metrics)
    assert {"epoch/train_loss", "epoch/lr", "val/loss", "val/f1_macro"} <= set(epoch_log)


def test_resume_continues_exactly_where_it_stopped(
    tiny_digits: DataBundle, tmp_path: Path, reporter: Any
) -> None:
    three = TrainConfig(**{**FAST.__dict__, "epochs": 3})
    first = run(tiny_digits, FAST, checkpoint_dir=tmp_path / "ckpt")
    assert first.epochs_run == 2 and (tmp_path / "ckpt" / "last.pt").is_file()
    resumed = run(tiny_digits, three, checkpoint_dir=tmp_path / "ckpt", reporter=reporter)
    assert resumed.resumed_from_epoch == 2
    assert resumed.epochs_run == 3 and len(resumed.history) == 3
    assert [call["epoch"] for call in reporter.progress_calls] == [3] * 8  # epochs 1-2 skipped
    assert reporter.event_kinds()[0] == "resumed"
    assert resumed.eval.figures.keys() == {"confusion_matrix.png", "sample_predictions.png"}

    checkpoint = torch.load(tmp_path / "ckpt" / "last.pt", weights_only=True)
    assert checkpoint["progress"]["epoch"] == 3
    assert {"model", "optimizer", "scheduler", "scaler", "best_state_dict"} <= set(checkpoint)


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(
    tiny_digits: DataBundle, tmp_path: Path, stopping_reporter: type
) -> None:
    three = TrainConfig(**{**FAST.__dict__, "epochs": 3})
    stopped = run(tiny_digits, three, checkpoint_dir=tmp_path, reporter=stopping_reporter(
        stop_after_steps=16  # 8 steps an epoch: cancelled at the first step of epoch 3
    ))  # fmt: skip
    assert stopped.cancelled and stopped.epochs_run == 2
    resumed = run(tiny_digits, three, checkpoint_dir=tmp_path)
    straight = run(tiny_digits, three)
    # per-epoch reseeding: data order, augmentation and dropout replay exactly
    assert [without_timings(r) for r in resumed.history] == [
        without_timings(r) for r in straight.history
    ]
    for name, value in straight.state_dict.items():
        torch.testing.assert_close(resumed.state_dict[name], value, rtol=0, atol=0)


class ScriptedMetricTask(ClassificationTask):
    """Evaluation returns a fixed sequence of top-1 values, one per epoch."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores = scores
        self.calls = 0

    def evaluate(self, model, loader, *, device, class_names) -> EvalResult:
        self.calls += 1
        return EvalResult(metrics={"top1": self.scores[self.calls - 1]})


def test_early_stopping_and_no_resume_past_it(
    tiny_digits: DataBundle, tmp_path: Path, reporter: Any
) -> None:
    scores = [0.5, 0.7, 0.6, 0.65, 0.69, 0.99, 0.99]
    config = TrainConfig(**{**FAST.__dict__, "epochs": 7, "early_stopping_patience": 3})
    task = ScriptedMetricTask(scores)
    result = run(tiny_digits, config, task=task, checkpoint_dir=tmp_path, reporter=reporter)
    assert result.stopped_early
    assert (result.epochs_run, result.best_epoch, task.calls) == (5, 2, 5)
    assert result.metrics == {"top1": 0.7}
    assert "early_stopped" in reporter.event_kinds()
    again = run(tiny_digits, config, task=ScriptedMetricTask(scores), checkpoint_dir=tmp_path)
    assert again.stopped_early and again.epochs_run == 5 and again.history == result.history


def test_should_stop_cancels_within_an_epoch(
    tiny_digits: DataBundle, tmp_path: Path, stopping_reporter: type
) -> None:
    reporter = stopping_reporter(stop_after_steps=11)  # 8 steps an epoch: stop in epoch 2
    config = TrainConfig(**{**FAST.__dict__, "epochs": 5})
    result = run(tiny_digits, config, checkpoint_dir=tmp_path, reporter=reporter)
    assert result.cancelled and not result.stopped_early
    assert (result.epochs_run, len(result.history), len(reporter.progress_calls)) == (1, 1, 11)
    assert "cancelled" in reporter.event_kinds()
    assert torch.load(tmp_path / "last.pt", weights_only=True)["progress"]["epoch"] == 1
    # cancelled before any epoch finished: current weights, no metrics
    early = run(tiny_digits, config, reporter=stopping_reporter(stop_after_steps=2))
    assert early.cancelled and early.epochs_run == 0 and early.best_epoch == 0
    assert early.metrics == {} and early.state_dict


def test_sgd_with_constant_lr(tiny_digits: DataBundle, reporter: Any) -> None:
    config = TrainConfig(
        epochs=2, batch_size=32, lr=0.05, optimizer="sgd", scheduler="constant", warmup_epochs=0
    )
    result = run(tiny_digits, config, reporter=reporter)
    lrs = [m["train/lr"] for _, m in reporter.logged if "train/lr" in m]
    assert lrs == [0.05, 0.05]
    assert result.history[1]["train/loss"] < result.history[0]["train/loss"]
    assert result.metrics["top1"] > 0.2  # chance is 0.1


def test_dataloader_workers_learn_and_reproduce(tiny_digits: DataBundle) -> None:
    config = TrainConfig(**{**FAST.__dict__, "num_workers": 2})
    first, second = run(tiny_digits, config), run(tiny_digits, config)
    # worker processes seed their augmentation from the loader's per-epoch generator
    assert [without_timings(r) for r in first.history] == [
        without_timings(r) for r in second.history
    ]
    assert first.history[1]["train/loss"] < first.history[0]["train/loss"]
    assert first.metrics["top1"] > 0.2  # chance is 0.1


class ScaledLoss(ClassificationTask):
    """The loss times 1000: gradients far above any clipping norm."""

    def compute_loss(self, model, batch) -> dict[str, torch.Tensor]:
        losses = super().compute_loss(model, batch)
        return {"loss": losses["loss"] * 1000.0}


@pytest.mark.parametrize("clip", [None, 1.0])
def test_gradient_clipping_bounds_the_first_update(
    tiny_digits: DataBundle, stopping_reporter: type, clip: float | None
) -> None:
    lr, momentum = 0.01, 0.9
    config = TrainConfig(
        epochs=1, batch_size=32, lr=lr, optimizer="sgd", momentum=momentum, weight_decay=0.0,
        warmup_epochs=0, grad_clip_norm=clip, seed=7,
    )  # fmt: skip
    task = ScaledLoss()
    torch.manual_seed(config.seed)
    model = task.build_model(ModelConfig(arch="smallcnn"), num_classes=10)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reporter = stopping_reporter(stop_after_steps=1)  # one optimizer step, then cancelled
    result = fit(task, model, tiny_digits, config, device=CPU, reporter=reporter)
    assert result.cancelled and len(reporter.progress_calls) == 1
    step = torch.cat([(result.state_dict[n] - before[n]).flatten() for n in names]).norm()
    # first Nesterov SGD step: lr * (1 + momentum) * gradient
    if clip is None:
        assert step > 100 * lr * (1 + momentum)
    else:
        assert float(step) == pytest.approx(lr * (1 + momentum) * clip, rel=1e-3)


def test_warmup_then_cosine_schedule() -> None:
    factor = lr_factor(TrainConfig(epochs=4, warmup_epochs=1, scheduler="cosine"), 10)
    assert [factor(s) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])
    assert factor(10) == pytest.approx(1.0)
    assert factor(25) == pytest.approx(FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5)
    assert factor(40) == pytest.approx(FINAL_LR_FRACTION)
    constant = lr_factor(TrainConfig(epochs=4, warmup_epochs=0.5, scheduler="constant"), 10)
    assert [constant(s) for s in (0, 4, 5, 39)] == pytest.approx([0.2, 1.0, 1.0, 1.0])


def test_no_weight_decay_on_norms_and_biases() -> None:
    model = ClassificationTask().build_model(ModelConfig(arch="smallcnn"), num_classes=3)
    optimizer = build_optimizer(model, TrainConfig(weight_decay=0.05))
    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 4 or p.ndim == 2 for p in decayed["params"])  # conv and linear
    assert all(p.ndim == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_ema_weights_are_returned(tiny_digits: DataBundle) -> None:
    config = TrainConfig(**{**FAST.__dict__, "ema": True, "ema_decay": 0.9})
    task = ClassificationTask()
    torch.manual_seed(config.seed)
    model = task.build_model(ModelConfig(arch="smallcnn"), num_classes=10)
    result = fit(task, model, tiny_digits, config, device=CPU)
    live = model.state_dict()
    differs = [
        name
        for name, value in result.state_dict.items()
        if value.is_floating_point() and not torch.equal(value, live[name].cpu())
    ]
    assert len(differs) > len(live) // 2  # the averaged weights, not the live ones
    assert result.metrics["top1"] > 0.2


class NanAfterTwoSteps(ClassificationTask):
    def __init__(self) -> None:
        super().__init__()
        self.steps = 0

    def compute_loss(self, model, batch) -> dict[str, torch.Tensor]:
        self.steps += 1
        losses = super().compute_loss(model, batch)
        if self.steps == 3:
            losses["loss_extra"] = torch.tensor(math.nan)
            losses["loss"] = losses["loss"] + losses["loss_extra"]
        return losses


def test_non_finite_loss_names_the_loss_and_step(tiny_digits: DataBundle) -> None:
    with pytest.raises(UserError, match=r"epoch 1, step 3 .*'loss_extra': nan"):
        run(tiny_digits, FAST, task=NanAfterTwoSteps())


def test_select_device() -> None:
    assert select_device("cpu") == CPU
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            select_device("cuda")


def test_unreadable_checkpoint_is_a_user_error(tiny_digits: DataBundle, tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"cannot resume from checkpoint .*last\.pt"):
        run(tiny_digits, FAST, checkpoint_dir=tmp_path)
