"""Shared fixtures for the task tests: real datasets, a small digits bundle, a reporter."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from fovea.tasks import DataBundle, DataConfig, get_task


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # The reference machine has 2 shared cores. With other processes busy, 2 OpenMP threads
    # made these tests 10x slower (240 s vs 20 s for test_engine.py): every tiny op waits
    # at a barrier for a descheduled thread. The models here are too small to gain from it.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def datasets_dir(datasets: Path) -> Path:
    """../shared/datasets; a missing folder fails the test (tests/conftest.py)."""
    return datasets


@pytest.fixture(scope="session")
def digits16() -> DataBundle:
    """builtin://digits at 16 px: the cheapest real data for engine tests."""
    return get_task("classification").build_data(
        DataConfig(uri="builtin://digits", format="builtin", image_size=16)
    )


@pytest.fixture
def tiny_digits(digits16: DataBundle) -> DataBundle:
    """256 training and 96 evenly spread validation digits: an epoch takes well under 1 s."""
    val_step = len(digits16.val) // 96
    return DataBundle(
        train=torch.utils.data.Subset(digits16.train, range(256)),
        val=torch.utils.data.Subset(digits16.val, range(0, val_step * 96, val_step)),
        class_names=digits16.class_names,
        stats=dict(digits16.stats),
    )


class RecordingReporter:
    """Keeps everything the engine reports; stops after `stop_after_steps` progress calls."""

    def __init__(self, *, stop_after_steps: int | None = None) -> None:
        self.logged: list[tuple[int, dict[str, float]]] = []
        self.progress_calls: list[dict[str, Any]] = []
        self.events: list[tuple[str, str, Mapping[str, Any] | None]] = []
        self.stop_after_steps = stop_after_steps

    def log_metrics(self, metrics: Mapping[str, float], *, step: int) -> None:
        self.logged.append((step, dict(metrics)))

    def progress(self, **kwargs: Any) -> None:
        self.progress_calls.append(kwargs)

    def event(self, kind: str, message: str, data: Mapping[str, Any] | None = None) -> None:
        self.events.append((kind, message, data))

    def should_stop(self) -> bool:
        return self.stop_after_steps is not None and (
            len(self.progress_calls) >= self.stop_after_steps
        )

    def event_kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.events]


@pytest.fixture
def reporter() -> RecordingReporter:
    return RecordingReporter()


@pytest.fixture
def stopping_reporter() -> type[RecordingReporter]:
    """The reporter class, for tests that set stop_after_steps."""
    return RecordingReporter
