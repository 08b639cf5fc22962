"""Means and 95% intervals over seeds, and the uncertainty of an evaluation on a finite test set."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats as _stats

if TYPE_CHECKING:
    import pandas as pd


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


def mean_interval_with_infinities(
    values: Sequence[float], confidence: float = 0.95
) -> tuple[float, float, float]:
    """:func:`mean_interval` of values over seeds of which some may be +inf (a vacuous upper
    bound): all infinite gives ``(inf, inf, inf)``; some give ``(inf, low, inf)`` with ``low``
    the lower end of the finite ones' interval (their value, for a single finite one)."""
    x = np.asarray(values, dtype=float)
    finite = x[np.isfinite(x)]
    if np.isposinf(x).all():
        return math.inf, math.inf, math.inf
    if np.isposinf(x).any():
        low = mean_interval(finite.tolist(), confidence)[1] if finite.size > 1 else finite.min()
        return math.inf, float(low), math.inf
    return mean_interval(x.tolist(), confidence)


# -- over the seeds of a scan over K -----------------------------------------------------------
# A scan table has one row per trained run: its seed (``seed``), its number of negatives (``K``),
# the keys of its setting (``SCAN_KEYS``) and the measured values. A trend is the least-squares
# slope of a value against log2(K+1), fitted per seed: "change per doubling of K+1".

SCAN_KEYS: tuple[str, ...] = ("data", "num_classes", "mode", "K")


def summarize_over_seeds(
    rows: pd.DataFrame,
    values: Sequence[str],
    *,
    by: Sequence[str] = SCAN_KEYS,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Mean and interval over seeds per group ``by`` of a scan table, one row per value.

    Columns: the keys ``by`` (a key ``K`` also gives ``K+1``), term, n (runs), n_finite, n_inf
    (runs where the value is +inf: an upper bound with υ = 0 or τ = 1 in the sample), mean,
    low, high (of the finite values; a single seed gives no interval).
    """
    import pandas as pd

    by = list(by)
    out = []
    for value in values:
        if value not in rows.columns:
            raise ValueError(f"values: {value!r} is not a column of the rows")
        for key, group in rows.groupby(by, sort=True):
            x = group[value].to_numpy(dtype=float)
            mean, low, high = mean_interval(x[np.isfinite(x)].tolist(), confidence)
            keys = dict(zip(by, key, strict=True))
            if "K" in keys:
                keys["K+1"] = keys["K"] + 1
            out.append(
                {
                    **keys,
                    "term": value,
                    "n": len(x),
                    "n_finite": int(np.isfinite(x).sum()),
                    "n_inf": int(np.isposinf(x).sum()),
                    "mean": mean,
                    "low": low,
                    "high": high,
                }
            )
    return pd.DataFrame(out)


def wide_summary(
    rows: pd.DataFrame, values: Sequence[str], *, by: Sequence[str] = SCAN_KEYS
) -> pd.DataFrame:
    """Means over seeds (:func:`summarize_over_seeds`), one column per value, one row per group
    ``by`` (``K`` shown as ``K+1``), for tables.

    A value that is +inf in every seed is shown as inf (not as a missing mean).
    """
    s = summarize_over_seeds(rows, values, by=by)
    s["value"] = s["mean"].where(s["n_inf"] < s["n"], math.inf)
    index = ["K+1" if b == "K" else b for b in by]
    table = s.pivot(index=index, columns="term", values="value").reindex(columns=list(values))
    table.columns.name = None
    return table.reset_index()


def seed_slopes(rows: pd.DataFrame, value: str, *, x: str = "K", seed: str = "seed") -> pd.Series:
    """Per seed, the least-squares slope of ``value`` against log2(``x`` + 1) (finite values
    only): the change per doubling of K+1.

    A seed with fewer than two distinct K among its finite values gets no slope.
    """
    import pandas as pd

    slopes = {}
    for s, g in rows.groupby(seed, sort=True):
        t = np.log2(g[x].to_numpy(dtype=float) + 1.0)
        y = g[value].to_numpy(dtype=float)
        ok = np.isfinite(y)
        if np.unique(t[ok]).size < 2:
            continue
        slopes[s] = float(np.polyfit(t[ok], y[ok], 1)[0])
    return pd.Series(slopes, name=value, dtype=float)


def trend(
    rows: pd.DataFrame,
    value: str,
    *,
    x: str = "K",
    seed: str = "seed",
    confidence: float = 0.95,
) -> tuple[float, float, float, int]:
    """Mean per-seed slope (:func:`seed_slopes`, per doubling of K+1) with its Student-t
    interval over seeds, and the number of seeds."""
    slopes = seed_slopes(rows, value, x=x, seed=seed)
    mean, low, high = mean_interval(slopes.tolist(), confidence)
    return mean, low, high, int(slopes.size)


def trend_test_interval(
    rows: pd.DataFrame, value: str, *, x: str = "K", seed: str = "seed"
) -> tuple[float, float] | None:
    """The test set's own 95% interval of :func:`trend`'s mean slope, by resampling the test
    images (:func:`contrast_bootstrap`); ``None`` where ``rows`` has no per-image results for
    ``value`` (``<probe>_correct``, :func:`negatives.probes.correct_matrix`) or a seed lacks
    a K."""
    # probes brings torch; imported here so that this module stays light
    from negatives.probes import correct_matrix

    column = f"{value.removesuffix('_accuracy')}_correct"
    if column not in rows.columns or rows[column].isna().any():
        return None
    ks = sorted(set(rows[x]))
    seeds = sorted(set(rows[seed]))
    if len(ks) < 2 or len(rows) != len(ks) * len(seeds):
        return None
    t = np.log2(np.asarray(ks, dtype=float) + 1.0)
    w_k = (t - t.mean()) / ((t - t.mean()) ** 2).sum()  # least-squares slope weights
    rows = rows.sort_values([seed, x])
    weights = np.tile(w_k, len(seeds)) / len(seeds)
    _, low, high = contrast_bootstrap(correct_matrix(rows, column), weights)
    return low, high


# -- the evaluation's own uncertainty ----------------------------------------------------------
# An interval over seeds measures how much training varies; it says nothing about the test set,
# which every seed shares. These measure that second source: how much an accuracy (or the
# difference between two encoders scored on the same test images) would move on another test
# set of the same size.


def binomial_se(accuracy: float, num_test: int) -> float:
    """Standard error, in points, of an accuracy (%) measured on ``num_test`` test samples."""
    if num_test < 1:
        raise ValueError(f"num_test={num_test} must be >= 1")
    p = min(max(accuracy / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / num_test)


def mcnemar_interval(
    correct_a: np.ndarray, correct_b: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus accuracy of ``b`` on the same test samples, in points, with the
    Wald interval of a paired difference of proportions (the statistic of McNemar's test).

    ``correct_a``, ``correct_b``: ``(M,)`` bool, which test samples each encoder got right. Only
    the discordant samples (right for one, wrong for the other) carry information.
    """
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"correct_a and correct_b must be (M,) of one shape, got {a.shape}, {b.shape}"
        )
    m = a.size
    only_a, only_b = float(np.sum(a & ~b)), float(np.sum(~a & b))
    diff = (only_a - only_b) / m
    se = math.sqrt(max(only_a + only_b - (only_a - only_b) ** 2 / m, 0.0)) / m
    z = float(_stats.norm.ppf(0.5 + confidence / 2))
    return 100.0 * diff, 100.0 * (diff - z * se), 100.0 * (diff + z * se)


def contrast_bootstrap(
    correct: np.ndarray,
    weights: np.ndarray,
    *,
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """A linear combination ``sum_r weights[r] * accuracy_r`` (in points) of the accuracies of
    ``R`` encoders scored on the same ``M`` test images, with a percentile interval from
    resampling the **test images** (one resample for all encoders, so they stay paired).

    ``correct``: ``(R, M)`` bool. A mean paired difference over seeds has weights ``±1/S``; a
    mean over seeds of least-squares slopes against ``x`` has weights
    ``(x_r - mean x) / (S * sum (x - mean x)^2)``. The interval is the uncertainty the test set
    alone puts on the estimate; the interval over seeds is the one from training.
    """
    c = np.atleast_2d(np.asarray(correct, dtype=bool))
    w = np.asarray(weights, dtype=float)
    if w.shape != (c.shape[0],):
        raise ValueError(f"weights must have shape ({c.shape[0]},), got {w.shape}")
    if reps < 10:
        raise ValueError(f"reps={reps} must be >= 10")
    d = w @ c.astype(np.float64)  # (M,): each test image's contribution
    m = d.size
    rng = np.random.default_rng(seed)
    boot = np.concatenate(  # 250 resamples of M test images at a time: (250, M) indices
        [
            d[rng.integers(0, m, size=(min(250, reps - i), m))].mean(axis=1)
            for i in range(0, reps, 250)
        ]
    )
    tail = 100.0 * (1 - confidence) / 2
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return 100.0 * float(d.mean()), 100.0 * float(low), 100.0 * float(high)


def paired_bootstrap(
    correct_a: np.ndarray,
    correct_b: np.ndarray,
    *,
    reps: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """The mean over seeds of (accuracy of ``a`` − accuracy of ``b``), in points, with a
    percentile interval from resampling the **test images** (:func:`contrast_bootstrap` with
    weights ``±1/S``: the same resample for every seed and both encoders).

    ``correct_a``, ``correct_b``: ``(S, M)`` bool, seed ``s``'s encoders on the ``M`` test
    samples (or ``(M,)`` for one seed).
    """
    a = np.atleast_2d(np.asarray(correct_a, dtype=bool))
    b = np.atleast_2d(np.asarray(correct_b, dtype=bool))
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must have one shape, got {a.shape}, {b.shape}")
    s = a.shape[0]
    weights = np.concatenate([np.full(s, 1.0 / s), np.full(s, -1.0 / s)])
    return contrast_bootstrap(
        np.concatenate([a, b]), weights, reps=reps, seed=seed, confidence=confidence
    )


def share_of_gain(delta: float | np.ndarray, gain: float | np.ndarray) -> float | np.ndarray:
    """The share of a gain ``G`` that a condition keeps, ``1 + Δ / G``, as a fraction.

    With ``G = acc_all − acc_random`` (what self-supervision with all negatives gained over a
    random encoder) and ``Δ = acc_condition − acc_all``, this is ``(acc_condition − acc_random)
    / G``: 1 keeps all of it, 0 none. For a fixed ``G > 0`` the map is increasing, so an
    interval of Δ maps end by end to one of the share (``G`` held at its mean). NaN where ``G``
    is not a positive finite number (nothing gained: no share to keep) or Δ is NaN.
    """
    d = np.asarray(delta, dtype=float)
    g = np.asarray(gain, dtype=float)
    ok = np.isfinite(g) & (g > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(ok, 1.0 + d / np.where(ok, g, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out
