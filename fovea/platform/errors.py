"""The control plane's error types; the API maps each to one status code and error name."""

from __future__ import annotations


class SpecError(ValueError):
    """A spec that is well-formed but refers to something it may not (422)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class IdempotencyConflict(ValueError):
    """An Idempotency-Key already used with another spec (422)."""


class NotFound(LookupError):
    """404."""


class WeightsRefused(ValueError):
    """A weights file the store will not take or give out: a hash that does not match
    (its file name's torchvision prefix, or the stored file changed since import), a file
    that does not fit its architecture (422)."""


class InvalidTransition(RuntimeError):
    """A state change the transition table forbids, e.g. cancelling a finished job (409)."""


class Unavailable(RuntimeError):
    """A dependency (database, model registry) is busy or down: 503 with Retry-After.
    Nothing was written; the same request may be sent again."""

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PayloadTooLarge(Exception):
    """A predict request over the configured image count or size (413)."""


class BadImages(Exception):
    """No image of a predict request could be read (422); names each file and why."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        super().__init__("no image could be read: " + "; ".join(p["problem"] for p in problems))
        self.problems = problems


class NoReference(LookupError):
    """A model version without a drift reference (trained before references existed): 409."""


class ScheduleConflict(ValueError):
    """A schedule name already taken (409)."""
