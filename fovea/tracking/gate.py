"""The one promotion gate: whether a registered model's `champion` moves to a version, and why.

Every change of champion is decided here and recorded as a GateDecision (moving the aliases
and recording is fovea.tracking.champion's part):
- a job that registers a model (a scheduled or drift-triggered retrain too) uses
  `FrozenSetGate`: candidate and champion scored on the model's frozen evaluation set
  (scoring: fovea.tracking.gate_scoring); the first decided version's validation split
  becomes that set. Not comparable, so the champion stays, when the job did not hold the
  set out or the classes changed;
- a registration with nothing to score on (a script, a test) uses `on_validation_metrics`:
  the validation main metric both versions recorded at registration, same rules, default
  policy; a champion without that metric is not comparable;
- a person uses `promote_by_hand` and `roll_back_by_hand`: decisions with `manual=True`,
  the reason, and both versions' recorded scores, not checked against any rule.

The rules (`decide`, `not_comparable`, the paired bootstrap) are pure numpy functions,
unit-tested without a model or a store. A candidate replaces the champion only when, on
the same frozen evaluation set and the task's main metric (higher is better), it
- beats the champion (delta = candidate - champion > 0; a tie keeps the champion),
- by at least `min_delta` (absolute) and `min_relative_delta` (of |champion|), like MLflow's
  MetricThreshold(min_absolute_change, min_relative_change),
- reaches `min_value` when one is set (MetricThreshold's threshold),
- and, with `require_ci`, the paired bootstrap confidence interval of the delta lies above
  zero: the eval images are resampled with replacement, the same resample for both models,
  `bootstrap_samples` times; the interval is the central `ci_level` of the resampled deltas.
  It needs per-image scores whose mean is the metric (classification: correct 0/1 for
  top-1); a task without them cannot pass a gate that requires the interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fovea.tracking import champion as records
from fovea.tracking._mlflow import TAG_MAIN_METRIC, TAG_MAIN_VALUE, float_tag, make_client

if TYPE_CHECKING:
    import torch
    from mlflow import MlflowClient

    from fovea.tasks import DataBundle, DataConfig, EventSink, Task, TrainConfig


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
    manual: bool = False  # a person moved the champion (promote_by_hand, roll_back_by_hand)

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


# -- the deciders registry.log_model runs in version order ---------------------------------


class Decider(Protocol):
    """The gate for a new version of registered model `name`; `champion`: the champion's
    version then, None when it has none. Run by champion.decide_in_turn."""

    def __call__(
        self, client: MlflowClient, *, name: str, version: int, champion: int | None
    ) -> GateDecision: ...


def on_validation_metrics(
    client: MlflowClient, *, name: str, version: int, champion: int | None
) -> GateDecision:
    """A Decider for registrations with no frozen evaluation set to score on: the
    validation main metric each version recorded at registration, default policy."""
    metric, value = _recorded_score(client, name=name, version=version)
    if metric is None or value is None:
        raise ValueError(f"version {version} of {name!r} recorded no main metric")
    policy = GatePolicy()
    if champion is None:
        return decide(metric=metric, candidate=value, champion=None, policy=policy, eval_set=None)
    champion_metric, champion_value = _recorded_score(client, name=name, version=champion)
    if champion_metric != metric or champion_value is None:
        # A champion set by hand with no Fovea metric (or another metric): nothing fair
        # to compare with.
        return not_comparable(
            metric=metric,
            candidate=value,
            champion_version=champion,
            reason=f"champion v{champion} has no {metric} to compare with",
            policy=policy,
            eval_set=None,
        )
    return decide(
        metric=metric,
        candidate=value,
        champion=champion_value,
        champion_version=champion,
        policy=policy,
        eval_set=None,
    )


@dataclass(frozen=True)
class Candidate:
    """A trained model for the gate to score, and what it was validated on."""

    task: Task
    card: Mapping[str, Any]
    state_dict: Mapping[str, torch.Tensor]
    data: DataBundle  # val: the model's frozen evaluation set if it had one, else the job's
    data_config: DataConfig  # what `data` was built from
    train: TrainConfig  # the loader settings training used
    device: torch.device
    run_id: str  # its MLflow run: an evaluation set frozen from its split is stored there


@dataclass(frozen=True)
class FrozenSetGate:
    """The Decider of a training job: candidate and champion scored on the same frozen
    evaluation set (frozen from the candidate's validation split when the model has none),
    then `decide` with the job's policy."""

    candidate: Candidate
    policy: GatePolicy
    tracking_uri: str
    events: EventSink

    def __call__(
        self, client: MlflowClient, *, name: str, version: int, champion: int | None
    ) -> GateDecision:
        from fovea.tracking import gate_scoring as scoring  # torch: only where models score

        c, metric, policy = self.candidate, self.candidate.task.main_metric, self.policy
        # in turn: a job that started before this one may have frozen the set since
        eval_set = records.load_eval_set(client, name=name) or self._freeze(client, name, version)
        ref = scoring.eval_set_ref(eval_set, data=c.data, data_config=c.data_config)
        score = scoring.score_candidate(c)
        if not set(c.data.val_files) <= set(eval_set.files) or len(c.data.val_files) != ref.used:
            return not_comparable(
                metric=metric,
                candidate=score.value,
                champion_version=champion,
                reason=f"this job did not hold out {eval_set.name} (it started before the set "
                "was frozen, or trained on some of its files)",
                policy=policy,
                eval_set=ref,
            )
        if champion is None:
            return decide(
                metric=metric, candidate=score.value, champion=None, policy=policy, eval_set=ref
            )
        held = scoring.load_version(
            c.task, tracking_uri=self.tracking_uri, name=name, version=champion
        )
        if list(held.card.get("class_names", [])) != list(c.data.class_names):
            return not_comparable(
                metric=metric,
                candidate=score.value,
                champion_version=champion,
                reason=f"the classes changed (champion v{champion}: "
                f"{held.card.get('class_names')}, candidate: {c.data.class_names})",
                policy=policy,
                eval_set=ref,
            )
        self.events("gate", f"scoring champion v{champion} on {ref.name} ({ref.used} images)")
        held_score = scoring.score_held(held, candidate=c, events=self.events)
        return decide(
            metric=metric,
            candidate=score.value,
            champion=held_score.value,
            champion_version=champion,
            policy=policy,
            eval_set=ref,
            candidate_per_image=score.per_image,
            champion_per_image=held_score.per_image,
        )

    def _freeze(self, client: MlflowClient, name: str, version: int) -> records.EvalSet:
        from fovea.tracking.gate_scoring import eval_set_digest

        files = self.candidate.data.val_files
        eval_set = records.freeze_eval_set(
            client,
            name=name,
            version=version,
            run_id=self.candidate.run_id,
            files=files,
            digest=eval_set_digest(self.candidate.data_config, files=files),
        )
        self.events(
            "eval_set_frozen",
            f"froze {eval_set.name}: {len(eval_set.files)} validation images",
            {"name": eval_set.name, "digest": eval_set.digest, "size": len(eval_set.files)},
        )
        return eval_set


# -- by hand -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManualMove:
    """A champion moved by a person, and the decision recorded for it."""

    from_version: int | None  # the champion before (None: there was none)
    to_version: int
    decision: GateDecision


def promote_by_hand(*, tracking_uri: str, name: str, version: int, reason: str) -> ManualMove:
    """Make `version` the champion of `name`, overriding the gate; recorded as a manual
    decision. Raises PromotionError (UnknownModelError: no such model or version)."""
    client = make_client(tracking_uri)
    current = records.current_champion(client, name=name)
    records.version_tags(client, name=name, version=version)  # it exists
    if current == version:
        raise records.PromotionError(f"version {version} of {name!r} is the champion already")
    decision = _by_hand(
        client, name=name, version=version, champion=current, why=f"promoted by hand: {reason}"
    )
    records.apply_decision(client, name=name, version=version, decision=decision, reason=reason)
    return ManualMove(from_version=current, to_version=version, decision=decision)


def roll_back_by_hand(*, tracking_uri: str, name: str, reason: str) -> ManualMove:
    """Give `champion` back to the version the current champion replaced; recorded as a
    manual decision on that version. Raises PromotionError."""
    client = make_client(tracking_uri)
    current = records.current_champion(client, name=name)
    if current is None:
        raise records.PromotionError(f"model {name!r} has no champion to roll back")
    previous = records.replaced_champion(client, name=name, version=current)
    if previous is None:
        raise records.PromotionError(
            f"champion v{current} of {name!r} replaced no earlier champion; nothing to roll back to"
        )
    records.version_tags(client, name=name, version=previous)  # it still exists
    decision = _by_hand(
        client,
        name=name,
        version=previous,
        champion=current,
        why=f"rolled back by hand from v{current}: {reason}",
    )
    records.roll_back_to(
        client, name=name, version=previous, current=current, decision=decision, reason=reason
    )
    return ManualMove(from_version=current, to_version=previous, decision=decision)


def _by_hand(
    client: MlflowClient, *, name: str, version: int, champion: int | None, why: str
) -> GateDecision:
    """A person's decision: `why`, and the validation scores both versions recorded at
    registration where they have the same metric (shown, not checked)."""
    metric, value = _recorded_score(client, name=name, version=version)
    champion_value = delta = None
    reasons = [why]
    if champion is not None:
        champion_metric, champion_value = _recorded_score(client, name=name, version=champion)
        if champion_metric != metric:
            champion_value = None
    if metric is None or value is None:
        reasons.append(f"v{version} recorded no main metric")
    elif champion_value is None:
        reasons.append(f"recorded validation {metric}: v{version} {value:.4f}")
    else:
        delta = value - champion_value
        reasons.append(
            f"recorded validation {metric}: v{version} {value:.4f}, "
            f"champion v{champion} {champion_value:.4f} ({delta:+.4f}; not checked)"
        )
    return GateDecision(
        promote=True,
        metric=metric or "",
        candidate=math.nan if value is None else value,
        champion=champion_value,
        champion_version=champion,
        delta=delta,
        relative_delta=None,
        ci_low=None,
        ci_high=None,
        eval_set=None,
        reasons=reasons,
        manual=True,
    )


def _recorded_score(
    client: MlflowClient, *, name: str, version: int
) -> tuple[str | None, float | None]:
    """(main metric, its validation value) as log_model recorded them on the version."""
    tags = records.version_tags(client, name=name, version=version)
    return tags.get(TAG_MAIN_METRIC), float_tag(tags.get(TAG_MAIN_VALUE))
