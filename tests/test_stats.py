from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from negatives import probes, stats
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


def test_mean_interval_with_infinities() -> None:
    inf = math.inf
    assert stats.mean_interval_with_infinities([inf, inf, inf]) == (inf, inf, inf)
    finite = [1.0, 2.0, 4.0]
    assert stats.mean_interval_with_infinities([*finite, inf]) == (
        inf,
        mean_interval(finite)[1],
        inf,
    )
    assert stats.mean_interval_with_infinities([3.0, inf]) == (inf, 3.0, inf)
    assert stats.mean_interval_with_infinities(finite) == mean_interval(finite)


# -- over the seeds of a scan over K -----------------------------------------------------------


def scan_table(slope: float = 1.5, noise: float = 0.0, seeds: int = 3) -> pd.DataFrame:
    """One row per (seed, K): ``linear_accuracy`` = 60 + slope log2(K+1) (+ noise), ``bound``
    = K+1, ``flat`` = 1, all in one setting of :data:`negatives.stats.SCAN_KEYS`."""
    rng = np.random.default_rng(0)
    ks = np.array([3, 15, 63, 255])
    return pd.DataFrame(
        [
            {
                "data": "image",
                "num_classes": 10,
                "mode": "batch",
                "K": k,
                "seed": s,
                "linear_accuracy": 60 + slope * math.log2(k + 1) + noise * rng.standard_normal(),
                "bound": k + 1.0,
                "flat": 1.0,
            }
            for s in range(seeds)
            for k in ks
        ]
    )


def test_seed_slopes_and_trend_recover_a_known_slope() -> None:
    rows = scan_table(slope=1.5)
    assert stats.seed_slopes(rows, "linear_accuracy").tolist() == pytest.approx([1.5] * 3)
    mean, low, high, n = stats.trend(rows, "linear_accuracy")
    assert (mean, n) == (pytest.approx(1.5), 3) and low == pytest.approx(high)
    # non-finite values are left out; a seed with fewer than two finite K has no slope
    rows.loc[(rows.seed == 0) & (rows.K > 3), "linear_accuracy"] = math.inf
    assert stats.seed_slopes(rows, "linear_accuracy").index.tolist() == [1, 2]
    # other names for the K and seed columns
    renamed = rows.rename(columns={"K": "negatives", "seed": "run"})
    assert stats.trend(renamed, "linear_accuracy", x="negatives", seed="run")[3] == 2


def test_summaries_count_infinite_values() -> None:
    rows = scan_table(slope=1.0, noise=0.5)
    top = rows["K"] == 255
    rows.loc[top, "bound"] = math.inf
    rows.loc[top & (rows.seed == 0), "linear_accuracy"] = math.inf
    s = stats.summarize_over_seeds(rows, ["bound", "linear_accuracy", "flat"])
    assert list(s.columns[:6]) == [*stats.SCAN_KEYS, "K+1", "term"]
    s = s.set_index(["K", "term"])
    assert s.loc[(255, "bound"), "n_inf"] == 3 and math.isnan(s.loc[(255, "bound"), "mean"])
    acc = s.loc[(255, "linear_accuracy")]
    assert acc["n_inf"] == 1 and acc["n_finite"] == 2
    finite = rows.loc[top & (rows.seed > 0), "linear_accuracy"]
    assert acc["mean"] == pytest.approx(finite.mean())
    assert s.loc[(3, "flat"), "low"] == pytest.approx(1.0)  # no spread, zero-width interval
    wide = stats.wide_summary(rows, ["bound", "flat"]).set_index("K+1")
    assert wide.loc[256, "bound"] == math.inf
    assert wide.loc[4, "bound"] == pytest.approx(4.0)
    per_mode = stats.wide_summary(rows, ["flat"], by=["mode"])
    assert list(per_mode.columns) == ["mode", "flat"] and len(per_mode) == 1
    with pytest.raises(ValueError, match="values"):
        stats.summarize_over_seeds(rows, ["missing"])


def test_trend_test_interval_resamples_the_test_images() -> None:
    rng = np.random.default_rng(0)
    rows = scan_table()
    m = 2000
    p = 0.6 + 0.02 * np.log2(rows["K"].to_numpy() + 1.0)  # (R,): 2 points per doubling
    correct = torch.from_numpy(rng.random((len(rows), m)) < p[:, None])  # (R, M)
    rows = rows.assign(linear_correct=[probes.pack_correct(c) for c in correct], num_test=m)
    low, high = stats.trend_test_interval(rows, "linear_accuracy")
    assert low < 2.0 < high and high - low < 1.5
    assert stats.trend_test_interval(rows, "centroid_accuracy") is None  # no per-image results
    assert stats.trend_test_interval(rows.iloc[1:], "linear_accuracy") is None  # a seed lacks a K
