"""A backend for tests and benchmarks of the control plane: no Ray, outcomes on cue.

`FakeBackend` runs nothing. Each submitted attempt "runs" for `polls` polls and then ends
with the outcome `script(job)` gives (FINISHED by default), so tests can inject worker
deaths, user errors and transient faults into the real scheduler, store and policy. It is
thread-safe and may be shared by several schedulers, as one cluster is: it records how
often each job was submitted and the most CPUs and GPUs ever in use at once.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from fovea.workers.backend import Handle
from fovea.workers.failures import Outcome, OutcomeKind, outcome_of_result
from fovea.workers.types import JobResult, WorkerJob

Script = Callable[[WorkerJob], Outcome]


def finished(job: WorkerJob) -> Outcome:
    return outcome_of_result(JobResult(status="succeeded", metrics={"top1": 1.0}))


class FakeBackend:
    def __init__(
        self, *, cpus: float = 4.0, gpus: float = 0.0, polls: int = 1, script: Script = finished
    ) -> None:
        self.cpus, self.gpus, self.polls, self.script = cpus, gpus, polls, script
        self._lock = threading.Lock()
        self.submits: Counter[str] = Counter()
        self.jobs: dict[str, WorkerJob] = {}  # the last attempt submitted, by job id
        self.cancelled: set[str] = set()
        self.in_use = [0.0, 0.0]
        self.max_in_use = [0.0, 0.0]
        self.released = 0  # times the scheduler said nothing runs
        self.status: dict[str, dict[str, Any]] = {}  # what drain_status hands out next

    def capacity(self) -> tuple[float, float]:
        return self.cpus, self.gpus

    def submit(self, job: WorkerJob) -> Handle:
        with self._lock:
            self.submits[job.job_id] += 1
            self.jobs[job.job_id] = job
            self.in_use[0] += job.cpus
            self.in_use[1] += job.gpus
            self.max_in_use = [max(a, b) for a, b in zip(self.max_in_use, self.in_use, strict=True)]
        return Handle(job.job_id, job.attempt, {"polls": 0, "job": job}, job.cpus, job.gpus)

    def poll(self, handle: Handle) -> Outcome | None:
        state = handle.ref
        if handle.job_id in self.cancelled:
            outcome = Outcome(OutcomeKind.CANCELLED, "stopped by the fake backend")
        else:
            state["polls"] += 1
            if state["polls"] < self.polls:
                return None
            outcome = self.script(state["job"])
        with self._lock:
            self.in_use[0] -= handle.cpus
            self.in_use[1] -= handle.gpus
        return outcome

    def on_done(self, handle: Handle, callback: Callable[[], None]) -> None:
        callback()  # every fake attempt may be done at the next poll

    def cancel(self, handle: Handle) -> None:
        self.cancelled.add(handle.job_id)

    def drain_status(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            out, self.status = self.status, {}
        return out

    def release(self) -> None:
        self.released += 1

    def idle(self) -> float | None:
        return None

    def shutdown(self) -> None:
        return None
