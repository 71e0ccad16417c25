"""The failure policy: what the platform does with each way an attempt ends.

`fovea.workers.failures` says what happened (an Outcome of one kind); `decide` says what
follows, and nothing else in the platform maps outcomes to states:

| outcome                         | cancel requested | retries left | job state            |
|---------------------------------|------------------|--------------|----------------------|
| FINISHED                        | any              | any          | succeeded            |
| any other                       | yes              | any          | cancelled            |
| USER_ERROR, INTERNAL            | no               | any          | failed (now)         |
| INFRA (death, OOM, transient)   | no               | yes          | queued, after backoff|
| INFRA                           | no               | no           | failed               |
| CANCELLED (nobody asked)        | no               | as INFRA     | as INFRA             |

An attempt that did not end well has its MLflow run ended (KILLED for a cancel, FAILED
otherwise) by the scheduler, since a worker that died could not: no run stays RUNNING.
A retried attempt resumes that same run, which turns it RUNNING again.
"""

from __future__ import annotations

from dataclasses import dataclass

from fovea.platform.store import JobState
from fovea.workers.failures import Outcome, OutcomeKind


@dataclass(frozen=True)
class Backoff:
    """Delay before retry n (1-based): base * 2**(n-1), at most cap seconds."""

    base_s: float = 0.0
    cap_s: float = 0.0

    def delay(self, retry: int) -> float:
        if self.base_s <= 0:
            return 0.0
        return min(self.cap_s, self.base_s * 2 ** max(0, retry - 1))


@dataclass(frozen=True)
class Decision:
    to: JobState
    message: str
    error: str | None = None
    retry_in_s: float | None = None  # to QUEUED: not claimable before this many seconds
    end_run: str | None = None  # "FAILED" | "KILLED": end the attempt's MLflow run so


def decide(
    *, outcome: Outcome, attempt: int, max_retries: int, cancel_requested: bool, backoff: Backoff
) -> Decision:
    kind, reason = outcome.kind, outcome.reason
    if kind is OutcomeKind.FINISHED:
        return Decision(JobState.SUCCEEDED, "succeeded")
    if cancel_requested:
        return Decision(JobState.CANCELLED, f"cancelled ({reason})", end_run="KILLED")
    if kind in (OutcomeKind.USER_ERROR, OutcomeKind.INTERNAL):
        return Decision(JobState.FAILED, f"failed: {reason}", error=reason, end_run="FAILED")
    # INFRA, or a stop nobody asked for: the environment's fault, retried while retries last
    if kind is OutcomeKind.CANCELLED:
        reason = f"stopped without a cancel request ({reason})"
    if attempt <= max_retries:
        delay = backoff.delay(attempt)
        return Decision(
            JobState.QUEUED,
            f"attempt {attempt} lost: {reason}; retrying from the last checkpoint"
            + (f" in {delay:g} s" if delay else ""),
            retry_in_s=delay,
            end_run="FAILED",
        )
    return Decision(
        JobState.FAILED,
        f"attempt {attempt} lost: {reason}; no retries left",
        error=f"worker lost after {attempt} attempt(s): {reason}",
        end_run="FAILED",
    )
