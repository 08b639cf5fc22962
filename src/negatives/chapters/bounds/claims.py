"""Chapter 3's claims (Nozawa & Sato 2021) and their verdicts."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from negatives import stats
from negatives import verdicts as vd
from negatives.chapters import kscan
from negatives.chapters.bounds.design import DATA_KINDS, MIN_ACCURACY_SLOPE

PAPER = "Nozawa & Sato (2021)"


# The chapter's claims, decided by :func:`negatives.verdicts.decide` in :func:`claims`.
CLAIMS: dict[str, vd.Claim] = {
    "accuracy": vd.Claim(
        "more negatives improve accuracy",
        PAPER,
        "downstream accuracy rises with K (their CIFAR tables); we ask for a rise of at "
        f"least {MIN_ACCURACY_SLOPE:g} points per doubling of K+1",
        "slope of accuracy against log2(K+1) (points per doubling), mean of per-seed fits",
        vd.above(MIN_ACCURACY_SLOPE),
        " pts",
    ),
    "curl": vd.Claim(
        "the CURL bound explodes",
        PAPER,
        "the CURL upper bound on the supervised loss grows with K and explodes as τ → 1",
        "slope of the CURL upper bound on L_sup against log2(K+1) (nats per doubling; ∞ "
        "where it is infinite at the largest K)",
        vd.above(0.0),
    ),
    "proposed": vd.Claim(
        "the proposed bound stays informative",
        PAPER,
        "their upper bound on the supervised loss stays finite, below CURL's, at large K",
        "CURL − proposed upper bound on L_sup at the largest K (nats)",
        vd.above(0.0),
    ),
    "lower bound": vd.Claim(
        "both bounds are below L_Info",
        PAPER + " (theorem)",
        "both are lower bounds of the contrastive loss (a check of our estimates)",
        "smallest L_Info − bound over all runs (nats)",
        vd.above(0.0),
    ),
}


def claims(T: dict[str, Any]) -> pd.DataFrame:
    """The verdict table of the run's tables ``T`` (its ``rows``, one per run): one row per
    (claim, data, mode[, metric]), decided by :mod:`negatives.verdicts`.

    Claims of Nozawa & Sato (2021) (regions in :data:`CLAIMS`):

    1. *More negatives improve downstream accuracy*: the slope of accuracy (%) against
       log2(K+1), fitted per seed, mean over seeds with a 95% t-interval
       (:func:`negatives.stats.trend`), for the mean classifier (``centroid_accuracy``) and the
       linear probe (``linear_accuracy``), must exceed :data:`MIN_ACCURACY_SLOPE` (a smaller
       rise counts as none).
    2. *The CURL upper bound on L_sup grows with K and explodes*: its slope, > 0; where it is
       infinite at the largest K in every seed (no collision-free anchor, 1 − τ = 0) the
       estimate is ∞; otherwise the slope over the K values where every seed is finite.
    3. *The proposed upper bound stays informative*: CURL minus proposed at the largest K
       (∞ where CURL is infinite; −∞ where the proposed one is), > 0.
    4. *Both are lower bounds of L_Info* (the theorems; a sanity check): the smallest
       L_Info − bound over all runs, > 0 (an exact minimum, no interval).
    """
    rows, C = T["rows"], CLAIMS
    out: list[dict[str, Any]] = []
    for kind in [k for k in DATA_KINDS if k in set(rows["data"])]:
        label = kscan.data_label(rows, kind)
        for mode in sorted(set(rows.loc[rows["data"] == kind, "mode"])):
            g = _rows_for(rows, kind, mode)
            ks = sorted(set(g["K"]))
            setting = f"{label}, {mode}, K+1 = {ks[0] + 1}…{ks[-1] + 1}"
            for metric, name in (
                ("centroid_accuracy", "mean classifier"),
                ("linear_accuracy", "linear probe"),
            ):
                mean, low, high, n = stats.trend(g, metric)
                row = vd.judge(
                    C["accuracy"],
                    mean,
                    low,
                    high,
                    setting=f"{setting}, {name}",
                    seeds=n,
                    test_set=stats.trend_test_interval(g, metric),
                )
                out.append({**row, "key": "accuracy", "data": kind, "mode": mode, "metric": metric})
            key = {"data": kind, "mode": mode, "metric": None}
            out.append({**_curl_verdict(C["curl"], g, setting), "key": "curl", **key})
            out.append({**_proposed_verdict(C["proposed"], g, setting), "key": "proposed", **key})
            for bound, name in (("curl_bound", "CURL"), ("proposed_bound", "proposed")):
                gap = float((g["info_loss"] - g[bound]).min())
                row = vd.judge(
                    C["lower bound"],
                    gap,
                    gap,
                    gap,
                    setting=f"{setting}, {name} bound, {len(g)} runs",
                    seeds=int(g["seed"].nunique()),
                )
                out.append({**row, "key": "lower bound", **key, "metric": bound})
    return vd.verdict_table(out)


def _rows_for(rows: pd.DataFrame, kind: str, mode: str) -> pd.DataFrame:
    return rows[(rows["data"] == kind) & (rows["mode"] == mode)]


def _at_largest_k(g: pd.DataFrame, value: str) -> pd.Series:
    top = g[g["K"] == g["K"].max()]
    return top.set_index("seed")[value].astype(float)


def _curl_verdict(claim: vd.Claim, g: pd.DataFrame, setting: str) -> dict[str, Any]:
    top = _at_largest_k(g, "curl_sup_upper_bound")
    n_seeds = int(g["seed"].nunique())
    if len(top) and bool(np.isposinf(top).all()):
        return vd.judge(
            claim,
            math.inf,
            math.inf,
            math.inf,
            setting=f"{setting}; infinite at the largest K in every seed (1 − τ = 0)",
            seeds=n_seeds,
        )
    finite_k = [k for k, h in g.groupby("K") if bool(np.isfinite(h["curl_sup_upper_bound"]).all())]
    mean, low, high, n = stats.trend(g[g["K"].isin(finite_k)], "curl_sup_upper_bound")
    return vd.judge(claim, mean, low, high, setting=f"{setting}; finite K only", seeds=n)


def _proposed_verdict(claim: vd.Claim, g: pd.DataFrame, setting: str) -> dict[str, Any]:
    curl = _at_largest_k(g, "curl_sup_upper_bound")
    prop = _at_largest_k(g, "proposed_sup_upper_bound_exact_upsilon")
    if not bool(np.isfinite(prop).all()):
        inf = -math.inf
        return vd.judge(
            claim,
            inf,
            inf,
            inf,
            setting=f"{setting}; the proposed bound is infinite",
            seeds=len(prop),
        )
    mean, low, high = stats.mean_interval_with_infinities((curl - prop).to_numpy(dtype=float))
    return vd.judge(claim, mean, low, high, setting=setting, seeds=len(prop))
