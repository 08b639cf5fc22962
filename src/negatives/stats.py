"""Means and 95% intervals over seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _stats


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and Student-t interval ``(mean, low, high)`` of independent runs (e.g. seeds).

    With a single value the interval is ``(nan, nan)``: one seed says nothing about spread.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size == 1:
        return mean, math.nan, math.nan
    half = float(_stats.t.ppf(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
    return mean, mean - half, mean + half


def summarize(df, by: Sequence[str], value: str, confidence: float = 0.95):
    """Group ``df`` by ``by`` and give ``n``, ``mean``, ``low``, ``high`` of ``value`` per group."""
    import pandas as pd

    rows = []
    for key, group in df.groupby(list(by), sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, low, high = mean_interval(group[value].tolist(), confidence)
        rows.append(
            {
                **dict(zip(by, key, strict=True)),
                "n": len(group),
                "mean": mean,
                "low": low,
                "high": high,
            }
        )
    return pd.DataFrame(rows)
