"""What happened to an attempt, typed: the one place exceptions and Ray errors are sorted.

Every way an attempt can end becomes an `Outcome` of one `OutcomeKind`:

- FINISHED: the worker returned a trained job;
- USER_ERROR: bad data or bad config (`UserError`): retrying cannot help;
- INTERNAL: a bug in Fovea (any exception not known to be transient): retrying would fail
  the same way, so it fails now, with the reason;
- INFRA: the worker or its node died, ran out of memory, or a transient MLflow or storage
  error stopped it: retried from the last checkpoint, with backoff, up to max_retries;
- CANCELLED: the worker stopped because a cancel was requested (or was force-killed).

What the platform then does with each kind (fail now, retry after a backoff, cancel) is
decided in one place too: `fovea.platform.jobs.policy`.
"""

from __future__ import annotations

import enum
import errno
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the API imports this module: keep it free of torch and the task zoo
    from fovea.workers.types import JobResult


class OutcomeKind(enum.StrEnum):
    FINISHED = "finished"
    USER_ERROR = "user_error"
    INTERNAL = "internal"
    INFRA = "infra"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Outcome:
    kind: OutcomeKind
    reason: str = ""
    result: JobResult | None = None  # what the worker returned, when it returned

    @property
    def mlflow_run_id(self) -> str | None:
        return self.result.mlflow_run_id if self.result is not None else None


# errno values of storage and network trouble that goes away by itself (or by moving node)
_TRANSIENT_ERRNO = {
    errno.ENOSPC,
    errno.EIO,
    errno.ESTALE,
    errno.ETIMEDOUT,
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.EAGAIN,
    errno.EBUSY,
}
# MLflow error codes of a server that is down, overloaded or restarting
_TRANSIENT_MLFLOW_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
_TRANSIENT_NAMES = {
    # by class name, so this module imports neither torch nor requests nor sqlalchemy
    "OutOfMemoryError",  # torch.cuda.OutOfMemoryError, ray.exceptions.OutOfMemoryError
    "ConnectionError",  # requests' and urllib3's (not subclasses of the builtin)
    "ConnectTimeout",
    "ReadTimeout",
    "Timeout",
    "ProtocolError",
    "MaxRetryError",
    "OperationalError",  # sqlalchemy/sqlite3: database is locked, server gone away
    "ChunkedEncodingError",
}


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError | ConnectionError | TimeoutError):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
        return True
    if getattr(exc, "error_code", None) in _TRANSIENT_MLFLOW_CODES:
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


def classify_exception(exc: BaseException) -> OutcomeKind:
    """USER_ERROR, INFRA or INTERNAL for an exception that ended an attempt; the chain of
    causes counts (an MlflowException raised from a ConnectionError is transient)."""
    from fovea.tasks.errors import UserError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserError):
            return OutcomeKind.USER_ERROR
        if _is_transient(current):
            return OutcomeKind.INFRA
        current = current.__cause__ or current.__context__
    return OutcomeKind.INTERNAL


def outcome_of_result(result: JobResult) -> Outcome:
    """The worker returned: its status (and, for a failure, the kind it reported)."""
    if result.status == "succeeded":
        return Outcome(OutcomeKind.FINISHED, result=result)
    if result.status == "cancelled":
        return Outcome(OutcomeKind.CANCELLED, "the worker stopped at the next step", result)
    kind = OutcomeKind(result.failure or OutcomeKind.INTERNAL.value)
    return Outcome(kind, result.error or "failed", result)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
