"""Execution on Ray: `run_job(job) -> JobResult` is all that crosses into a Ray worker."""

from fovea.workers.types import JobResult, WorkerJob

__all__ = ["JobResult", "WorkerJob"]
