"""Chapter 4's computations: the population scans (:mod:`negatives.population`), the K-scan
shared with chapter 3 and its paired comparisons, all of it in :func:`run`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import pandas as pd

from negatives import config as cfg
from negatives import population, stats, theory
from negatives import verdicts as vd
from negatives.chapters import kscan
from negatives.chapters.more_negatives.claims import claims
from negatives.chapters.more_negatives.design import (
    METRICS,
    MODE_NAMES,
    QUADRATURE_CASES,
    SCAN_KINDS,
    Params,
    plan,
)
from negatives.experiment import paired
from negatives.population import PRIORS
from negatives.runner import Workers
from negatives.runs import RunStore
from negatives.sweep import execute


def kscan_accuracy(
    params: Params,
    kind: str,
    *,
    store: Any = None,
    data: Any = None,
    probe_data: Any = None,
    workers: Workers | None = None,
) -> pd.DataFrame:
    """Train (or reuse from the run cache) the K-scan of ``kind`` and probe every encoder.

    ``kind="latent"``: :meth:`kscan.Params.latent_configs` on the synthetic latent-class data
    (a positive is another sample of the anchor's latent class, the negatives are the other
    samples of the batch, i.e. draws from the marginal, as in the model of Arora et al. 2019
    and Awasthi et al. 2022); ``"image"``: :meth:`kscan.Params.configs` on the image data set
    (augmented views as positives), probed on ``probe_data`` (default
    :meth:`kscan.Params.load_probe_data`). The configs and probes are chapter 3's, so the runs
    and their probe results are shared.

    One row per run: ``data`` (the kind), ``dataset``, ``num_classes`` and the columns of
    :func:`negatives.chapters.kscan.run_scan` (``mode``, ``K``, ``seed``, ``batch_size``,
    ``run_id``, ``train_seconds``, ``linear_accuracy``, ``mean_accuracy``, ...).
    """
    cfg.check_choice("kind", kind, SCAN_KINDS)
    scan_params = params.scan
    if store is None:
        store = RunStore(scan_params.results_dir)
    if kind == "latent":
        data = scan_params.load_latent_data() if data is None else data
        probe_data = data
        scan = scan_params.latent_configs()
    else:
        data = scan_params.load_data() if data is None else data
        probe_data = scan_params.load_probe_data() if probe_data is None else probe_data
        scan = scan_params.configs()
    return kscan.scan_rows(
        kind, scan, data, store, desc=f"K-scan ({kind})", probe_data=probe_data, workers=workers
    )


def accuracy_summary(
    rows: pd.DataFrame, metrics: Iterable[str] = tuple(METRICS), confidence: float = 0.95
) -> pd.DataFrame:
    """Mean and Student-t interval over seeds of each metric (accuracy in %, as the probes give).

    One row per ``data`` x ``mode`` x ``K`` x metric: ``n`` (seeds), ``mean``, ``low``,
    ``high`` (:func:`negatives.stats.summarize`), plus ``K+1``.
    """
    out = []
    for metric in metrics:
        if metric not in rows.columns:
            raise ValueError(f"metric={metric!r} is not a column of rows")
        s = stats.summarize(rows, ["data", "mode", "K"], metric, confidence)
        s.insert(3, "metric", metric)
        out.append(s)
    res = pd.concat(out, ignore_index=True)
    res["K+1"] = res["K"] + 1
    return res.sort_values(["data", "metric", "mode", "K"], ignore_index=True)


def k_comparison(
    rows: pd.DataFrame,
    metric: str = "linear_accuracy",
    margin: float = 1.0,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Does accuracy degrade at the largest K? Paired-by-seed differences, one row per data x mode.

    For each ``data`` x ``mode`` with at least two K values: ``K_max`` is the largest K,
    ``K_best`` the smaller K with the highest mean accuracy over seeds and ``K_min`` the
    smallest. Per seed s present at both K values, d_s = acc(K_max, s) - acc(K_best, s)
    (accuracy points: the probes' accuracies are percentages); ``best_mean``/``best_low``/``best_high`` are the mean of d_s and its
    Student-t interval over seeds, and ``min_*`` the same against ``K_min``.

    Rule (the claim "accuracy does not degrade with K", Awasthi et al. 2022, decided by
    :func:`negatives.verdicts.decide`): *reproduced* if the interval against the best smaller
    K lies above ``-margin`` points; *not reproduced* if it lies below ``-margin``;
    *inconclusive* otherwise (including a single seed, where there is no interval). Picking
    the best smaller K after the fact makes the rule conservative: a pure-noise winner lowers
    the difference. Where ``rows`` has the probes' per-image results, ``best_test_low/high``
    is the test set's own 95% interval of the same difference
    (:func:`negatives.stats.paired_bootstrap`).
    """
    if metric not in rows.columns:
        raise ValueError(f"metric={metric!r} is not a column of rows")
    margin = cfg.check_float("margin", margin, 0.0)
    out = []
    for (kind, mode), g in rows.groupby(["data", "mode"], sort=False):
        means = g.groupby("K")[metric].mean()
        ks = sorted(means.index)
        if len(ks) < 2:
            continue
        k_max, k_min = ks[-1], ks[0]
        k_best = int(means.loc[ks[:-1]].idxmax())
        row: dict[str, Any] = {
            "data": kind,
            "mode": mode,
            "metric": metric,
            "K_min": int(k_min),
            "K_best": k_best,
            "K_max": int(k_max),
            "acc_K_max": float(means.loc[k_max]),
            "acc_K_best": float(means.loc[k_best]),
            "acc_K_min": float(means.loc[k_min]),
        }
        top = g[g["K"] == k_max].sort_values("seed")
        for name, k in (("best", k_best), ("min", k_min)):
            d = paired(top, g[g["K"] == k], metric, confidence=confidence, test_set=name == "best")
            row.update({f"{name}_n": d["diff_n"], f"{name}_mean": d["diff_mean"]})
            row.update({f"{name}_low": d["diff_low"], f"{name}_high": d["diff_high"]})
            if "diff_test_low" in d:
                row.update({f"{name}_test_low": d["diff_test_low"],
                            f"{name}_test_high": d["diff_test_high"]})  # fmt: skip
        row["margin"] = margin
        row["verdict"] = vd.decide(row["best_low"], row["best_high"], vd.above(-margin))
        out.append(row)
    # a scan of one K compares nothing: an empty table that still has the columns readers select
    columns = ["data", "mode", "metric", "K_min", "K_best", "K_max", "acc_K_max", "acc_K_best",
               "acc_K_min", "best_n", "best_mean", "best_low", "best_high", "min_n", "min_mean",
               "min_low", "min_high", "best_test_low", "best_test_high", "margin", "verdict"]  # fmt: skip
    return pd.DataFrame(out) if out else pd.DataFrame(columns=columns)


def departures(comparison: pd.DataFrame, margin: float = 1.0) -> list[str]:
    """Plain sentences on where trained encoders depart from the flat population optimum.

    From :func:`k_comparison` rows: accuracy *rises* from the smallest K (the interval of the
    difference K_max - K_min lies above ``margin``: small K hurts, which the population optimum
    does not show), or *falls* at the largest K (the rule's "not reproduced"). Empty if neither.
    """
    out = []
    for _, c in comparison.iterrows():
        what = f"{METRICS.get(c['metric'], c['metric'])}, {MODE_NAMES.get(c['mode'], c['mode'])}"
        if math.isfinite(c["min_low"]) and c["min_low"] > margin:
            out.append(
                f"{what}: accuracy at the smallest K={c['K_min']} is lower than at "
                f"K={c['K_max']} by {c['min_mean']:.1f} points "
                f"[{c['min_low']:.1f}, {c['min_high']:.1f}]"
            )
        if c["verdict"] == "not reproduced":
            out.append(
                f"{what}: accuracy falls from K={c['K_best']} to K={c['K_max']} by "
                f"{-c['best_mean']:.1f} points [{-c['best_high']:.1f}, {-c['best_low']:.1f}]"
            )
    return out


def run(P: Params, store: RunStore | None = None) -> dict[str, Any]:
    """Every table of the chapter: the population part (``quad``, ``main``, ``variants``,
    ``skew``, ``grams``, with ``compute_seconds``, and ``timing``), the K-scan shared with
    chapter 3 (``scan_rows``, ``acc``, ``comparisons``, ``scan_labels``, with ``scan_seconds``),
    and the ``verdicts`` (:func:`claims`)."""
    store = store or RunStore(P.scan.results_dir)  # the K-scan's cache keeps the optima too
    workers = execute(P, "more_negatives", plan, store)
    t0 = time.perf_counter()
    cases = QUADRATURE_CASES[: P.quadrature_cases]
    pop, scale, con = P.population, P.main_scale, P.main_constraint
    T: dict[str, Any] = {
        "quad": pd.DataFrame(theory.quadrature_check(cases, P.quadrature_samples, P.seed)),
        "main": pop.grid(store, P.num_classes, PRIORS, [scale], [con]),
        "variants": pop.grid(store, [P.variant_num_classes], PRIORS, P.scales, P.constraints),
        "skew": pop.skew(store, P.variant_num_classes, P.skew_exponents, scale, con),
        "grams": pop.grams(P.heatmap_num_classes, scale, con),
    }
    T["compute_seconds"] = time.perf_counter() - t0
    T["timing"] = population.timing(pd.concat([T["main"], T["variants"]]))
    t1 = time.perf_counter()
    scan_rows = pd.concat(
        [kscan_accuracy(P, kind, store=store, workers=workers) for kind in SCAN_KINDS],
        ignore_index=True,
    )
    T["scan_seconds"] = time.perf_counter() - t1
    T["scan_rows"] = scan_rows
    T["acc"] = accuracy_summary(scan_rows)
    T["comparisons"] = pd.concat(
        [k_comparison(scan_rows, m, P.accuracy_margin) for m in METRICS], ignore_index=True
    )
    T["scan_labels"] = {kind: kscan.data_label(scan_rows, kind) for kind in SCAN_KINDS}
    T["verdicts"] = claims(T)
    return T
