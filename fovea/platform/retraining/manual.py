"""Manual promotion and rollback of a registered model's champion, audited in model_events.

The promotion gate (fovea.tracking.gate) decides automatically in the worker that trained
the candidate; a person overrides it here, always with a reason. The override goes through
the gate too: it is recorded on the version as a GateDecision with `manual=True` (the
reason, both versions' recorded scores), which the audit event carries as `decision`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from fovea.platform.errors import InvalidTransition, NotFound
from fovea.platform.model_events import PROMOTION, ROLLBACK, record_model_event
from fovea.platform.store import ModelEvent

if TYPE_CHECKING:
    from fovea.tracking.gate import ManualMove


def promote(
    *, session: Session, tracking_uri: str, name: str, version: int, reason: str
) -> ModelEvent:
    """Make `version` the champion of `name` by hand."""
    from fovea.tracking import gate

    with _as_platform_errors():
        move = gate.promote_by_hand(
            tracking_uri=tracking_uri, name=name, version=version, reason=reason
        )
    return record_model_event(
        session=session,
        model_name=name,
        model_version=version,
        kind=PROMOTION,
        value="manual",
        message=f"champion v{move.from_version} -> v{move.to_version} by hand: {reason}",
        data=_audit(move, reason=reason),
    )


def roll_back(*, session: Session, tracking_uri: str, name: str, reason: str) -> ModelEvent:
    """Give `champion` back to the version the current champion replaced."""
    from fovea.tracking import gate

    with _as_platform_errors():
        move = gate.roll_back_by_hand(tracking_uri=tracking_uri, name=name, reason=reason)
    return record_model_event(
        session=session,
        model_name=name,
        model_version=move.to_version,
        kind=ROLLBACK,
        value="manual",
        message=f"champion v{move.from_version} rolled back to v{move.to_version}: {reason}",
        data=_audit(move, reason=reason),
    )


def _audit(move: ManualMove, *, reason: str) -> dict[str, Any]:
    return {
        "from": move.from_version,
        "to": move.to_version,
        "reason": reason,
        "decision": move.decision.as_dict(),
    }


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
