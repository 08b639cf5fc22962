"""Means and 95% intervals over seeds, and the uncertainty of an evaluation on a finite test set."""

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
