"""Chapter 3, bounds against the number of negatives (Nozawa & Sato 2021, section 5).

The chapter's parameters (:class:`Params`: the shared K-scan of
:mod:`negatives.chapters.kscan` plus this chapter's evaluation settings) and the functions that
turn trained encoders into the chapter's tables:

* :func:`scan_bounds`: train (or reuse from the run cache) every encoder of the K-scan and
  evaluate the bound terms on each (:func:`negatives.bounds.bound_inputs` and
  :func:`negatives.bounds.terms_from_inputs`, as the authors' ``bound.py`` does: test set,
  shuffled batches of K+1, several passes, mean classifier from training features averaged
  over augmentations), cached per run (:func:`evaluate_run`). One row per run.
* summaries over seeds (:func:`negatives.stats.summarize_over_seeds`), the comparison with the
  paper's tables (:func:`paper_comparison`), exact against float64 υ (:func:`upsilon_table`),
  and :func:`claims`, one row per claim of :data:`CLAIMS` decided by the rules documented there.

The K-scan's configs are built by :class:`negatives.chapters.kscan.Params` unchanged, so
chapter 4 reuses the same trained encoders through the run cache.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from negatives import bounds, probes, stats
from negatives import config as cfg
from negatives import verdicts as vd
from negatives.chapters import kscan
from negatives.chapters.params import ChapterParams, check_optional_int
from negatives.data import Dataset, load_dataset
from negatives.runner import Run, Workers
from negatives.runs import RunStore
from negatives.sweep import execute
from negatives.trainconfig import TrainConfig

MAX_PASSES = 1000
# bump when the evaluation (negatives.bounds.bound_inputs, terms_from_inputs) changes, so that
# cached evaluations are redone
EVAL_VERSION = 3

DATA_KINDS = ("image", "latent")

# Nozawa & Sato (2021), CIFAR-10 (ResNet-18, 500 epochs, mean of 3 seeds), as printed in their
# tables: K+1 -> mean-classifier accuracy (%), linear accuracy (%), CURL bound, proposed bound.
# Quotations, not our results.
PAPER_CIFAR10: tuple[tuple[int, float, float, float, float], ...] = (
    (32, 72.75, 77.13, 0.23, 0.39),
    (64, 75.30, 79.70, 0.76, 0.70),
    (128, 77.22, 81.33, 1.41, 1.02),
    (256, 78.60, 82.85, 2.08, 1.35),
    (512, 80.12, 84.13, 2.75, 1.69),
)
# CIFAR-100: only the end points of the mean-classifier accuracy are quoted in our notes
# (K+1 = 128 and 1024); the other entries are left empty rather than guessed.
PAPER_CIFAR100: tuple[tuple[int, float], ...] = ((128, 32.74), (1024, 37.50))

# Verdict rules (see :func:`claims`). A trend is the least-squares slope of a metric against
# log2(K+1), fitted per seed; its 95% interval is the Student-t interval over seeds
# (:func:`negatives.stats.trend`). A rise of less than this many points per doubling of K+1
# counts as none (ours; for scale, the paper's CIFAR-10 mean-classifier accuracy rises by about
# 1.8 points per doubling).
MIN_ACCURACY_SLOPE = 0.25

# Columns of one row of :func:`scan_bounds` that the chapter's figures and tables use.
TERMS = (
    "info_loss",
    "sup_loss",
    "sub_loss",
    "upsilon",
    "upsilon_exact",
    "tau",
    "tau_exact",
    "collision_term",
    "d_f",
    "curl_bound",
    "proposed_bound",
    "curl_sup_upper_bound",
    "proposed_sup_upper_bound",
    "proposed_sup_upper_bound_exact_upsilon",
    "proposed_sup_upper_bound_naive_upsilon",
    "centroid_accuracy",
    "linear_accuracy",
)


@dataclass(frozen=True)
class Params(ChapterParams):
    """Chapter 3 parameters: the K-scan's (``scan``, flat in the notebook) and the evaluation's.

    * ``scan``: :class:`negatives.chapters.kscan.Params` (data set, K values, modes, seeds,
      epochs, temperature, device, latent-class settings, ``results_dir``, ...), embedded in
      chapter 4 too, so that both train the same encoders.
    * ``num_passes``: passes over the test set in shuffled batches of K+1 (the authors' 10).
    * ``num_augmentations``: augmented views averaged into the mean classifier μ_c and into
      z̄(x) of d(f) (image data only; latent-class vectors are not augmented).
    * ``eval_seed``: seed of the evaluation's augmentations, positives and batches.
    * ``mean_train_size``: training images (stratified) whose augmented features make the mean
      classifier μ_c (None: all); 1,000 per class estimate a class mean well.
    """

    profile: str
    scan: kscan.Params
    num_passes: int
    num_augmentations: int
    eval_seed: int
    mean_train_size: int | None

    def __post_init__(self) -> None:
        cfg.check_profile(self.profile)
        cfg.check_int("num_passes", self.num_passes, 1, MAX_PASSES)
        cfg.check_int("num_augmentations", self.num_augmentations, 1, bounds.MAX_AUGMENTATIONS)
        cfg.check_int("eval_seed", self.eval_seed, 0)
        check_optional_int("mean_train_size", self.mean_train_size)
        # A batch of K+1 test samples must fit in the test set (bound_terms needs K+1 <= N).
        for name, ks, n in (
            ("latent_num_negatives", self.scan.latent_num_negatives, self.scan.latent_test_size),
            ("num_negatives", self.scan.num_negatives, self.scan.test_size),
        ):
            if n is not None and max(ks) + 1 > n:
                size = "latent_test_size" if name.startswith("latent") else "test_size"
                raise ValueError(
                    f"{name}={list(ks)}: K+1 = {max(ks) + 1} exceeds {size}={n}; the bound "
                    "terms are evaluated on test batches of K+1 samples"
                )

    def load_eval_data(self) -> Dataset:
        """The images of the image scan's bound terms: ``mean_train_size`` training images
        for the class means and the K-scan's test images."""
        return load_dataset(
            self.scan.dataset,
            self.scan.data_root,
            train_size=self.mean_train_size,
            test_size=self.scan.test_size,
        )

    def store(self) -> RunStore:
        """The run cache under ``results_dir`` (shared with the other chapters)."""
        return RunStore(self.scan.results_dir)

    def evaluation_key(self, config: TrainConfig, data: Dataset) -> dict[str, Any]:
        """What identifies one cached bound evaluation of a run (besides the run itself)."""
        return {
            "data": data.fingerprint,
            "num_negatives": config.negatives_per_query,
            "temperature": config.temperature,
            "num_passes": self.num_passes,
            "num_augmentations": self.num_augmentations,
            "eval_seed": self.eval_seed,
            "mean_train_size": self.mean_train_size,
            "version": EVAL_VERSION,
        }


BOOK = Params(
    profile="book",
    scan=kscan.BOOK,
    num_passes=10,  # the authors' 10 passes and 5 x 2 augmentations (conf/experiment/evaluation)
    num_augmentations=4,
    eval_seed=0,
    mean_train_size=10000,
)
Params.profiles = {
    "smoke": BOOK.replace(
        profile="smoke",
        scan=kscan.Params.profiles["smoke"],
        num_passes=2,
        num_augmentations=2,
        mean_train_size=None,
    ),
    "book": BOOK,
    "full": BOOK.replace(
        profile="full",
        scan=kscan.Params.profiles["full"],
        num_augmentations=10,
        mean_train_size=None,
    ),
}


# ---------------------------------------------------------------------------------------------
# Per-run evaluation


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
    rows = []
    for run, (_, probe_row) in zip(runs_, probe_rows.iterrows(), strict=True):
        terms = evaluate_run(run, eval_data, params)
        rows.append({**probe_row.to_dict(), **terms})
    df = pd.DataFrame(rows)
    df.insert(0, "data", kind)
    df.insert(1, "dataset", data.name)
    df.insert(2, "num_classes", data.num_classes)
    return df


# ---------------------------------------------------------------------------------------------
# Tables


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


# ---------------------------------------------------------------------------------------------
# The chapter's tables


def plan(P: Params) -> list[tuple[TrainConfig, Dataset]]:
    """Every training run of the chapter with its data: the K-scan's (:func:`kscan.plan`)."""
    return kscan.plan(P.scan)


def run(P: Params, store: RunStore | None = None) -> dict[str, Any]:
    """Every table of the chapter: the per-run ``rows`` of both scans, their ``summary`` over
    seeds, the ``upsilon`` and paper ``comparison`` tables, and the ``verdicts``."""
    store = store or P.store()
    workers = execute(P, "bounds", plan, store)
    rows = pd.concat(
        [scan_bounds(P, kind, store=store, workers=workers) for kind in DATA_KINDS],
        ignore_index=True,
    )
    kinds = [k for k in DATA_KINDS if k in set(rows["data"])]
    T = {
        "rows": rows,
        "summary": stats.summarize_over_seeds(rows, TERMS),
        "upsilon": upsilon_table(rows),
        "comparison": paper_comparison(rows),
        "kinds": kinds,
        "labels": {k: kscan.data_label(rows, k) for k in kinds},
    }
    if "image" in kinds:  # what the image encoders' probes are measured against
        T["baselines"] = probes.baselines(P.scan.base_config(), P.scan.load_probe_data(), store)
    T["verdicts"] = claims(T)
    return T


# ---------------------------------------------------------------------------------------------
# Claims


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


# ---------------------------------------------------------------------------------------------
# The numbers the page quotes


def worst_float64_upsilon(upsilon: pd.DataFrame) -> dict[str, Any]:
    """The latent scan's K where the authors' float64 υ is furthest from the exact value."""
    lat = upsilon[(upsilon["data"] == "latent") & (upsilon["exact (uniform)"] > 0)].copy()
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


def numbers(P: Params, T: dict[str, Any]) -> dict[str, Any]:
    """Every number the page quotes, by its glue name."""
    rows, summary, upsilon, verdict_rows = T["rows"], T["summary"], T["upsilon"], T["verdicts"]
    kinds, label = T["kinds"], T["labels"]
    modes = kscan.MODE_NAMES
    out: dict[str, Any] = {
        "bounds_runs": len(rows),
        "bounds_seeds": int(rows["seed"].nunique()),
        "bounds_t": float(P.scan.temperature),
        "bounds_passes": P.num_passes,
        "bounds_augmentations": P.num_augmentations,
        "bounds_min_slope": MIN_ACCURACY_SLOPE,
        "bounds_lr_scaling": P.scan.lr_scaling,
    }
    for kind in kinds:
        g = rows[rows["data"] == kind]
        out[f"bounds_{kind}_label"] = label[kind]
        out[f"bounds_{kind}_k1_range"] = f"{g.K.min() + 1} to {g.K.max() + 1}"
        out[f"bounds_{kind}_modes"] = " and ".join(modes[m] for m in sorted(set(g["mode"])))
    out["bounds_latent_c"] = int(rows.loc[rows["data"] == "latent", "num_classes"].iloc[0])

    # what the image encoders learn: the largest K's probe (first mode) against the baselines
    out.update(learned_numbers("bounds", rows, T.get("baselines")))
    out["bounds_image_epochs"] = P.scan.epochs

    acc = verdict_rows[verdict_rows["key"] == "accuracy"]
    out["bounds_max_slope_half_width"] = float(((acc["high"] - acc["low"]) / 2).max())
    lr_rows = rows[rows["data"] == "image"].drop_duplicates("batch_size").sort_values("batch_size")
    out["bounds_lr_rule"] = ", ".join(
        f"B = {int(b)}: lr = {lr:.2g}" for b, lr in zip(lr_rows.batch_size, lr_rows.lr, strict=True)
    )

    worst = worst_float64_upsilon(upsilon)
    if worst["relative_error"] > 0.01:
        trap = (
            f"At K+1 = {worst['K+1']} the float64 sum gives {worst['float64']:.3e} where the "
            f"exact value is {worst['exact']:.3e}, {worst['ratio']:.3g} times the exact value."
        )
    else:
        trap = (
            f"With C = {worst['C']} the float64 sum is still accurate at every K of this scan "
            f"(relative error at most {worst['relative_error']:.1e}); the cancellation needs "
            "many more classes (see the coupon collector's chapter)."
        )
    out["bounds_trap_sentence"] = trap
    lat = upsilon[upsilon["data"] == "latent"]
    out["bounds_latent_top_upsilon"] = float(lat.iloc[-1]["empirical"])
    out["bounds_latent_low_upsilon"] = float(lat.iloc[0]["empirical"])
    out["bounds_latent_low_k1"] = int(lat.iloc[0]["K+1"])

    # the upper bounds on L_sup at the largest K of each data set (first mode listed)
    for kind in kinds:
        s = summary[
            (summary["data"] == kind) & (summary["K"] == rows.loc[rows.data == kind, "K"].max())
        ]
        s = s[s["mode"] == s["mode"].iloc[0]].set_index("term")
        for term, key in (
            ("curl_sup_upper_bound", "curl_ub"),
            ("proposed_sup_upper_bound_exact_upsilon", "prop_ub"),
            ("sup_loss", "sup"),
            ("tau", "tau"),
        ):
            r = s.loc[term]
            value = math.inf if r["n_inf"] == r["n"] else r["mean"]
            out[f"bounds_{kind}_top_{key}"] = vd.format_number(value, ".3g")
        out[f"bounds_{kind}_top_k1"] = int(s["K+1"].iloc[0])

    # where the CURL number (authors' form) lies below the measured L_sup: no upper bound there
    wide = stats.wide_summary(rows, ["curl_sup_upper_bound", "sup_loss"])
    low = wide[wide["curl_sup_upper_bound"] < wide["sup_loss"]]
    where = "; ".join(f"{label[r.data]}, {r['mode']}, K+1 = {r['K+1']}" for _, r in low.iterrows())
    out["bounds_curl_below_sup"] = (
        f"In this run it lies below the measured L_sup at: {where}."
        if where
        else "In this run it never lies below the measured L_sup."
    )
    for key, name in (("curl", "curl"), ("proposed", "prop")):
        v = verdict_rows[verdict_rows["key"] == key]
        out[f"bounds_verdict_{name}"] = "; ".join(
            f"{label[r.data]}, {modes[r.mode]}: {r.verdict}" for r in v.itertuples()
        )
    out.update(vd.count_numbers("bounds", verdict_rows))
    below = verdict_rows[verdict_rows["key"] == "lower bound"]
    out["bounds_below_all"] = (
        "in every run"
        if (below["verdict"] == vd.REPRODUCED).all()
        else "not in every run (see the table)"
    )
    out["bounds_verdicts"] = vd.records(T["verdicts"])  # for the summary on the first page
    out["bounds_rerun"] = P.papermill_command("bounds")
    out["bounds_figure_runs"] = json.dumps(figure_runs(P, T))
    return out


def learned_numbers(
    prefix: str, rows: pd.DataFrame, baselines: dict[str, dict[str, Any]] | None
) -> dict[str, float]:
    """``<prefix>_image_top_accuracy``: the mean linear probe of the image encoders at the
    largest K (the first mode of the scan), ``<prefix>_pixels`` and ``<prefix>_random``: the
    raw-pixel and random-encoder probes, and the gains over both (points; NaN without image
    runs)."""
    image = rows[rows["data"] == "image"]
    if baselines is None or not len(image):
        nan = math.nan
        top = pixels = random = nan
    else:
        g = image[image["mode"] == image["mode"].iloc[0]]
        top = float(g.loc[g["K"] == g["K"].max(), "linear_accuracy"].mean())
        pixels, random = (float(m["linear_accuracy"]) for m in baselines.values())
    return {
        f"{prefix}_image_top_accuracy": top,
        f"{prefix}_pixels": pixels,
        f"{prefix}_random": random,
        f"{prefix}_gain_pixels": top - pixels,
        f"{prefix}_gain_random": top - random,
    }


def figure_runs(P: Params, T: dict[str, Any]) -> dict[str, list[str]]:
    """The run ids behind each figure of the page, by the figure's name (the reproducibility
    page lists them: a figure traces to its runs in the cache)."""
    rows = T["rows"]
    every = sorted(set(rows["run_id"]))
    # the upper bounds are drawn for the first way of varying K of each data set
    first = [
        rows[
            (rows["data"] == kind)
            & (rows["mode"] == min(set(rows.loc[rows["data"] == kind, "mode"])))
        ]
        for kind in T["kinds"]
    ]
    upper = sorted({r for g in first for r in g["run_id"]})
    names = ("accuracy", "losses", "probabilities", "lower")
    return {**{f"fig-bounds-{n}": every for n in names}, "fig-bounds-upper": upper}
