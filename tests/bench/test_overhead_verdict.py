"""bench/overhead.py's verdict rule: the sign test's interval for the median ratio. A wrong
interval would pass or fail the platform on noise, so its coverage is checked by drawing."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import overhead  # bench/ is scripts, not a package


@pytest.mark.parametrize(
    ("n", "confidence", "rank", "level"),
    [
        (5, 0.90, 1, 1 - 2 / 32),  # [min, max] at 93.8%
        (8, 0.90, 2, 1 - 2 * (1 + 8) / 256),  # [2nd lowest, 2nd highest] at 93.0%
        (6, 0.95, 1, 1 - 2 / 64),
        (20, 0.90, 6, 1 - 2 * sum(math.comb(20, i) for i in range(6)) / 2**20),
    ],
)
def test_the_interval_is_the_kth_lowest_to_the_kth_highest(
    n: int, confidence: float, rank: int, level: float
) -> None:
    values = random.Random(n).sample(range(1000), n)
    ordered = sorted(values)
    low, high, got = overhead.median_interval([float(v) for v in values], confidence)
    assert (low, high) == (ordered[rank - 1], ordered[n - rank])
    assert got == pytest.approx(level)
    assert got >= confidence


def test_too_few_pairs_give_no_interval_and_the_parser_asks_for_enough() -> None:
    assert overhead.median_interval([1.0, 2.0, 3.0, 4.0], 0.90) is None  # 2/16 > 5%
    assert overhead.fewest_pairs(0.90) == 5
    assert overhead.fewest_pairs(0.95) == 6


def test_the_interval_holds_the_median_as_often_as_it_says_whatever_the_noise() -> None:
    """8 ratios from a skewed distribution (a host that only ever slows one side down):
    the interval holds the true median in ~93.0% of 4000 draws, as for any distribution."""
    rng = random.Random(0)
    true_median = 0.97 + math.log(2) * 0.02
    held, draws = 0, 4000
    for _ in range(draws):
        ratios = [0.97 + rng.expovariate(1 / 0.02) for _ in range(8)]
        low, high, _ = overhead.median_interval(ratios, 0.90)
        held += low <= true_median <= high
    assert held / draws == pytest.approx(1 - 2 * 9 / 256, abs=0.015)
