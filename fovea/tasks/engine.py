"""The one training loop every task shares.

`fit` reads top to bottom: set-up, resume, then per epoch: train steps, evaluate, keep the
best, checkpoint, early-stop. Tasks plug in through the Task protocol (losses, evaluation,
batches); the outside world through a Reporter, whose calls are the fixed hook points:
`progress` after every step, `log_metrics` every LOG_EVERY_STEPS steps and after every
epoch, `event` on resume, early stop and cancel, and `should_stop` polled every step.

Choices worth knowing (optimizer, schedule and EMA live in optim.py, file I/O in
checkpoint.py):
- LR schedule is per step: linear warm-up over `warmup_epochs` (for both schedulers; set
  it to 0 for a flat "constant"), then cosine down to 1% of `lr`. AdamW or SGD (Nesterov);
  no weight decay on norm weights and biases.
- AMP is fp16 autocast + GradScaler on CUDA only. On CPU it stays off: bf16 autocast on
  CPUs without AMX/avx512-bf16 is usually slower than fp32, and numerically riskier.
- Randomness is re-seeded from (seed, epoch) at the start of every epoch, so a run resumed
  from a checkpoint shuffles and augments exactly as an uninterrupted run would.
- checkpoint_dir/last.pt is rewritten atomically after every epoch (model, optimizer,
  scheduler, scaler, EMA, progress, history, best weights and best evaluation) and loads
  with `torch.load(weights_only=True)`. If it exists when `fit` starts, training resumes.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from fovea.tasks.base import DataBundle, EvalResult, Task, TrainConfig, UserError
from fovea.tasks.checkpoint import (
    decode_eval,
    encode_eval,
    load_checkpoint,
    save_checkpoint,
    unusable,
)
from fovea.tasks.optim import WeightEma, build_optimizer, lr_factor

LOG_EVERY_STEPS = 10
WARMUP_FRACTION = 0.1  # of the first epoch's steps, excluded from throughput
CHECKPOINT_NAME = "last.pt"


class Reporter(Protocol):
    """Where training reports to. Every method is called from the training loop, so each
    must return quickly: buffer and ship metrics elsewhere, never block on I/O here."""

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        """Per-step "train/*" with step = global step; per-epoch "val/*" and "epoch/*"
        with step = epoch."""
        ...

    def progress(
        self, *, epoch: int, epochs: int, step: int, steps: int, metrics: Mapping[str, float]
    ) -> None:
        """After every step; `step` counts within the epoch (1..steps)."""
        ...

    def event(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        """Things a user should see: "resumed", "cancelled", "early_stopped"."""
        ...

    def should_stop(self) -> bool:
        """Cooperative cancel, polled before every step."""
        ...


class NullReporter:
    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        pass

    def progress(
        self, *, epoch: int, epochs: int, step: int, steps: int, metrics: Mapping[str, float]
    ) -> None:
        pass

    def event(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        pass

    def should_stop(self) -> bool:
        return False


class NonFiniteLossError(UserError):
    """A loss became NaN or infinite: a configuration problem (LR too high, bad labels)."""


@dataclass
class FitResult:
    metrics: dict[str, float]  # validation metrics of the best epoch (by task.main_metric)
    eval: EvalResult  # the best epoch's evaluation, figures included
    history: list[dict[str, float]]  # one row per epoch, also those before a resume
    best_epoch: int  # 0 when no epoch finished
    epochs_run: int  # epochs completed in total, including those before a resume
    stopped_early: bool
    cancelled: bool
    resumed_from_epoch: int | None
    # images/s over the train steps of this call, minus the first WARMUP_FRACTION (at least
    # one step) of the first epoch this call runs: start-up, allocator and autotuning costs.
    # Data loading counts; evaluation and checkpointing do not. A run too short for that
    # window (one step in its only epoch) reports its whole-epoch rate instead.
    train_images_per_s: float
    state_dict: dict[str, torch.Tensor]  # best weights (EMA weights when ema is on), on CPU


@dataclass
class _Progress:
    """Everything beyond module states that a checkpoint must restore."""

    epoch: int = 0  # last completed epoch
    best_metric: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def select_device(prefer: str = "auto") -> torch.device:
    """The training device: for "auto" CUDA when available, else CPU; else the one named."""
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(prefer)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {prefer!r} was asked for but CUDA is not available here")
    return device


def fit(
    task: Task,
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig,
    *,
    device: torch.device,
    checkpoint_dir: Path | None = None,
    reporter: Reporter = NullReporter(),
) -> FitResult:
    if len(data.train) == 0 or len(data.val) == 0:
        raise UserError(f"empty split: {len(data.train)} train, {len(data.val)} val samples")
    _seed_everything(config.seed)
    model.to(device)
    loader_seed = torch.Generator().manual_seed(config.seed)
    train_loader = SingleThreadedLoading(
        data.train,
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(data.train) > config.batch_size,  # no tiny last batch for BatchNorm
        num_workers=config.num_workers,
        collate_fn=data.collate_fn,
        pin_memory=device.type == "cuda",
        generator=loader_seed,
    )
    val_loader = SingleThreadedLoading(
        data.val,
        batch_size=config.batch_size * 2,  # no activations kept for backward
        num_workers=config.num_workers,
        collate_fn=data.collate_fn,
        pin_memory=device.type == "cuda",
    )
    steps_per_epoch = len(train_loader)
    optimizer = build_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch))
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    ema = WeightEma(model, decay=config.ema_decay) if config.ema else None

    state = _Progress()
    best_state: dict[str, torch.Tensor] = {}
    best_eval = EvalResult(metrics={})
    path = checkpoint_dir / CHECKPOINT_NAME if checkpoint_dir is not None else None
    resumed_from = None
    modules = {
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": scaler,
        "ema": ema,
    }
    if path is not None and path.is_file():
        state, best_state, best_eval = _resume(path, modules=modules)
        resumed_from = state.epoch
        reporter.event(
            "resumed", f"resumed from {path} after epoch {state.epoch}", {"epoch": state.epoch}
        )

    cancelled = False
    timed_images, timed_seconds = 0, 0.0  # steady-state window, see FitResult
    all_images, all_seconds = 0, 0.0  # fallback when the run is too short for a window
    first_epoch = state.epoch + 1
    for epoch in range(first_epoch, config.epochs + 1):
        if state.stopped_early:
            break
        # ---- train one epoch
        _seed_everything(config.seed * 1000 + epoch)
        loader_seed.manual_seed(config.seed * 1000 + epoch)
        model.train()
        loss_sums: dict[str, float] = {}
        window: dict[str, float] = {}
        epoch_images, epoch_start = 0, time.perf_counter()
        warmup_steps = max(1, round(WARMUP_FRACTION * steps_per_epoch))
        timing_start = epoch_start if epoch > first_epoch else None
        images_at_timing_start = 0
        for step, batch in enumerate(train_loader, start=1):
            if reporter.should_stop():
                cancelled = True
                break
            global_step = (epoch - 1) * steps_per_epoch + step
            batch = task.to_device(batch, device)
            with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                losses = task.compute_loss(model, batch)
            values = _checked_values(losses, epoch=epoch, step=step, global_step=global_step)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(losses["loss"]).backward()
            if config.grad_clip_norm is not None:
                scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(model)

            epoch_images += task.batch_size_of(batch)
            for name, value in values.items():
                loss_sums[name] = loss_sums.get(name, 0.0) + value
                window[name] = window.get(name, 0.0) + value
            if timing_start is None and step == warmup_steps and step < steps_per_epoch:
                timing_start, images_at_timing_start = time.perf_counter(), epoch_images
            if step % LOG_EVERY_STEPS == 0 or step == steps_per_epoch:
                count = (step - 1) % LOG_EVERY_STEPS + 1
                logged = {f"train/{k}": v / count for k, v in window.items()}
                logged["train/lr"] = optimizer.param_groups[0]["lr"]
                reporter.log_metrics(logged, step=global_step)
                window = {}
            reporter.progress(
                epoch=epoch,
                epochs=config.epochs,
                step=step,
                steps=steps_per_epoch,
                metrics={f"train/{k}": v for k, v in values.items()},
            )
        epoch_seconds = time.perf_counter() - epoch_start
        if timing_start is not None and not cancelled:
            timed_seconds += time.perf_counter() - timing_start
            timed_images += epoch_images - images_at_timing_start
        all_images, all_seconds = all_images + epoch_images, all_seconds + epoch_seconds
        if cancelled:
            reporter.event("cancelled", f"stopped on request during epoch {epoch}")
            break

        # ---- evaluate, keep the best, checkpoint
        eval_model = ema.module if ema is not None else model
        eval_model.eval()
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            result = task.evaluate(
                eval_model, val_loader, device=device, class_names=data.class_names
            )
        if task.main_metric not in result.metrics:
            raise KeyError(f"{task.name}.evaluate returned no {task.main_metric!r}")
        row = {
            "epoch": float(epoch),
            **{f"train/{k}": v / max(step, 1) for k, v in loss_sums.items()},
            "lr": optimizer.param_groups[0]["lr"],
            **{f"val/{k}": float(v) for k, v in result.metrics.items()},
            "epoch_seconds": epoch_seconds,
            "train_images_per_s": epoch_images / epoch_seconds,
        }
        state.history.append(row)
        state.epoch = epoch
        score = float(result.metrics[task.main_metric])
        if score > state.best_metric:
            state.best_metric, state.best_epoch, state.bad_epochs = score, epoch, 0
            best_state = _cpu_state(eval_model)
            best_eval = result
        else:
            state.bad_epochs += 1
        patience = config.early_stopping_patience
        state.stopped_early = patience is not None and state.bad_epochs >= patience
        reporter.log_metrics(
            {_epoch_metric_name(k): v for k, v in row.items() if k != "epoch"}, step=epoch
        )
        if path is not None:
            save_checkpoint(
                path,
                {
                    **{name: m.state_dict() if m else None for name, m in modules.items()},
                    "progress": asdict(state),
                    "train_config": asdict(config),  # for people; resume uses the caller's
                    "best_state_dict": best_state,
                    "best_eval": encode_eval(best_eval),
                },
            )
        if state.stopped_early:
            reporter.event(
                "early_stopped",
                f"no {task.main_metric} improvement for {patience} epochs; best epoch "
                f"{state.best_epoch} ({task.main_metric}={state.best_metric:.4f})",
                {"epoch": epoch, "best_epoch": state.best_epoch},
            )

    if not best_state:  # cancelled before any epoch finished
        best_state = _cpu_state(ema.module if ema is not None else model)
    return FitResult(
        metrics=dict(best_eval.metrics),
        eval=best_eval,
        history=state.history,
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        stopped_early=state.stopped_early,
        cancelled=cancelled,
        resumed_from_epoch=resumed_from,
        train_images_per_s=(
            timed_images / timed_seconds
            if timed_seconds > 0
            else all_images / all_seconds
            if all_seconds > 0
            else 0.0
        ),
        state_dict=best_state,
    )


class SingleThreadedLoading(DataLoader):
    """A DataLoader that produces each batch with torch's intra-op threads set to 1.

    Per-sample decoding and augmentation are many tiny ops that gain nothing from intra-op
    threads, and on a busy machine each of them waits at a barrier for a descheduled
    thread: on 2 cores, the digits pipeline fell from 1,130 to 330 images/s with one busy
    neighbour process, and a whole fit to 1/12 of its speed under heavier load. DataLoader
    workers already run with one thread; this does the same for num_workers=0. The model
    step between batches keeps every thread.
    """

    def __iter__(self) -> Iterator[Any]:
        threads = torch.get_num_threads()
        batches = super().__iter__()
        while True:
            torch.set_num_threads(1)
            try:
                batch = next(batches)
            except StopIteration:
                return
            finally:
                torch.set_num_threads(threads)
            yield batch


def _epoch_metric_name(key: str) -> str:
    """History key -> logged name; per-step curves own "train/*", so epochs log "epoch/*"."""
    return key if key.startswith("val/") else "epoch/" + key.replace("/", "_")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _checked_values(
    losses: Mapping[str, torch.Tensor], *, epoch: int, step: int, global_step: int
) -> dict[str, float]:
    """All losses as floats in one device sync; raises on NaN or infinity."""
    if "loss" not in losses:
        raise KeyError(f"compute_loss must return a total 'loss', got {sorted(losses)}")
    floats = torch.stack([v.detach().float() for v in losses.values()]).tolist()
    values = dict(zip(losses, floats, strict=True))
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    if bad:
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch}, step {step} (global step {global_step}): "
            f"{bad}; all losses: {values}. Lower train.lr, set train.grad_clip_norm, or check "
            "the labels"
        )
    return values


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _resume(
    path: Path, *, modules: Mapping[str, Any]
) -> tuple[_Progress, dict[str, torch.Tensor], EvalResult]:
    """Restore `modules` in place from `path`; returns progress, best weights and eval."""
    checkpoint = load_checkpoint(path)
    try:
        for name, module in modules.items():
            if module is None or (name == "scaler" and not checkpoint[name]):
                continue  # a CPU run saves an empty scaler state; a GPU retry starts afresh
            if name == "ema" and checkpoint["ema"] is None:  # EMA switched on at resume
                module.module.load_state_dict(checkpoint["model"])
            else:
                module.load_state_dict(checkpoint[name])
        progress = _Progress(**checkpoint["progress"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # another model or run
        raise unusable(path, exc) from exc
    return progress, checkpoint["best_state_dict"], decode_eval(checkpoint["best_eval"])
