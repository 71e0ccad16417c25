"""Manual promotion and rollback of a registered model's champion, audited in model_events.

The automatic decisions are made by the promotion gate inside the worker that trained the
candidate (fovea.workers.gate); a person overrides them here, always with a reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session

from fovea.platform.errors import InvalidTransition, NotFound
from fovea.platform.model_events import PROMOTION, ROLLBACK, record_model_event
from fovea.platform.store import ModelEvent


def promote(
    *, session: Session, tracking_uri: str, name: str, version: int, reason: str
) -> ModelEvent:
    """Make `version` the champion of `name` by hand."""
    from fovea.tracking import champion as promotion

    with _as_platform_errors():
        moved = promotion.promote_version(
            tracking_uri=tracking_uri, name=name, version=version, reason=reason
        )
    return record_model_event(
        session=session,
        model_name=name,
        model_version=version,
        kind=PROMOTION,
        value="manual",
        message=f"champion v{moved['from']} -> v{moved['to']} by hand: {reason}",
        data={**moved, "reason": reason},
    )


def roll_back(*, session: Session, tracking_uri: str, name: str, reason: str) -> ModelEvent:
    """Give `champion` back to the version the current champion replaced."""
    from fovea.tracking import champion as promotion

    with _as_platform_errors():
        moved = promotion.rollback(tracking_uri=tracking_uri, name=name, reason=reason)
    return record_model_event(
        session=session,
        model_name=name,
        model_version=moved["to"],
        kind=ROLLBACK,
        value="manual",
        message=f"champion v{moved['from']} rolled back to v{moved['to']}: {reason}",
        data={**moved, "reason": reason},
    )


@contextmanager
def _as_platform_errors() -> Iterator[None]:
    """Registry refusals as the API's errors: unknown model/version 404, others 409.

    A name MLflow refuses outright (blank once stripped, say) names no model either: 404.
    """
    from mlflow.exceptions import MlflowException

    from fovea.tracking.champion import PromotionError, UnknownModelError

    try:
        yield
    except UnknownModelError as exc:
        raise NotFound(str(exc)) from None
    except PromotionError as exc:
        raise InvalidTransition(str(exc)) from None
    except MlflowException as exc:
        if exc.error_code not in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            raise
        raise NotFound(f"no registered model by that name ({exc.message})") from None
