"""Whether a state dict fits a model, from its key names and shapes alone (no torch).

The weights store records each file's keys and shapes when it is imported; the API checks a
job's weights against the model it will initialise from that record and `signatures.json`
(the state-dict keys and shapes of every torchvision classifier in the catalog, held to
torchvision by tests/tasks/test_weight_fit.py), so a wrong architecture is a 422 naming
the keys at submit, not a failure minutes later in a worker. The loader in weights.py makes
the same decisions with the tensors in hand.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fovea.tasks.catalog import TORCHVISION_WEIGHTS

SIGNATURES = Path(__file__).with_name("signatures.json")
SHOWN_KEYS = 5  # a message names at most this many keys

Manifest = Mapping[str, Sequence[int]]  # state-dict key -> tensor shape


@cache
def signature(model: str) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of torchvision classifier `model` (e.g. "resnet18")."""
    if model not in TORCHVISION_WEIGHTS:
        raise KeyError(f"no signature for {model!r}; known: {', '.join(TORCHVISION_WEIGHTS)}")
    table = json.loads(SIGNATURES.read_text(encoding="utf-8"))
    return {key: tuple(shape) for key, shape in table[model].items()}


@dataclass(frozen=True)
class Fit:
    """How a state dict meets a model: the keys wrong in it, and what loads."""

    target: str  # for messages: "classifier resnet18", "encoder resnet34"
    missing: tuple[str, ...]  # the model has them, the file does not (outside the head)
    unexpected: tuple[str, ...]  # the file has them, the model does not
    reshaped: tuple[str, ...]  # in both, with other shapes (outside the head)
    loaded: int  # keys that load
    fresh: tuple[str, ...]  # head keys left freshly initialised (absent or reshaped)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.reshaped)

    def problem(self) -> str:
        """'12 missing, 0 unexpected, 0 differently shaped keys for <target>, e.g. [...]'."""
        wrong = [*self.missing, *self.unexpected, *self.reshaped]
        return (
            f"{len(self.missing)} missing, {len(self.unexpected)} unexpected and "
            f"{len(self.reshaped)} differently shaped keys for the {self.target}, "
            f"e.g. {wrong[:SHOWN_KEYS]}"
        )


def classifier_fit(manifest: Manifest, *, model: str) -> Fit:
    """`manifest` loaded into torchvision classifier `model` with a head of any size: only
    the final layer may be absent or shaped for another number of classes."""
    head = TORCHVISION_WEIGHTS[model].head
    return _compare(manifest, signature(model), free=head, target=f"classifier {model}")


def encoder_fit(manifest: Manifest, *, model: str) -> Fit:
    """`manifest` (a classifier's keys) loaded into the encoder built from torchvision model
    `model`: its classifier keys are left out, everything else must match exactly."""
    dropped = TORCHVISION_WEIGHTS[model].classifier
    body = {k: v for k, v in manifest.items() if not k.startswith(dropped)}
    expected = {k: v for k, v in signature(model).items() if not k.startswith(dropped)}
    return _compare(body, expected, free=None, target=f"encoder {model}")


def _compare(
    manifest: Manifest, expected: Mapping[str, tuple[int, ...]], *, free: str | None, target: str
) -> Fit:
    def in_head(key: str) -> bool:
        return free is not None and key.startswith(free)

    reshaped = [k for k, v in manifest.items() if k in expected and tuple(v) != expected[k]]
    missing = [k for k in expected if k not in manifest]
    return Fit(
        target=target,
        missing=tuple(k for k in missing if not in_head(k)),
        unexpected=tuple(k for k in manifest if k not in expected),
        reshaped=tuple(k for k in reshaped if not in_head(k)),
        loaded=sum(1 for k in manifest if k in expected and k not in reshaped),
        fresh=tuple(k for k in (*missing, *reshaped) if in_head(k)),
    )
