"""The engine's DDP seam: which process group `fit` runs in, and the few things ranks agree on.

`fit` is one loop for one process and for N data-parallel processes. When
`torch.distributed` is initialised (Ray Train's TorchTrainer does it: gloo on CPU, nccl on
GPU) with more than one rank, `Group.current` says so and the loop:
- wraps the model in DistributedDataParallel (gradients averaged every step);
- shards the training set with a DistributedSampler; `TrainConfig.batch_size` stays the
  GLOBAL batch: each of N ranks loads batch_size / N images a step, so steps per epoch, the
  LR schedule and the result do not depend on the worker count;
- agrees every step on (cancel asked, a loss non-finite, images trained) in one all-reduce, so
  every rank stops, or raises, at the same step;
- evaluates the full validation set on every rank (identical weights, identical metrics; no
  per-task gather of predictions) and takes rank 0's score for keep-best and early stopping;
- writes the checkpoint on rank 0 only.
Nothing here knows Ray; anything that starts a process group (torchrun too) works.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, DistributedSampler

_CPU = torch.device("cpu")


@dataclass(frozen=True)
class Group:
    rank: int = 0
    size: int = 1
    device: torch.device = _CPU  # where collectives run (nccl: the GPU)

    @classmethod
    def current(cls, device: torch.device) -> Group:
        """This process's group: torch.distributed's when initialised, else a group of one."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            on = device if dist.get_backend() == "nccl" else torch.device("cpu")
            return cls(rank=dist.get_rank(), size=dist.get_world_size(), device=on)
        return cls(device=device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        if self.size == 1:
            return model
        ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def per_rank_batch(self, batch_size: int) -> int:
        if batch_size % self.size:
            raise ValueError(
                f"batch_size {batch_size} is the global batch and must be a multiple of the "
                f"{self.size} workers"
            )
        return batch_size // self.size

    def sampler(self, dataset: Dataset, *, seed: int) -> DistributedSampler | None:
        """This rank's shard, reshuffled per epoch by `set_epoch` (None for one process).

        The shard is padded by repeating a few samples so every rank takes the same number
        of steps (DDP needs that; the repeats are at most size - 1 images an epoch)."""
        if self.size == 1:
            return None
        return DistributedSampler(
            dataset, num_replicas=self.size, rank=self.rank, shuffle=True, seed=seed
        )

    def agree_step(self, *, stop: bool, nonfinite: bool, images: int) -> tuple[bool, bool, int]:
        """(any rank asked to stop, any rank's loss non-finite, images over all ranks)."""
        if self.size == 1:
            return stop, nonfinite, images
        flags = torch.tensor([float(stop), float(nonfinite), float(images)], device=self.device)
        dist.all_reduce(flags)  # sum; float32 counts images exactly up to 2**24
        stop_n, nonfinite_n, images_n = flags.tolist()
        return stop_n > 0, nonfinite_n > 0, int(images_n)

    def main_value(self, value: float) -> float:
        """Rank 0's value on every rank: decisions (best epoch, early stop) never diverge."""
        if self.size == 1:
            return value
        box = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(box, src=0)
        return float(box.item())
