from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from negatives import stats
from negatives.stats import mean_interval, summarize


def test_interval_matches_t_formula_by_hand() -> None:
    values = [1.0, 2.0, 4.0]
    mean, low, high = mean_interval(values)
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert math.isclose(mean, 7 / 3)
    assert math.isclose(high - mean, half, rel_tol=1e-9) and math.isclose(
        mean - low, half, rel_tol=1e-9
    )


def test_interval_covers_the_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(2000):
        _, low, high = mean_interval(rng.normal(3.0, 1.0, size=4).tolist())
        hits += low <= 3.0 <= high
    assert 0.93 < hits / 2000 < 0.97


def test_single_value_has_no_interval_and_nan_is_dropped() -> None:
    mean, low, high = mean_interval([2.0, float("nan")])
    assert mean == 2.0 and math.isnan(low) and math.isnan(high)


def test_summarize_groups() -> None:
    df = pd.DataFrame({"g": ["a", "a", "b", "b"], "v": [1.0, 3.0, 5.0, 5.0]})
    out = summarize(df, ["g"], "v").set_index("g")
    assert out.loc["a", "mean"] == 2.0 and out.loc["b", "n"] == 2
    assert out.loc["b", "low"] == out.loc["b", "high"] == 5.0


def test_binomial_se() -> None:
    assert stats.binomial_se(87.0, 10000) == pytest.approx(100 * math.sqrt(0.87 * 0.13 / 10000))
    assert stats.binomial_se(100.0, 50) == 0.0
    with pytest.raises(ValueError, match="num_test"):
        stats.binomial_se(50.0, 0)


def test_mcnemar_interval_counts_only_discordant_samples() -> None:
    a = np.array([1, 1, 1, 0, 0, 1, 0, 1, 1, 1] * 100, dtype=bool)
    b = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1] * 100, dtype=bool)
    diff, low, high = stats.mcnemar_interval(a, b)
    n01, n10, m = 100, 200, 1000  # b-only right, a-only right
    assert diff == pytest.approx(100 * (n10 - n01) / m)
    se = math.sqrt(n10 + n01 - (n10 - n01) ** 2 / m) / m
    assert high - low == pytest.approx(2 * 1.959964 * 100 * se, rel=1e-4)
    same = stats.mcnemar_interval(a, a)
    assert same == (0.0, 0.0, 0.0)


def test_paired_bootstrap_matches_the_analytic_spread_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    m = 4000
    a = rng.random((3, m)) < 0.85
    b = a.copy()
    flip = rng.random((3, m)) < 0.05  # discordant images
    b[flip] = ~b[flip]
    mean, low, high = stats.paired_bootstrap(a, b, reps=1000, seed=1)
    assert mean == pytest.approx(100 * (a.mean() - b.mean()))
    # the analytic s.e. of a mean (over images) of the per-image mean differences
    d = (a.astype(float) - b.astype(float)).mean(axis=0)
    se = 100 * d.std(ddof=1) / math.sqrt(m)
    assert (high - low) / (2 * 1.96) == pytest.approx(se, rel=0.15)
    assert stats.paired_bootstrap(a, b, reps=1000, seed=1) == (mean, low, high)
    assert stats.paired_bootstrap(a, a) == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    with pytest.raises(ValueError, match="shape"):
        stats.paired_bootstrap(a, b[:2])


def test_contrast_bootstrap_of_a_slope_and_its_checks() -> None:
    rng = np.random.default_rng(1)
    x = np.log2(np.array([16.0, 64.0, 256.0]))
    w = (x - x.mean()) / ((x - x.mean()) ** 2).sum()
    p = 0.7 + 0.01 * x  # accuracy rising by 1 point per doubling
    correct = rng.random((3, 20000)) < p[:, None]
    slope, low, high = stats.contrast_bootstrap(correct, w, reps=500)
    assert slope == pytest.approx(100 * np.polyfit(x, correct.mean(axis=1), 1)[0])
    assert low < 1.0 < high
    with pytest.raises(ValueError, match="weights"):
        stats.contrast_bootstrap(correct, w[:2])
