"""Drift statistics: two-sample tests of a window of live images against a reference.

Following "Failing Loudly" (Rabanser, Günnemann, Lipton; NeurIPS 2019): test the model's
own representations and outputs, not raw pixels. Four families of tests, each reporting
its statistic, an effect size and a p-value:
- statistics: per image statistic, Kolmogorov-Smirnov, Bonferroni over the statistics;
- embedding_mmd: MMD^2 with an RBF kernel (median-heuristic bandwidth) on the projected
  embeddings, p-value from a permutation test;
- embedding_components: KS per principal component, Bonferroni over the components;
- predictions: the task's prediction summary: chi-square and PSI on class frequencies
  (PSI >= 0.1 warning, >= 0.25 alert), KS on confidence and entropy (classification), on
  box count and mean score (detection), on each class's pixel fraction (segmentation).
A window drifts when a family's corrected p-value is below alpha / number of families
(so the chance of a false alarm per window stays <= alpha), or when PSI is at its alert
level with enough images per class to trust it. It warns when a family is below alpha
before that last correction, or PSI is at its warning level.

Guards against false alarms: no verdict below `min_window` images ("insufficient", said
so); windows above `max_window` and large references are subsampled (seeded); the alarm
(`verdict` "drift") needs `alarm_k` drifted windows among the last `alarm_m`.

Torch-free (numpy and scipy): reports run in the API and scheduler processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FAMILIES = ("statistics", "embedding_mmd", "embedding_components", "predictions")
HISTOGRAM_BINS = 20
MIN_PER_CLASS_FOR_PSI = 5  # live images per class before PSI may raise an alarm


@dataclass(frozen=True)
class DriftSettings:
    alpha: float = 0.05
    min_window: int = 100
    max_window: int = 1000  # live images tested at most (a seeded subsample above it)
    max_reference: int = 1000  # reference images tested at most
    permutations: int = 200  # MMD permutation test
    psi_warning: float = 0.1
    psi_alert: float = 0.25
    alarm_k: int = 1  # an alarm needs k drifted windows ...
    alarm_m: int = 1  # ... among the last m

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 1 <= self.alarm_k <= self.alarm_m:
            raise ValueError("need 1 <= alarm_k <= alarm_m")
        if self.min_window < 2 or self.max_window < self.min_window:
            raise ValueError("need 2 <= min_window <= max_window")


@dataclass
class TestResult:
    name: str  # "statistics/brightness", "embedding_mmd", "predictions/class_frequencies"
    family: str
    method: str  # "ks" | "mmd" | "chi2" | "psi"
    statistic: float
    effect_size: float
    p_value: float | None  # PSI has none
    significant: bool  # p below the family-corrected alpha (or PSI at its alert level)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Samples:
    """One side of a comparison: statistics, projected embeddings, prediction summaries."""

    stats: Mapping[str, np.ndarray]  # name -> [N]
    embeddings: np.ndarray  # [N, k]
    summary: Sequence[Mapping[str, Any]]  # per image

    def __len__(self) -> int:
        return len(self.embeddings)

    def take(self, index: np.ndarray) -> Samples:
        return Samples(
            {k: np.asarray(v)[index] for k, v in self.stats.items()},
            self.embeddings[index],
            [self.summary[i] for i in index],
        )


@dataclass
class WindowResult:
    verdict: str  # "insufficient" | "ok" | "warning" | "drift" (this window alone)
    reasons: list[str]
    tests: list[TestResult]
    family_p: dict[str, float]  # corrected within the family, before the last correction
    n_live: int
    n_reference: int
    histograms: dict[str, dict[str, list[float]]]  # statistic -> edges, reference, live
    mmd_null: list[float]  # the permutation distribution (for the plot)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def compare(
    reference: Samples,
    live: Samples,
    *,
    task: str,
    class_names: Sequence[str],
    settings: DriftSettings = DriftSettings(),
    seed: int = 0,
) -> WindowResult:
    """Every test of one window; the window's own verdict (not yet the k-of-m alarm)."""
    if len(live) < settings.min_window:
        return WindowResult(
            "insufficient",
            [f"{len(live)} live images; no verdict below {settings.min_window}"],
            [],
            {},
            len(live),
            len(reference),
            {},
            [],
        )
    rng = np.random.default_rng(seed)
    live = _subsample(live, settings.max_window, rng)
    reference = _subsample(reference, settings.max_reference, rng)
    tests: list[TestResult] = []
    tests += _statistic_tests(reference, live, settings)
    mmd, null = mmd_test(reference.embeddings, live.embeddings, settings=settings, rng=rng)
    tests.append(mmd)
    tests += _component_tests(reference, live, settings)
    tests += PREDICTION_TESTS[task](reference, live, list(class_names), settings)
    family_p = {family: _family_p(tests, family) for family in FAMILIES}
    return WindowResult(
        *_window_verdict(tests, family_p, settings),
        tests,
        family_p,
        len(live),
        len(reference),
        {name: histogram(reference.stats[name], live.stats[name]) for name in live.stats},
        null.tolist(),
    )


def alarm(window_verdicts: Sequence[str], settings: DriftSettings) -> str:
    """The report's verdict from its window's and the previous windows' (newest first)."""
    current = window_verdicts[0]
    if current == "insufficient":
        return current
    recent = [v for v in window_verdicts if v != "insufficient"][: settings.alarm_m]
    if sum(v == "drift" for v in recent) >= settings.alarm_k:
        return "drift"
    return "warning" if current in ("drift", "warning") else "ok"


# ---- the tests -----------------------------------------------------------------------------


def ks_test(
    name: str, family: str, reference: np.ndarray, live: np.ndarray, *, corrected_alpha: float
) -> TestResult:
    from scipy import stats as scipy_stats  # slow to import; the API loads it on first use

    reference = np.asarray(reference, dtype=np.float64)
    live = np.asarray(live, dtype=np.float64)
    result = scipy_stats.ks_2samp(reference, live)
    shift = float(np.median(live) - np.median(reference))
    spread = float(np.std(reference)) or 1.0
    return TestResult(
        name,
        family,
        "ks",
        float(result.statistic),
        float(result.statistic),
        float(result.pvalue),
        float(result.pvalue) < corrected_alpha,
        {
            "median_shift": shift,
            "median_shift_in_sd": shift / spread,
            "reference_median": float(np.median(reference)),
            "live_median": float(np.median(live)),
        },
    )


def mmd_test(
    reference: np.ndarray, live: np.ndarray, *, settings: DriftSettings, rng: np.random.Generator
) -> tuple[TestResult, np.ndarray]:
    """MMD^2 (biased, RBF kernel exp(-d^2 / median d^2)) and its permutation p-value."""
    pooled = np.vstack([reference, live]).astype(np.float64)
    n, total = len(reference), len(pooled)
    squares = (pooled**2).sum(axis=1)
    distances = np.maximum(squares[:, None] + squares[None, :] - 2 * pooled @ pooled.T, 0.0)
    bandwidth = float(np.median(distances[np.triu_indices(total, k=1)])) or 1.0
    kernel = np.exp(-distances / bandwidth)
    signs = np.concatenate([np.full(n, 1.0 / n), np.full(total - n, -1.0 / (total - n))])
    observed = float(signs @ kernel @ signs)
    shuffled = np.stack([rng.permutation(signs) for _ in range(settings.permutations)], axis=1)
    null = np.einsum("ip,ip->p", shuffled, kernel @ shuffled)  # [P]
    p_value = float((1 + np.sum(null >= observed)) / (1 + settings.permutations))
    corrected = settings.alpha  # one test in its family
    return (
        TestResult(
            "embedding_mmd",
            "embedding_mmd",
            "mmd",
            observed,
            float(np.sqrt(max(observed, 0.0))),
            p_value,
            p_value < corrected,
            {
                "bandwidth": bandwidth,
                "permutations": settings.permutations,
                "null_mean": float(null.mean()),
                "null_95": float(np.quantile(null, 0.95)),
            },
        ),
        null,
    )


def psi(reference_counts: np.ndarray, live_counts: np.ndarray) -> float:
    """Population stability index of two count vectors (0.5 added to every cell)."""
    ref = (reference_counts + 0.5) / (reference_counts + 0.5).sum()
    cur = (live_counts + 0.5) / (live_counts + 0.5).sum()
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def frequency_tests(
    name: str,
    reference_counts: np.ndarray,
    live_counts: np.ndarray,
    *,
    live_images: int,
    settings: DriftSettings,
    corrected_alpha: float,
) -> list[TestResult]:
    """Chi-square (with Cramér's V) and PSI on two count vectors over the same classes."""
    from scipy import stats as scipy_stats

    keep = (reference_counts + live_counts) > 0
    table = np.stack([reference_counts[keep], live_counts[keep]])
    results = []
    if keep.sum() >= 2 and table.sum(axis=1).min() > 0:
        chi2, p_value, _, _ = scipy_stats.chi2_contingency(table)
        cramers_v = float(np.sqrt(chi2 / (table.sum() * (min(table.shape) - 1))))
        results.append(
            TestResult(
                f"{name}",
                "predictions",
                "chi2",
                float(chi2),
                cramers_v,
                float(p_value),
                float(p_value) < corrected_alpha,
            )
        )
    value = psi(reference_counts.astype(np.float64), live_counts.astype(np.float64))
    trusted = live_images >= MIN_PER_CLASS_FOR_PSI * max(int(keep.sum()), 1)
    results.append(
        TestResult(
            f"{name}_psi",
            "predictions",
            "psi",
            value,
            value,
            None,
            trusted and value >= settings.psi_alert,
            {"warning": settings.psi_warning, "alert": settings.psi_alert, "trusted": trusted},
        )
    )
    return results


def histogram(reference: np.ndarray, live: np.ndarray) -> dict[str, list[float]]:
    """Shared bins over both samples; densities (each side sums to 1)."""
    both = np.concatenate([reference, live]).astype(np.float64)
    low, high = float(both.min()), float(both.max())
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)
    ref_counts, _ = np.histogram(reference, bins=edges)
    live_counts, _ = np.histogram(live, bins=edges)
    return {
        "edges": edges.tolist(),
        "reference": (ref_counts / max(ref_counts.sum(), 1)).tolist(),
        "live": (live_counts / max(live_counts.sum(), 1)).tolist(),
    }


def _statistic_tests(
    reference: Samples, live: Samples, settings: DriftSettings
) -> list[TestResult]:
    names = [name for name in live.stats if name in reference.stats]
    alpha = settings.alpha / max(len(names), 1)
    return [
        ks_test(
            f"statistics/{name}",
            "statistics",
            reference.stats[name],
            live.stats[name],
            corrected_alpha=alpha,
        )
        for name in names
    ]


def _component_tests(
    reference: Samples, live: Samples, settings: DriftSettings
) -> list[TestResult]:
    components = reference.embeddings.shape[1]
    alpha = settings.alpha / max(components, 1)
    return [
        ks_test(
            f"embedding_components/pc{i + 1}",
            "embedding_components",
            reference.embeddings[:, i],
            live.embeddings[:, i],
            corrected_alpha=alpha,
        )
        for i in range(components)
    ]


def _column(summary: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    return np.array([float(row.get(key) or 0.0) for row in summary])


def _frequencies_and_columns(
    reference: Samples,
    live: Samples,
    *,
    name: str,
    counts: tuple[np.ndarray, np.ndarray],
    counted: int,
    columns: tuple[str, ...],
    settings: DriftSettings,
) -> list[TestResult]:
    """Chi-square and PSI on per-class counts, KS on summary columns; Bonferroni over the
    frequency test and the columns."""
    alpha = settings.alpha / (1 + len(columns))
    frequencies = frequency_tests(
        name, *counts, live_images=counted, settings=settings, corrected_alpha=alpha
    )
    return frequencies + [
        ks_test(
            f"predictions/{key}",
            "predictions",
            _column(reference.summary, key),
            _column(live.summary, key),
            corrected_alpha=alpha,
        )
        for key in columns
    ]


def _classification_tests(
    reference: Samples, live: Samples, names: list[str], settings: DriftSettings
) -> list[TestResult]:
    ref, cur = (
        np.bincount(_column(side.summary, "class_id").astype(int), minlength=len(names))
        for side in (reference, live)
    )
    return _frequencies_and_columns(
        reference, live, name="predictions/class_frequencies", counts=(ref, cur),
        counted=len(live), columns=("confidence", "entropy"), settings=settings,
    )  # fmt: skip


def _detection_tests(
    reference: Samples, live: Samples, names: list[str], settings: DriftSettings
) -> list[TestResult]:
    ref, cur = (
        np.array([sum(int((r.get("class_counts") or {}).get(n, 0)) for r in side.summary)
                  for n in names])
        for side in (reference, live)
    )  # fmt: skip
    return _frequencies_and_columns(
        reference, live, name="predictions/box_classes", counts=(ref, cur),
        counted=int(cur.sum()), columns=("n_boxes", "mean_score"), settings=settings,
    )  # fmt: skip


def _segmentation_tests(
    reference: Samples, live: Samples, names: list[str], settings: DriftSettings
) -> list[TestResult]:
    alpha = settings.alpha / max(len(names), 1)

    def fractions(side: Samples, name: str) -> np.ndarray:
        return np.array(
            [float((row.get("class_fractions") or {}).get(name, 0.0)) for row in side.summary]
        )

    return [
        ks_test(
            f"predictions/fraction/{name}",
            "predictions",
            fractions(reference, name),
            fractions(live, name),
            corrected_alpha=alpha,
        )
        for name in names
    ]


PREDICTION_TESTS = {
    "classification": _classification_tests,
    "detection": _detection_tests,
    "segmentation": _segmentation_tests,
}


def _window_verdict(
    tests: list[TestResult], family_p: Mapping[str, float], settings: DriftSettings
) -> tuple[str, list[str]]:
    strict = settings.alpha / len(FAMILIES)  # one false alarm in 1/alpha windows at most
    drifted = [f for f, p in family_p.items() if p < strict]
    alerts = [t for t in tests if t.method == "psi" and t.significant]
    warned = [f for f, p in family_p.items() if p < settings.alpha]
    warn_psi = [t for t in tests if t.method == "psi" and t.statistic >= settings.psi_warning]
    reasons = [_reason(tests, family) for family in (drifted or warned)]
    reasons += [f"{t.name} = {t.statistic:.3f} (alert {settings.psi_alert})" for t in alerts]
    reasons += [
        f"{t.name} = {t.statistic:.3f} (warning {settings.psi_warning})"
        for t in warn_psi
        if t not in alerts
    ]
    if drifted or alerts:
        return "drift", reasons
    if warned or warn_psi:
        return "warning", reasons
    return "ok", ["no test below its threshold"]


def _family_p(tests: list[TestResult], family: str) -> float:
    """The family's smallest p-value, Bonferroni-corrected for its number of tests."""
    p_values = [t.p_value for t in tests if t.family == family and t.p_value is not None]
    return min(1.0, min(p_values) * len(p_values)) if p_values else 1.0


def _reason(tests: list[TestResult], family: str) -> str:
    moved = sorted(
        (t for t in tests if t.family == family and t.p_value is not None),
        key=lambda t: t.p_value,  # type: ignore[arg-type, return-value]
    )[:3]
    shown = ", ".join(f"{t.name} ({t.method} {t.statistic:.3g}, p={t.p_value:.2g})" for t in moved)
    return f"{family}: {shown}"


def _subsample(samples: Samples, limit: int, rng: np.random.Generator) -> Samples:
    if len(samples) <= limit:
        return samples
    return samples.take(np.sort(rng.choice(len(samples), size=limit, replace=False)))
