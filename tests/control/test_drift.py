"""Drift statistics on controlled samples: false alarms stay rare, real shifts are named."""

from __future__ import annotations

import numpy as np
import pytest

from fovea.platform.monitoring.statistics import (
    DriftSettings,
    Samples,
    alarm,
    compare,
    histogram,
    psi,
)
from fovea.tasks.reference import STATISTICS

NAMES = ["a", "b", "c", "d"]


def samples(n: int, *, seed: int, brightness: float = 0.5, shift: float = 0.0,
            classes: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)) -> Samples:  # fmt: skip
    rng = np.random.default_rng(seed)
    stats = {name: rng.normal(1.0, 0.2, n) for name in STATISTICS}
    stats["brightness"] = rng.normal(brightness, 0.1, n)
    embeddings = rng.normal(0.0, 1.0, (n, 8)) + shift
    probabilities = rng.dirichlet(np.ones(len(NAMES)) * 2, size=n)
    class_id = rng.choice(len(NAMES), size=n, p=classes)
    summary = [
        {"class_id": int(k), "confidence": float(p.max()), "entropy": float(-(p * np.log(p)).sum())}
        for k, p in zip(class_id, probabilities, strict=True)
    ]
    return Samples(stats, embeddings.astype(np.float32), summary)


REFERENCE = samples(1000, seed=1000)


def test_windows_from_the_reference_distribution_rarely_alarm() -> None:
    verdicts = [
        compare(REFERENCE, samples(200, seed=s), task="classification", class_names=NAMES,
                seed=s).verdict
        for s in range(40)
    ]  # fmt: skip
    assert verdicts.count("drift") <= 2  # Bonferroni keeps the rate below alpha = 0.05
    assert "insufficient" not in verdicts


def test_a_darker_window_drifts_and_names_brightness() -> None:
    result = compare(
        REFERENCE, samples(200, seed=7, brightness=0.3), task="classification", class_names=NAMES
    )
    assert result.verdict == "drift"
    assert any("statistics/brightness" in reason for reason in result.reasons), result.reasons
    test = next(t for t in result.tests if t.name == "statistics/brightness")
    assert test.significant and test.p_value < 1e-6 and test.detail["median_shift"] < -0.15
    assert result.family_p["statistics"] < 0.05 / 4
    hist = result.histograms["brightness"]
    assert len(hist["edges"]) == 21 and sum(hist["live"]) == pytest.approx(1.0)


def test_a_shifted_embedding_is_caught_by_mmd() -> None:
    result = compare(
        REFERENCE, samples(200, seed=8, shift=0.4), task="classification", class_names=NAMES
    )
    mmd = next(t for t in result.tests if t.method == "mmd")
    assert mmd.significant and mmd.p_value < 0.01 and mmd.statistic > mmd.detail["null_95"]
    assert result.verdict == "drift"
    assert len(result.mmd_null) == DriftSettings().permutations


def test_changed_class_frequencies_move_chi_square_and_psi() -> None:
    live = samples(400, seed=9, classes=(0.1, 0.2, 0.3, 0.4))
    result = compare(REFERENCE, live, task="classification", class_names=NAMES)
    chi2 = next(t for t in result.tests if t.method == "chi2")
    index = next(t for t in result.tests if t.method == "psi")
    assert chi2.significant and chi2.effect_size > 0.2  # Cramér's V
    assert index.statistic > 0.25 and index.significant and index.detail["trusted"]
    assert result.verdict == "drift"


def test_small_windows_get_no_verdict() -> None:
    result = compare(REFERENCE, samples(99, seed=3, brightness=0.1), task="classification",
                     class_names=NAMES)  # fmt: skip
    assert result.verdict == "insufficient" and "no verdict below 100" in result.reasons[0]
    assert result.tests == []


def test_alarm_needs_k_of_the_last_m_windows() -> None:
    two_of_three = DriftSettings(alarm_k=2, alarm_m=3)
    assert alarm(["drift", "ok", "ok"], two_of_three) == "warning"
    assert alarm(["drift", "ok", "drift"], two_of_three) == "drift"
    assert alarm(["drift", "insufficient", "drift"], two_of_three) == "drift"
    assert alarm(["ok", "drift", "drift"], two_of_three) == "drift"  # still 2 of the last 3
    assert alarm(["ok", "drift", "ok", "drift"], two_of_three) == "ok"
    assert alarm(["insufficient", "drift"], two_of_three) == "insufficient"
    assert alarm(["drift"], DriftSettings()) == "drift"


def test_psi_and_histogram_values() -> None:
    assert psi(np.array([50.0, 50.0]), np.array([50.0, 50.0])) == pytest.approx(0.0)
    # (0.8 - 0.5) ln(0.8 / 0.5) + (0.2 - 0.5) ln(0.2 / 0.5), with 0.5 added to each count
    expected = (80.5 / 101 - 50.5 / 101) * np.log(80.5 / 50.5) + (20.5 / 101 - 50.5 / 101) * np.log(
        20.5 / 50.5
    )
    assert psi(np.array([50.0, 50.0]), np.array([80.0, 20.0])) == pytest.approx(expected)
    hist = histogram(np.zeros(10), np.ones(10))
    assert hist["reference"][0] == 1.0 and hist["live"][-1] == 1.0


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_detection_and_segmentation_summaries_are_tested(task: str) -> None:
    rng = np.random.default_rng(0)

    def side(n: int, boxes: float, fraction: float) -> Samples:
        base = samples(n, seed=n)
        if task == "detection":
            summary = [
                {"n_boxes": int(k), "mean_score": float(rng.uniform(0.3, 0.9)),
                 "class_counts": {"a": int(k)}}
                for k in rng.poisson(boxes, n)
            ]  # fmt: skip
        else:
            summary = [
                {"class_fractions": {"a": f, "b": 1 - f}}
                for f in np.clip(rng.normal(fraction, 0.05, n), 0, 1)
            ]
        return Samples(base.stats, base.embeddings, summary)

    same = compare(side(600, 3, 0.5), side(200, 3, 0.5), task=task, class_names=["a", "b"])
    moved = compare(side(600, 3, 0.5), side(201, 8, 0.8), task=task, class_names=["a", "b"])
    assert same.family_p["predictions"] > 0.05 / 4
    assert moved.family_p["predictions"] < 1e-4
