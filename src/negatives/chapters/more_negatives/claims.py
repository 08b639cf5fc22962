"""Chapter 4's claims (Awasthi, Dikkala & Kamath 2022) on the population optimum and on
trained encoders, and their verdicts.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pandas as pd

from negatives import verdicts as vd
from negatives.chapters.more_negatives.design import (
    FLAT_TOLERANCE,
    METRICS,
    MODE_NAMES,
    PAPER,
    SIMPLEX_TOLERANCE,
)

POPULATION_CLAIMS: dict[str, vd.Claim] = {
    "structure": vd.Claim(
        "the optimum is a regular simplex (uniform classes)",
        PAPER + ", as we reconstruct it",
        "with uniform classes the optimum maps each class to one vector, the vectors forming "
        "a regular simplex (our reconstruction; the paper's text was not reachable)",
        "largest |G − G_simplex| over the uniform-prior optimisations",
        vd.below(SIMPLEX_TOLERANCE),
        digits=1,
    ),
    "flat": vd.Claim(
        "the optimum does not degrade with K (uniform classes)",
        PAPER,
        "the downstream performance of the population-optimal representation does not "
        "degrade with K (abstract)",
        "largest change over K of the optimum's supervised loss (nats)",
        vd.below(FLAT_TOLERANCE),
        digits=1,
    ),
    "accuracy": vd.Claim(
        "the optimum classifies every class correctly at every K (uniform classes)",
        PAPER,
        "no degradation: the optimum's mean classifier stays perfect",
        "smallest accuracy of the optimum's mean classifier over K (fraction)",
        vd.above(1 - 1e-9),
        digits=4,
    ),
    "zipf": vd.Claim(
        "the optimum does not degrade with K (Zipf prior, ours)",
        PAPER + " (abstract), extended by us",
        "the abstract does not restrict the prior; a third-party summary says the precise "
        "characterisation is for uniform priors",
        "largest relative increase of the prior-weighted supervised loss from the smallest "
        "to the largest K (%)",
        vd.below(100 * FLAT_TOLERANCE),
        digits=2,
    ),
    "curl": vd.Claim(
        "the CURL bound's degradation is not inherent",
        PAPER,
        "the collision-coverage degradation predicted by the CURL bound (Arora et al. 2019) "
        "does not happen at the population optimum",
        "smallest growth of log10(CURL bound) at the optimum from the smallest to the "
        "largest K, across C (while the supervised loss stays flat, row above)",
        vd.above(1.0),
        digits=1,
    ),
    "tractable": vd.Claim(
        "the optimum is computable as a convex problem",
        "third-party summary of " + PAPER,
        "the optimum can be computed as a tractable (convex) problem (ours: the loss is "
        "convex in the Gram matrix)",
        "largest spread of the loss over independent random starts",
        vd.below(1e-8),
        digits=1,
    ),
}


# The finite-sample form, decided on trained encoders: its region, above -accuracy_margin, is
# set by each comparison's margin (:func:`k_comparison`).
NO_DEGRADATION = vd.Claim(
    "accuracy does not degrade with K",
    PAPER,
    "more negatives do not hurt downstream performance",
    "accuracy at the largest K − at the best smaller K (points, paired by seed)",
    vd.above(-1.0),
    " pts",
)


SCAN_DIMENSIONS = ["C", "prior", "scale", "constraint"]  # of the population scans, besides K


def claims(T: dict[str, Any]) -> pd.DataFrame:
    """The chapter's verdict table from :func:`run`'s tables, one row per claim and setting.

    The population claims (:data:`POPULATION_CLAIMS`, rows keyed ``key``) from ``main``,
    ``variants`` and ``skew``: every quantity is exact (up to the optimiser's tolerance), so its
    interval is the point itself. The finite-sample claim (:data:`NO_DEGRADATION`, ``key`` "no
    degradation") from ``comparisons`` (:func:`k_comparison`), one row per data x mode x metric,
    keyed also by ``data``, ``mode`` and ``metric``.
    """
    rows = _population_verdicts(T["main"], T["variants"], T["skew"])
    rows += _comparison_verdicts(T["comparisons"], T["scan_labels"])
    return vd.verdict_table(rows)


def _optima(main: pd.DataFrame, variants: pd.DataFrame) -> pd.DataFrame:
    """The optimisations of the main and the variant scans, each once."""
    return pd.concat([main, variants], ignore_index=True).drop_duplicates(
        subset=["K", *SCAN_DIMENSIONS]
    )


def _flatness(scan: pd.DataFrame, column: str) -> float:
    """Largest change of ``column`` over K, across the other scan dimensions."""
    return float(scan.groupby(SCAN_DIMENSIONS)[column].agg(lambda x: x.max() - x.min()).max())


def _ends(scan: pd.DataFrame, column: str) -> tuple[pd.Series, pd.Series]:
    """``column`` at the smallest and at the largest K, for each of the other scan dimensions."""
    g = scan.sort_values("K").groupby(SCAN_DIMENSIONS)[column]
    return g.first(), g.last()


def _relative_change(scan: pd.DataFrame, column: str) -> pd.Series:
    """``column``'s relative change from the smallest to the largest K (:func:`_ends`)."""
    first, last = _ends(scan, column)
    return (last - first) / first


def _population_verdicts(
    main: pd.DataFrame, variants: pd.DataFrame, skew: pd.DataFrame | None
) -> list[dict[str, Any]]:
    """The rows of :data:`POPULATION_CLAIMS`; ``skew``'s relative changes join the Zipf rows'."""
    C = POPULATION_CLAIMS
    both = _optima(main, variants)
    uni = both[both["prior"] == "uniform"]
    zipf = both[both["prior"] == "zipf"]
    grid = (
        f"{len(uni)} optimisations: C = {vd.and_list(sorted(int(c) for c in uni['C'].unique()))}"
        f", K = {int(uni['K'].min())}…{int(uni['K'].max())}, "
        f"{' and '.join(sorted(set(uni['constraint'])))} constraint, s = "
        f"{vd.and_list(sorted(float(s) for s in uni['scale'].unique()))}"
    )

    def exact(key: str, value: float, setting: str) -> dict[str, Any]:
        return {**vd.judge(C[key], value, value, value, setting=setting), "key": key}

    rows = [
        exact("structure", float(uni["simplex distance"].max()), grid),
        exact("flat", _flatness(uni, "supervised loss"), grid),
        exact("accuracy", float(uni["accuracy"].min()), grid),
    ]
    if len(zipf):
        rel = _relative_change(zipf, "supervised loss").tolist()
        setting = "Zipf prior: every C, scale and constraint of the scans"
        if skew is not None and len(skew):
            rel += (skew["change (%)"] / 100).tolist()
            exponents = vd.and_list([float(a) for a in skew["Zipf exponent a"]])
            setting += f", and the Zipf exponents {exponents}"
        rows.append(exact("zipf", 100 * float(max(rel)), setting))
    first, last = _ends(main[main["prior"] == "uniform"], "log10 CURL bound")
    growth = float(min((last - first).tolist()))
    rows.append(exact("curl", growth, "uniform prior, main scale and constraint"))
    multi = both[both["restarts"] > 1]
    if len(multi):
        setting = f"{len(multi)} grid points with more than one start"
        rows.append(exact("tractable", float(multi["restart spread"].max()), setting))
    else:
        nan = math.nan
        row = vd.judge(C["tractable"], nan, nan, nan, setting="one start (restarts=1)")
        rows.append({**row, "key": "tractable"})
    return rows


def _comparison_verdicts(comparisons: pd.DataFrame, labels: dict[str, str]) -> list[dict[str, Any]]:
    """One row of :data:`NO_DEGRADATION` per :func:`k_comparison` row, by its rule; ``labels``
    names each data kind (:func:`negatives.chapters.kscan.data_label`)."""
    out = []
    for _, c in comparisons.iterrows():
        claim = dataclasses.replace(NO_DEGRADATION, region=vd.above(-float(c["margin"])))
        low, high = c.get("best_test_low", math.nan), c.get("best_test_high", math.nan)
        row = vd.judge(
            claim,
            c["best_mean"],
            c["best_low"],
            c["best_high"],
            setting=f"trained encoders, {labels[c['data']]}, "
            f"{MODE_NAMES.get(c['mode'], c['mode'])}, {METRICS.get(c['metric'], c['metric'])}: "
            f"K = {c['K_max']} against K = {c['K_best']}",
            seeds=int(c["best_n"]),
            test_set=None if pd.isna(low) else (low, high),
        )
        key = {"key": "no degradation", "data": c["data"], "mode": c["mode"]}
        out.append({**row, **key, "metric": c["metric"]})
    return out
