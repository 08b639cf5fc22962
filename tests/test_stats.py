from __future__ import annotations

import math

import numpy as np
import pandas as pd

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
