"""The one training loop every task shares, in phases (torchvision's references style).

`fit` reads in one screen: set up, resume, then per epoch `train_one_epoch`, `evaluate`,
keep the best, checkpoint, early-stop. Tasks plug in through the Task protocol (losses,
evaluation, batches); the outside world through a Reporter, whose calls are the fixed
hook points: `progress` after every step, `log_metrics` every LOG_EVERY_STEPS steps and
after every epoch, `event` on resume, early stop and cancel, `should_stop` before every
step.

Choices worth knowing (optimizer, schedule and EMA live in optim.py, file I/O in
checkpoint.py):
- LR schedule is per step: linear warm-up over `warmup_epochs`, then cosine down to 1% of
  `lr` (or flat). AdamW or SGD (Nesterov); no weight decay on norm weights and biases.
- AMP is fp16 autocast + GradScaler on CUDA only. On CPU it stays off: bf16 autocast on
  CPUs without AMX/avx512-bf16 is usually slower than fp32, and numerically riskier.
- Randomness is re-seeded from (seed, epoch) at the start of every epoch, so a run resumed
  from a checkpoint shuffles and augments exactly as an uninterrupted run would.
- Data loading: `TrainConfig.num_workers` DataLoader worker processes; None picks one
  worker when the process has two or more threads, else none. Per-sample augmentation is
  many tiny ops that gain nothing from intra-op threads and, on a busy machine, wait at
  their barriers; a worker process runs them single-threaded beside training and seeds its
  randomness from the loader's per-epoch generator, so runs stay reproducible.
- checkpoint_dir/last.pt is rewritten atomically after every epoch (modules, progress,
  history, best weights and best evaluation) and loads with `torch.load(weights_only=True)`.
  If it exists when `fit` starts, training resumes.
- DDP seam (ddp.py): under an initialised torch.distributed group of N ranks the same loop
  wraps the model in DistributedDataParallel, shards the training set, and reads
  `TrainConfig.batch_size` as the GLOBAL batch (batch_size / N per rank); ranks agree every
  step on cancel and non-finite losses; rank 0 writes the checkpoint. Reporter calls happen
  on every rank: the caller gives ranks other than 0 a reporter that logs nothing.
  `on_checkpoint(path, epoch)` runs on every rank after each epoch's checkpoint is written
  (Ray Train's `report` hangs there).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from fovea.tasks.base import DataBundle, EvalResult, Task, TrainConfig, UserError
from fovea.tasks.checkpoint import decode_eval, encode_eval, load_checkpoint, save_checkpoint
from fovea.tasks.checkpoint import unusable as unusable_checkpoint
from fovea.tasks.ddp import Group
from fovea.tasks.finetune import is_frozen, set_backbone_frozen
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
class Progress:
    """Everything beyond module states that a checkpoint must restore."""

    epoch: int = 0  # last completed epoch
    best_metric: float = -math.inf
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best one
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)

    def record(self, row: dict[str, float], *, score: float, patience: int | None) -> bool:
        """One finished epoch; True when it is the best so far."""
        self.history.append(row)
        self.epoch = int(row["epoch"])
        improved = score > self.best_metric
        if improved:
            self.best_metric, self.best_epoch, self.bad_epochs = score, self.epoch, 0
        else:
            self.bad_epochs += 1
        self.stopped_early = patience is not None and self.bad_epochs >= patience
        return improved


@dataclass
class Training:
    """The modules a step changes, and what a checkpoint saves of them."""

    model: nn.Module  # possibly wrapped (DistributedDataParallel)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: WeightEma | None
    use_amp: bool

    @property
    def eval_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else unwrap(self.model)

    def modules(self) -> dict[str, Any]:
        return {
            "model": unwrap(self.model),
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "ema": self.ema,
        }


@dataclass
class Best:
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # CPU weights
    eval: EvalResult = field(default_factory=lambda: EvalResult(metrics={}))


class ThroughputMeter:
    """Training images/s over the steady state: after the first WARMUP_FRACTION of the first
    epoch this call runs (at least one step), evaluation and checkpoints excluded."""

    def __init__(self) -> None:
        self.timed_images, self.timed_seconds = 0, 0.0
        self.all_images, self.all_seconds = 0, 0.0
        self._first_epoch = True

    def start_epoch(self, steps: int) -> None:
        self._warmup_steps = max(1, round(WARMUP_FRACTION * steps))
        self._steps = steps
        self._epoch_start = time.perf_counter()
        self._window_start = None if self._first_epoch else self._epoch_start
        self._window_images = 0
        self._epoch_images = 0

    def step(self, step: int, images: int) -> None:
        self._epoch_images += images
        if self._window_start is None and step == self._warmup_steps and step < self._steps:
            self._window_start = time.perf_counter()
            self._window_images = self._epoch_images

    def end_epoch(self, *, complete: bool) -> float:
        """Seconds the epoch's training took."""
        now = time.perf_counter()
        if self._window_start is not None and complete:
            self.timed_seconds += now - self._window_start
            self.timed_images += self._epoch_images - self._window_images
        seconds = now - self._epoch_start
        self.all_images += self._epoch_images
        self.all_seconds += seconds
        self._first_epoch = False
        return seconds

    @property
    def epoch_images(self) -> int:
        return self._epoch_images

    @property
    def images_per_s(self) -> float:
        if self.timed_seconds > 0:
            return self.timed_images / self.timed_seconds
        return self.all_images / self.all_seconds if self.all_seconds > 0 else 0.0


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
    on_checkpoint: Callable[[Path | None, int], None] | None = None,
) -> FitResult:
    if len(data.train) == 0 or len(data.val) == 0:
        raise UserError(f"empty split: {len(data.train)} train, {len(data.val)} val samples")
    _seed_everything(config.seed)
    group = Group.current(device)
    model = group.wrap(model.to(device), device)
    train_loader, val_loader, generator = make_loaders(data, config, device=device, group=group)
    training = _training(model, config, device=device, steps_per_epoch=len(train_loader))
    path = checkpoint_dir / CHECKPOINT_NAME if checkpoint_dir is not None else None
    state, best, resumed_from = Progress(), Best(), None
    if path is not None and path.is_file():
        state, best = _resume(path, training)
        resumed_from = state.epoch
        reporter.event(
            "resumed", f"resumed from {path} after epoch {state.epoch}", {"epoch": state.epoch}
        )
        # The epochs the checkpoint holds, sent again: a point still buffered when the last
        # attempt died would be lost otherwise. MLflow's RunLogger keeps one point per step
        # (it skips the steps a resumed run already has).
        for row in state.history:
            reporter.log_metrics(
                {_epoch_metric_name(k): v for k, v in row.items() if k != "epoch"},
                step=int(row["epoch"]),
            )

    meter, cancelled = ThroughputMeter(), False
    for epoch in range(state.epoch + 1, config.epochs + 1):
        if state.stopped_early:
            break
        _seed_epoch(config.seed, epoch, generator=generator, loader=train_loader)
        losses = train_one_epoch(
            task, training, train_loader, epoch, config, meter, reporter, group=group
        )
        epoch_seconds = meter.end_epoch(complete=losses is not None)
        if losses is None:
            cancelled = True
            reporter.event("cancelled", f"stopped on request during epoch {epoch}")
            break
        result = evaluate(task, training, val_loader, device=device, data=data)
        row = {
            "epoch": float(epoch),
            **{f"train/{k}": v for k, v in losses.items()},
            "lr": training.optimizer.param_groups[0]["lr"],
            **{f"val/{k}": float(v) for k, v in result.metrics.items()},
            "epoch_seconds": epoch_seconds,
            "train_images_per_s": meter.epoch_images / epoch_seconds,
        }
        score = group.main_value(float(result.metrics[task.main_metric]))
        if state.record(row, score=score, patience=config.early_stopping_patience):
            best = Best(_cpu_state(training.eval_model), result)
        reporter.log_metrics(
            {_epoch_metric_name(k): v for k, v in row.items() if k != "epoch"}, step=epoch
        )
        if path is not None and group.is_main:
            save_checkpoint(path, _checkpoint(training, state, best, config))
        if on_checkpoint is not None:
            on_checkpoint(path, epoch)
        if state.stopped_early:
            reporter.event(
                "early_stopped",
                f"no {task.main_metric} improvement for {config.early_stopping_patience} "
                f"epochs; best epoch {state.best_epoch} "
                f"({task.main_metric}={state.best_metric:.4f})",
                {"epoch": epoch, "best_epoch": state.best_epoch},
            )

    return _fit_result(
        state,
        best,
        # cancelled before any epoch finished: the weights as they are
        state_dict=best.state or _cpu_state(training.eval_model),
        cancelled=cancelled,
        resumed_from_epoch=resumed_from,
        train_images_per_s=meter.images_per_s,
    )


def result_from_checkpoint(
    path: Path, *, cancelled: bool, resumed_from_epoch: int | None, train_images_per_s: float
) -> FitResult:
    """What `fit` returned, rebuilt from the checkpoint it left (the caller that started a
    DDP group reads rank 0's). No file: cancelled before the first epoch ended."""
    state, best, weights = Progress(), Best(), {}
    if path.is_file():
        checkpoint = load_checkpoint(path)
        state, best = Progress(**checkpoint["progress"]), _best_of(checkpoint)
        weights = checkpoint["best_state_dict"] or checkpoint["model"]
    return _fit_result(
        state,
        best,
        state_dict=weights,
        cancelled=cancelled,
        resumed_from_epoch=resumed_from_epoch,
        train_images_per_s=train_images_per_s,
    )


def _fit_result(
    state: Progress,
    best: Best,
    *,
    state_dict: dict[str, torch.Tensor],
    cancelled: bool,
    resumed_from_epoch: int | None,
    train_images_per_s: float,
) -> FitResult:
    return FitResult(
        metrics=dict(best.eval.metrics),
        eval=best.eval,
        history=state.history,
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        stopped_early=state.stopped_early,
        cancelled=cancelled,
        resumed_from_epoch=resumed_from_epoch,
        train_images_per_s=train_images_per_s,
        state_dict=state_dict,
    )


def train_one_epoch(
    task: Task,
    training: Training,
    loader: DataLoader,
    epoch: int,
    config: TrainConfig,
    meter: ThroughputMeter,
    reporter: Reporter,
    *,
    group: Group = Group(),
) -> dict[str, float] | None:
    """One pass over the training data; the epoch's mean losses (this rank's), or None when
    cancelled."""
    model, optimizer = training.model, training.optimizer
    device = next(model.parameters()).device
    steps = len(loader)
    model.train()
    set_backbone_frozen(unwrap(model), frozen=is_frozen(config, epoch))  # finetune.py
    meter.start_epoch(steps)
    sums: dict[str, float] = {}
    window: dict[str, float] = {}
    step = 0
    for step, batch in enumerate(loader, start=1):
        stop = reporter.should_stop()
        global_step = (epoch - 1) * steps + step
        batch = task.to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=training.use_amp):
            losses = task.compute_loss(model, batch)
        values = _loss_values(losses)
        # before backward: every rank must leave (or go on to the gradient all-reduce) together
        stop, nonfinite, images = group.agree_step(
            stop=stop,
            nonfinite=not all(math.isfinite(v) for v in values.values()),
            images=task.batch_size_of(batch),
        )
        if stop:
            return None
        if nonfinite:
            raise _nonfinite_error(values, epoch=epoch, step=step, global_step=global_step)
        optimizer.zero_grad(set_to_none=True)
        training.scaler.scale(losses["loss"]).backward()
        if config.grad_clip_norm is not None:
            training.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
        training.scaler.step(optimizer)
        training.scaler.update()
        training.scheduler.step()
        if training.ema is not None:
            training.ema.update(unwrap(model))

        meter.step(step, images)  # of all ranks
        for name, value in values.items():
            sums[name] = sums.get(name, 0.0) + value
            window[name] = window.get(name, 0.0) + value
        if step % LOG_EVERY_STEPS == 0 or step == steps:
            count = (step - 1) % LOG_EVERY_STEPS + 1
            logged = {f"train/{k}": v / count for k, v in window.items()}
            reporter.log_metrics(
                {**logged, "train/lr": optimizer.param_groups[0]["lr"]}, step=global_step
            )
            window = {}
        reporter.progress(
            epoch=epoch,
            epochs=config.epochs,
            step=step,
            steps=steps,
            metrics={f"train/{k}": v for k, v in values.items()},
        )
    return {k: v / max(step, 1) for k, v in sums.items()}


@torch.no_grad()
def evaluate(
    task: Task, training: Training, loader: DataLoader, *, device: torch.device, data: DataBundle
) -> EvalResult:
    """The task's evaluation of the weights being trained (their EMA when on)."""
    model = training.eval_model
    model.eval()
    with torch.autocast(device.type, dtype=torch.float16, enabled=training.use_amp):
        result = task.evaluate(model, loader, device=device, class_names=data.class_names)
    if task.main_metric not in result.metrics:
        raise KeyError(f"{task.name}.evaluate returned no {task.main_metric!r}")
    return result


def make_loaders(
    data: DataBundle, config: TrainConfig, *, device: torch.device, group: Group = Group()
) -> tuple[DataLoader, DataLoader, torch.Generator]:
    """(train loader, val loader, the train loader's generator, re-seeded every epoch).

    In a group of N ranks the train loader reads this rank's shard, batch_size / N at a
    time; every rank evaluates the whole validation set."""
    workers = config.num_workers
    if workers is None:
        workers = 1 if torch.get_num_threads() > 1 else 0
    common = {
        "num_workers": workers,
        "collate_fn": data.collate_fn,
        "pin_memory": device.type == "cuda",
    }
    generator = torch.Generator().manual_seed(config.seed)
    sampler = group.sampler(data.train, seed=config.seed)
    batch_size = group.per_rank_batch(config.batch_size)
    shard = len(sampler) if sampler is not None else len(data.train)
    train = DataLoader(
        data.train,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=shard > batch_size,  # no tiny last batch for BatchNorm
        generator=generator,
        **common,
    )
    # twice the batch for evaluation: no activations are kept for backward
    val = DataLoader(data.val, batch_size=config.batch_size * 2, **common)
    return train, val, generator


def unwrap(model: nn.Module) -> nn.Module:
    """The model itself, under a DistributedDataParallel wrapper if there is one."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _training(
    model: nn.Module, config: TrainConfig, *, device: torch.device, steps_per_epoch: int
) -> Training:
    optimizer = build_optimizer(unwrap(model), config)
    use_amp = config.amp and device.type == "cuda"
    return Training(
        model=model,
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch)),
        scaler=torch.amp.GradScaler("cuda", enabled=use_amp),
        ema=WeightEma(unwrap(model), decay=config.ema_decay) if config.ema else None,
        use_amp=use_amp,
    )


def _epoch_metric_name(key: str) -> str:
    """History key -> logged name; per-step curves own "train/*", so epochs log "epoch/*"."""
    return key if key.startswith("val/") else "epoch/" + key.replace("/", "_")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def _seed_epoch(seed: int, epoch: int, *, generator: torch.Generator, loader: DataLoader) -> None:
    """The same data order, augmentation and dropout for an epoch, resumed or not."""
    _seed_everything(seed * 1000 + epoch)
    generator.manual_seed(seed * 1000 + epoch)
    set_epoch = getattr(loader.sampler, "set_epoch", None)  # a DistributedSampler's shard
    if set_epoch is not None:
        set_epoch(epoch)


def _loss_values(losses: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """All losses as floats in one device sync."""
    if "loss" not in losses:
        raise KeyError(f"compute_loss must return a total 'loss', got {sorted(losses)}")
    floats = torch.stack([v.detach().float() for v in losses.values()]).tolist()
    return dict(zip(losses, floats, strict=True))


def _nonfinite_error(
    values: Mapping[str, float], *, epoch: int, step: int, global_step: int
) -> NonFiniteLossError:
    bad = {name: value for name, value in values.items() if not math.isfinite(value)}
    where = f"{bad}; all losses: {dict(values)}" if bad else "on another worker"
    return NonFiniteLossError(
        f"non-finite loss at epoch {epoch}, step {step} (global step {global_step}): {where}. "
        "Lower train.lr, set train.grad_clip_norm, or check the labels"
    )


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _checkpoint(
    training: Training, state: Progress, best: Best, config: TrainConfig
) -> dict[str, Any]:
    return {
        **{name: m.state_dict() if m else None for name, m in training.modules().items()},
        "progress": asdict(state),
        "train_config": asdict(config),  # for people; resume uses the caller's
        "best_state_dict": best.state,
        "best_eval": encode_eval(best.eval),
    }


def _resume(path: Path, training: Training) -> tuple[Progress, Best]:
    """Restore the modules in place from `path`; returns progress and the best so far."""
    checkpoint = load_checkpoint(path)
    try:
        for name, module in training.modules().items():
            if module is None or (name == "scaler" and not checkpoint[name]):
                continue  # a CPU run saves an empty scaler state; a GPU retry starts afresh
            if name == "ema" and checkpoint["ema"] is None:  # EMA switched on at resume
                module.module.load_state_dict(checkpoint["model"])
            else:
                module.load_state_dict(checkpoint[name])
        progress = Progress(**checkpoint["progress"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # another model or run
        raise unusable_checkpoint(path, exc) from exc
    return progress, _best_of(checkpoint)


def _best_of(checkpoint: Mapping[str, Any]) -> Best:
    return Best(checkpoint["best_state_dict"], decode_eval(checkpoint["best_eval"]))
