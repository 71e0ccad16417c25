"""The promotion gate's pure decision logic."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fovea.tracking.gate import EvalSetRef, GatePolicy, decide, paired_bootstrap_ci

EVAL = EvalSetRef(name="m/eval@v1", digest="sha256:ab", size=200, used=200)


def gate(candidate: float, champion: float | None, **policy):  # type: ignore[no-untyped-def]
    return decide(
        metric="top1",
        candidate=candidate,
        champion=champion,
        policy=GatePolicy(**policy),
        eval_set=EVAL,
        champion_version=None if champion is None else 1,
    )


def correct(n: int, right: int, seed: int) -> np.ndarray:
    """[n] 0/1 per-image scores with exactly `right` ones, shuffled."""
    scores = np.zeros(n)
    scores[:right] = 1
    return np.random.default_rng(seed).permutation(scores)


def test_first_candidate_becomes_champion() -> None:
    d = gate(0.5, None)
    assert d.promote and d.delta is None and "no champion yet" in d.reasons[0]


@pytest.mark.parametrize(
    "candidate,champion,policy,promote,words",
    [
        (0.80, 0.80, {}, False, "FAILED candidate 0.8000 does not beat champion 0.8000 (+0.0000)"),
        (0.79, 0.80, {}, False, "FAILED candidate 0.7900 does not beat"),
        (0.81, 0.80, {}, True, "candidate 0.8100 beats champion 0.8000 (+0.0100)"),
        (0.81, 0.80, {"min_delta": 0.02}, False, "FAILED delta +0.0100 >= min_delta 0.02"),
        (0.83, 0.80, {"min_delta": 0.02}, True, "delta +0.0300 >= min_delta 0.02"),
        (0.82, 0.80, {"min_relative_delta": 0.05}, False, "FAILED relative delta +2.50%"),
        (0.85, 0.80, {"min_relative_delta": 0.05}, True, "relative delta +6.25% >= 5.00%"),
        (0.60, 0.50, {"min_value": 0.7}, False, "FAILED top1 0.6000 >= 0.7"),
        (float("nan"), 0.5, {}, False, "FAILED candidate top1 = nan is not a number"),
        (0.10, 0.0, {"min_relative_delta": 0.5}, True, "relative delta +inf%"),
    ],
)
def test_margins(candidate, champion, policy, promote, words) -> None:
    d = gate(candidate, champion, **policy)
    assert d.promote is promote, d.reasons
    assert any(words in r for r in d.reasons), d.reasons
    json.dumps(d.as_dict(), allow_nan=False)  # recordable as an MLflow tag / job event


def test_bootstrap_interval_matches_the_normal_approximation() -> None:
    n = 400
    cand, champ = correct(n, 320, seed=1), correct(n, 280, seed=2)
    low, high = paired_bootstrap_ci(cand, champ, samples=4000, level=0.95, seed=0)
    diff = cand - champ
    se = diff.std(ddof=1) / math.sqrt(n)
    assert (low + high) / 2 == pytest.approx(diff.mean(), abs=0.01)
    assert high - low == pytest.approx(2 * 1.96 * se, rel=0.1)
    assert (low, high) == paired_bootstrap_ci(cand, champ, samples=4000, level=0.95, seed=0)


def test_ci_requirement_separates_a_real_win_from_noise() -> None:
    policy = {"require_ci": True, "bootstrap_samples": 2000}
    champ = correct(200, 120, seed=3)
    clear = correct(200, 180, seed=4)  # 0.90 vs 0.60
    lucky = champ.copy()
    lucky[np.flatnonzero(champ == 0)[:2]] = 1  # two more right: 0.61 vs 0.60
    win = decide(
        metric="top1",
        candidate=clear.mean(),
        champion=champ.mean(),
        policy=GatePolicy(**policy),
        eval_set=EVAL,
        candidate_per_image=clear,
        champion_per_image=champ,
    )
    assert win.promote and win.ci_low is not None and win.ci_low > 0.2, win.reasons
    noise = decide(
        metric="top1",
        candidate=lucky.mean(),
        champion=champ.mean(),
        policy=GatePolicy(**policy),
        eval_set=EVAL,
        candidate_per_image=lucky,
        champion_per_image=champ,
    )
    assert not noise.promote and noise.delta == pytest.approx(0.01)
    assert noise.ci_low is not None and noise.ci_low <= 0 < noise.ci_high
    assert any(r.startswith("FAILED 95% paired bootstrap CI") for r in noise.reasons)
    informative = decide(
        metric="top1",
        candidate=lucky.mean(),
        champion=champ.mean(),
        policy=GatePolicy(),
        eval_set=EVAL,
        candidate_per_image=lucky,
        champion_per_image=champ,
    )
    assert informative.promote and "(not required)" in informative.reasons[-1]


def test_ci_required_without_per_image_scores_keeps_the_champion() -> None:
    d = gate(0.9, 0.5, require_ci=True)
    assert not d.promote and "no per-image scores" in d.reasons[-1]


@pytest.mark.parametrize(
    "field,value",
    [("min_delta", -0.1), ("ci_level", 1.0), ("bootstrap_samples", 10), ("min_relative_delta", -1)],
)
def test_policy_ranges(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"promotion.{field}"):
        GatePolicy(**{field: value})
