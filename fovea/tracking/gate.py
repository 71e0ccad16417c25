"""The promotion gate's decision: pure functions of two scores on one frozen evaluation set.

A candidate replaces the champion only when, on the same frozen evaluation set and the
task's main metric (higher is better), it
- beats the champion (delta = candidate - champion > 0; a tie keeps the champion),
- by at least `min_delta` (absolute) and `min_relative_delta` (of |champion|), like MLflow's
  MetricThreshold(min_absolute_change, min_relative_change),
- reaches `min_value` when one is set (MetricThreshold's threshold),
- and, with `require_ci`, the paired bootstrap confidence interval of the delta lies above
  zero: the eval images are resampled with replacement, the same resample for both models,
  `bootstrap_samples` times; the interval is the central `ci_level` of the resampled deltas.
  It needs per-image scores whose mean is the metric (classification: correct 0/1 for
  top-1); a task without them cannot pass a gate that requires the interval.

Everything here is numpy only: decisions are unit-tested without a model or a store.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GatePolicy:
    min_delta: float = 0.0
    min_relative_delta: float = 0.0
    min_value: float | None = None
    require_ci: bool = False
    ci_level: float = 0.95
    bootstrap_samples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "min_delta": self.min_delta >= 0,
            "min_relative_delta": self.min_relative_delta >= 0,
            "ci_level": 0.5 <= self.ci_level < 1,
            "bootstrap_samples": 100 <= self.bootstrap_samples <= 100_000,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"promotion.{name} out of range: {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> GatePolicy:
        return cls(**dict(data or {}))


@dataclass(frozen=True)
class EvalSetRef:
    """Which frozen evaluation set the scores come from."""

    name: str  # e.g. "flowers/eval@v1": the model and the version it was frozen from
    digest: str  # hash of the frozen set (paths + content), fixed when it was frozen
    size: int  # images the set was frozen with
    used: int  # images both models were scored on now (missing files excluded)
    digest_now: str | None = None  # hash of the files used now, when it differs


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    metric: str
    candidate: float
    champion: float | None
    champion_version: int | None
    delta: float | None
    relative_delta: float | None
    ci_low: float | None
    ci_high: float | None
    eval_set: EvalSetRef | None
    reasons: list[str]
    policy: GatePolicy = field(default_factory=GatePolicy)
    manual: bool = False  # a person promoted by hand (POST /models/{name}/promote)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("candidate", "champion", "delta", "relative_delta", "ci_low", "ci_high"):
            value = out[key]
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None  # JSON has no inf/NaN
        return out

    @property
    def summary(self) -> str:
        verdict = "promoted" if self.promote else "kept the champion"
        return f"{verdict}: " + "; ".join(self.reasons)


def paired_bootstrap_ci(
    candidate: np.ndarray, champion: np.ndarray, *, samples: int, level: float, seed: int
) -> tuple[float, float]:
    """Central `level` interval of mean(candidate - champion) over paired resamples.

    candidate, champion: [N] per-image scores on the same images in the same order.
    """
    diff = np.asarray(candidate, dtype=np.float64) - np.asarray(champion, dtype=np.float64)
    if diff.ndim != 1 or len(diff) == 0:
        raise ValueError(f"need two equal-length 1-D score arrays, got shape {diff.shape}")
    rng = np.random.default_rng(seed)
    means = np.empty(samples)
    chunk = max(1, 2_000_000 // len(diff))  # [chunk, N] index blocks bound the memory
    for start in range(0, samples, chunk):
        n = min(chunk, samples - start)
        means[start : start + n] = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def decide(
    *,
    metric: str,
    candidate: float,
    champion: float | None,
    policy: GatePolicy,
    eval_set: EvalSetRef | None,
    champion_version: int | None = None,
    candidate_per_image: np.ndarray | None = None,
    champion_per_image: np.ndarray | None = None,
) -> GateDecision:
    """Promote or keep, with every reason. `champion` None: there is no champion yet."""
    reasons: list[str] = []
    ok = True

    def check(passed: bool, text: str) -> None:
        nonlocal ok
        ok = ok and passed
        reasons.append(("" if passed else "FAILED ") + text)

    if not math.isfinite(candidate):
        check(False, f"candidate {metric} = {candidate} is not a number")
    if policy.min_value is not None:
        check(candidate >= policy.min_value, f"{metric} {candidate:.4f} >= {policy.min_value:g}")
    delta = relative = ci_low = ci_high = None
    if champion is None:
        reasons.append("no champion yet: the first candidate becomes champion")
    else:
        delta = candidate - champion
        relative = delta / abs(champion) if champion != 0 else (math.inf if delta > 0 else 0.0)
        beats = "beats" if delta > 0 else "does not beat"
        check(
            delta > 0, f"candidate {candidate:.4f} {beats} champion {champion:.4f} ({delta:+.4f})"
        )
        if policy.min_delta > 0:
            check(
                delta >= policy.min_delta, f"delta {delta:+.4f} >= min_delta {policy.min_delta:g}"
            )
        if policy.min_relative_delta > 0:
            check(
                relative >= policy.min_relative_delta,
                f"relative delta {relative:+.2%} >= {policy.min_relative_delta:.2%}",
            )
        if candidate_per_image is not None and champion_per_image is not None:
            ci_low, ci_high = paired_bootstrap_ci(
                candidate_per_image,
                champion_per_image,
                samples=policy.bootstrap_samples,
                level=policy.ci_level,
                seed=policy.seed,
            )
            interval = f"{policy.ci_level:.0%} paired bootstrap CI [{ci_low:+.4f}, {ci_high:+.4f}]"
            if policy.require_ci:
                check(ci_low > 0, f"{interval} above zero")
            else:
                reasons.append(f"{interval} (not required)")
        elif policy.require_ci:
            check(False, "a CI is required but this task gives no per-image scores")
    return GateDecision(
        promote=ok,
        metric=metric,
        candidate=candidate,
        champion=champion,
        champion_version=champion_version,
        delta=delta,
        relative_delta=relative,
        ci_low=ci_low,
        ci_high=ci_high,
        eval_set=eval_set,
        reasons=reasons,
        policy=policy,
    )


def not_comparable(
    *,
    metric: str,
    candidate: float,
    champion_version: int | None,
    reason: str,
    policy: GatePolicy,
    eval_set: EvalSetRef | None,
) -> GateDecision:
    """Keep the champion: the two cannot be scored fairly (say why)."""
    return GateDecision(
        promote=False,
        metric=metric,
        candidate=candidate,
        champion=None,
        champion_version=champion_version,
        delta=None,
        relative_delta=None,
        ci_low=None,
        ci_high=None,
        eval_set=eval_set,
        reasons=[f"FAILED not comparable: {reason}"],
        policy=policy,
    )
