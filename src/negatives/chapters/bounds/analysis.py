"""Chapter 3's computations: the bound terms of every encoder of the K-scan, the comparison
with the paper's tables, exact against float64 υ, all of it in :func:`run`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from negatives import bounds, probes, stats
from negatives import config as cfg
from negatives.chapters import kscan
from negatives.chapters.bounds.claims import claims
from negatives.chapters.bounds.design import (
    DATA_KINDS,
    PAPER_CIFAR10,
    PAPER_CIFAR100,
    TERMS,
    Params,
    plan,
)
from negatives.data import Dataset
from negatives.runner import Run, Workers
from negatives.runs import RunStore
from negatives.sweep import execute


def evaluate_run(run: Run, data: Dataset, params: Params) -> dict[str, float]:
    """The bound terms of one trained run, computed once and cached with ``Run.evaluate``.

    Evaluated at the run's own K (K+1 = the batch size in ``batch`` mode; the fixed batch masked
    to K negatives in ``mask`` mode is evaluated on batches of K+1 all the same, since the
    bound is about K) and at its training temperature.
    """
    config = run.config
    key = params.evaluation_key(config, data)

    def compute() -> dict[str, float]:
        device = cfg.resolve_device(params.scan.device)
        inputs = bounds.bound_inputs(
            run.load_model(device),
            data,
            config,
            num_augmentations=params.num_augmentations,
            seed=params.eval_seed,
            device=device,
        )
        return bounds.terms_from_inputs(
            inputs,
            temperature=config.temperature,
            num_negatives=config.negatives_per_query,
            num_passes=params.num_passes,
            seed=params.eval_seed,
        )

    out = run.evaluate("bounds", key, compute)
    # JSON has no inf: the cache may hand back None / strings for them; restore floats.
    return {k: _as_float(v) for k, v in out.items()}


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str):
        return float(value)  # "inf", "-inf", "nan"
    return float(value)


def scan_bounds(
    params: Params,
    kind: str = "image",
    *,
    store: RunStore | None = None,
    data: Dataset | None = None,
    probe_data: Dataset | None = None,
    eval_data: Dataset | None = None,
    workers: Workers | None = None,
) -> pd.DataFrame:
    """Train (or reuse) the K-scan of ``kind`` and evaluate the bounds on every run.

    ``kind="image"``: the image data set of the profile (trained on ``data``, probed on
    ``probe_data``, bound terms on ``eval_data``: by default :meth:`kscan.Params.load_data`,
    :meth:`kscan.Params.load_probe_data`, :meth:`Params.load_eval_data`); ``"latent"``:
    the latent-class data with ``latent_classes`` classes, all three roles on the same data.
    One row per run: ``data``, ``dataset``, ``num_classes``, ``mode``, ``K``, ``seed``,
    ``batch_size``, ``run_id``, the probes' accuracies of
    :func:`negatives.chapters.kscan.run_scan` and every key of
    :func:`negatives.bounds.terms_from_inputs`.
    """
    cfg.check_choice("kind", kind, DATA_KINDS)
    store = store or params.store()
    if kind == "image":
        data = params.scan.load_data() if data is None else data
        probe_data = params.scan.load_probe_data() if probe_data is None else probe_data
        eval_data = params.load_eval_data() if eval_data is None else eval_data
        scan = params.scan.configs()
        ks = params.scan.num_negatives
    else:
        data = params.scan.load_latent_data() if data is None else data
        probe_data = data if probe_data is None else probe_data
        eval_data = data if eval_data is None else eval_data
        scan = params.scan.latent_configs()
        ks = params.scan.latent_num_negatives
    n_test = len(eval_data.test_labels)
    if max(ks) + 1 > n_test:
        name = "num_negatives" if kind == "image" else "latent_num_negatives"
        raise ValueError(
            f"{name}={list(ks)}: K+1 = {max(ks) + 1} exceeds the {n_test} test samples of "
            f"{data.name!r}; the bound terms are evaluated on test batches of K+1 samples"
        )
    runs_, probe_rows = kscan.run_scan(
        scan, data, store, desc=f"K-scan ({kind})", probe_data=probe_data, workers=workers
    )
    # the test set's class frequencies: the prior of Bao et al.'s intercepts
    counts = np.bincount(eval_data.test_labels.cpu().numpy(), minlength=eval_data.num_classes)
    prior = (counts / counts.sum()).tolist()
    rows = []
    for run, (_, probe_row) in zip(runs_, probe_rows.iterrows(), strict=True):
        terms = evaluate_run(run, eval_data, params)
        rows.append({**probe_row.to_dict(), **terms, **bounds.every_sup_bound(terms, prior)})
    df = pd.DataFrame(rows)
    df.insert(0, "data", kind)
    df.insert(1, "dataset", data.name)
    df.insert(2, "num_classes", data.num_classes)
    return df


def scan_eqco(
    params: Params,
    kind: str = "image",
    *,
    store: RunStore | None = None,
    data: Dataset | None = None,
    probe_data: Dataset | None = None,
    workers: Workers | None = None,
) -> pd.DataFrame | None:
    """Train (or reuse) the EqCo arms of ``kind`` (:meth:`kscan.Params.eqco_configs` for
    ``eqco_modes``) and probe them as the scan's runs are probed (``data`` and ``probe_data``
    as :func:`scan_bounds` loads them by default); rows as :func:`scan_bounds`'s without the
    bound terms, ``mode`` ``"eqco-<mode>"`` (None where ``kind`` has no arm)."""
    cfg.check_choice("kind", kind, DATA_KINDS)
    store = store or params.store()
    if kind == "image":
        scan = params.scan.eqco_configs(params.eqco_modes)
    else:
        scan = params.scan.latent_eqco_configs(params.eqco_modes)
    if not scan:
        return None
    if kind == "image":
        data = params.scan.load_data() if data is None else data
        probe_data = params.scan.load_probe_data() if probe_data is None else probe_data
    else:
        data = params.scan.load_latent_data() if data is None else data
        probe_data = data if probe_data is None else probe_data
    return kscan.scan_rows(
        kind, scan, data, store, desc=f"EqCo arm ({kind})", probe_data=probe_data, workers=workers
    )


EQCO_SLOPE_COLUMNS = ("data", "mode", "arm", "mean", "low", "high", "seeds", "test_low",
                      "test_high")  # fmt: skip


def eqco_slopes(rows: pd.DataFrame, eqco: pd.DataFrame) -> pd.DataFrame:
    """The linear probe's slope per doubling of K+1 with and without EqCo's rescaling, per data
    set and way of varying K (``mode``): the mode's runs (``arm`` ``"without"``) against its
    EqCo arm's (``"with"``), each the mean of per-seed fits with its 95% interval over seeds and
    the test set's (:func:`negatives.stats.trend_test_interval`), and their difference paired by
    seed (``"difference"``, without − with: the part of K's effect the rescaling removes)."""
    out = []
    metric = "linear_accuracy"
    for kind in [k for k in DATA_KINDS if k in set(eqco["data"])]:
        arms = eqco[eqco["data"] == kind]
        for arm_mode in dict.fromkeys(arms["mode"]):
            mode = arm_mode.removeprefix(kscan.EQCO_PREFIX)
            base = rows[(rows["data"] == kind) & (rows["mode"] == mode)]
            if not len(base):
                continue
            slopes = {}
            for name, g in (("without", base), ("with", arms[arms["mode"] == arm_mode])):
                slopes[name] = stats.seed_slopes(g, metric)
                mean, low, high, n = stats.trend(g, metric)
                test = stats.trend_test_interval(g, metric) or (math.nan, math.nan)
                out.append((kind, mode, name, mean, low, high, n, *test))
            both = slopes["without"].index.intersection(slopes["with"].index)
            diff = (slopes["without"][both] - slopes["with"][both]).tolist()
            out.append((kind, mode, "difference", *stats.mean_interval(diff), len(diff),
                        math.nan, math.nan))  # fmt: skip
    return pd.DataFrame(out, columns=list(EQCO_SLOPE_COLUMNS))


def paper_comparison(rows: pd.DataFrame) -> pd.DataFrame:
    """The paper's CIFAR-10 / CIFAR-100 numbers (quoted) beside ours, one row per K+1.

    Ours: means over seeds of the image data (both modes) and of the latent-class data. The
    settings differ (data, model, epochs, number of classes); compare trends, not levels.
    """
    cols = ["centroid_accuracy", "linear_accuracy", "curl_bound", "proposed_bound"]
    names = {
        "centroid_accuracy": "mean-classifier acc. (%)",
        "linear_accuracy": "linear acc. (%)",
        "curl_bound": "CURL bound",
        "proposed_bound": "proposed bound",
    }
    out = []
    for k1, acc, lin, curl, prop in PAPER_CIFAR10:
        out.append(("paper: CIFAR-10, ResNet-18 (quoted)", 10, "batch", k1, acc, lin, curl, prop))
    for k1, acc in PAPER_CIFAR100:
        out.append(
            ("paper: CIFAR-100, ResNet-18 (quoted)", 100, "batch", k1, acc, *(math.nan,) * 3)
        )
    ours = stats.wide_summary(rows, cols)
    for _, r in ours.iterrows():
        label = f"ours: {rows.loc[rows['data'] == r['data'], 'dataset'].iloc[0]}"
        out.append((label, r["num_classes"], r["mode"], r["K+1"], *(r[c] for c in cols)))
    return pd.DataFrame(
        out, columns=["source", "C", "how K varies", "K+1", *(names[c] for c in cols)]
    )


def upsilon_table(rows: pd.DataFrame) -> pd.DataFrame:
    """υ(K+1) for every K of the scans: empirical, exact, and float64 as published.

    ``empirical``: the fraction of anchors whose test batch covers every class (mean over runs);
    ``exact (test frequencies)``: υ under the test set's class frequencies (what the empirical
    value estimates, up to sampling without replacement); ``exact (uniform)``: υ for a uniform
    prior; ``float64 (authors' notebook)``: the alternating sum in double precision, as the
    authors' ``coupon.ipynb``; ``float64 / exact``: how wrong that is.
    """
    out = []
    for (kind, c, k), g in rows.groupby(["data", "num_classes", "K"], sort=True):
        exact = bounds.coverage_probability(k + 1, num_classes=int(c))
        naive = bounds.naive_coverage_probability(k + 1, int(c), "notebook")
        direct = bounds.naive_coverage_probability(k + 1, int(c), "direct")
        out.append(
            {
                "data": kind,
                "C": int(c),
                "K+1": int(k) + 1,
                "empirical": float(g["upsilon"].mean()),
                "exact (test frequencies)": float(g["upsilon_exact"].mean()),
                "exact (uniform)": exact,
                "float64 (authors' notebook)": naive,
                "float64 (direct sum)": direct,
                "float64 / exact": _ratio_or_nan(naive, exact),
            }
        )
    return pd.DataFrame(out)


def _ratio_or_nan(num: float, den: float) -> float:
    """num / den; 0 / 0 (both exactly zero, e.g. υ for K+1 < C) is nan, x / 0 is inf."""
    if den != 0:
        return num / den
    return math.nan if num == 0 else math.inf


def run(P: Params, store: RunStore | None = None) -> dict[str, Any]:
    """Every table of the chapter: the per-run ``rows`` of both scans, their ``summary`` over
    seeds, the ``upsilon`` and paper ``comparison`` tables, the EqCo arms' rows (``eqco``)
    and slopes (``eqco_slopes``), and the ``verdicts``."""
    store = store or P.store()
    workers = execute(P, "bounds", plan, store)
    # each data set loaded once, for its scan, its EqCo arms and (images) the baselines
    image = {"data": P.scan.load_data(), "probe_data": P.scan.load_probe_data()}
    latent = {"data": P.scan.load_latent_data()}
    loaded = {"image": image, "latent": latent}
    rows = pd.concat(
        [scan_bounds(P, k, store=store, workers=workers, **loaded[k]) for k in DATA_KINDS],
        ignore_index=True,
    )
    kinds = [k for k in DATA_KINDS if k in set(rows["data"])]
    arms = [scan_eqco(P, k, store=store, workers=workers, **loaded[k]) for k in DATA_KINDS]
    arms = [a for a in arms if a is not None]
    eqco = pd.concat(arms, ignore_index=True) if arms else rows.iloc[:0]
    T = {
        "eqco": eqco,
        "eqco_modes": P.eqco_modes,
        "eqco_slopes": eqco_slopes(rows, eqco),
        "rows": rows,
        "summary": stats.summarize_over_seeds(rows, TERMS),
        "upsilon": upsilon_table(rows),
        "comparison": paper_comparison(rows),
        "kinds": kinds,
        "labels": {k: kscan.data_label(rows, k) for k in kinds},
    }
    if "image" in kinds:  # what the image encoders' probes are measured against
        T["baselines"] = probes.baselines(P.scan.base_config(), image["probe_data"], store)
    T["verdicts"] = claims(T)
    return T


def worst_float64_upsilon(upsilon: pd.DataFrame) -> dict[str, Any] | None:
    """The latent scan's K where the authors' float64 υ is furthest from the exact value; None
    where no K+1 of the scan reaches C (υ is then exactly 0 and nothing is computed in float)."""
    lat = upsilon[(upsilon["data"] == "latent") & (upsilon["exact (uniform)"] > 0)].copy()
    if lat.empty:
        return None
    naive, exact = lat["float64 (authors' notebook)"], lat["exact (uniform)"]
    lat["rel"] = (naive - exact).abs() / exact
    worst = lat.sort_values("rel").iloc[-1]
    return {
        "K+1": int(worst["K+1"]),
        "C": int(worst["C"]),
        "float64": float(worst["float64 (authors' notebook)"]),
        "exact": float(worst["exact (uniform)"]),
        "ratio": float(worst["float64 / exact"]),
        "relative_error": float(worst["rel"]),
    }
