"""Execution on Ray: `run_job(job) -> JobResult` is all that crosses into a Ray worker.

Importing this package does not import torch (the API process imports the torch-free
`fovea.workers.failures`); the public names load on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fovea.workers.types import JobResult, WorkerJob

__all__ = ["JobResult", "WorkerJob"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from fovea.workers import types

        return getattr(types, name)
    raise AttributeError(f"module 'fovea.workers' has no attribute {name!r}")
