"""Chapter 4, more negatives do not hurt (Awasthi, Dikkala & Kamath 2022).

The chapter's shape (see ARCHITECTURE.md): :class:`Params` and its profiles, :func:`run`,
:func:`claims`, :func:`numbers`. The population part scans the exact optimum of the latent-class
contrastive loss (:func:`negatives.theory.optimum`, cached in the run cache) over class counts
``C``, negatives ``K``, priors, scales and constraints, and tabulates it (:func:`main_scan`,
:func:`variant_scan`, :func:`skew_scan`, :func:`optimum_grams`); the finite-sample part trains
the K-scan shared with chapter 3 (:mod:`negatives.chapters.kscan`) on the synthetic latent-class
data and on the image data set, and summarises it over seeds (:func:`kscan_accuracy`,
:func:`accuracy_summary`, :func:`k_comparison`, :func:`departures`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from negatives import config as cfg
from negatives import probes, stats, theory
from negatives import verdicts as vd
from negatives.chapters import kscan
from negatives.chapters.params import ChapterParams, check_list
from negatives.data import Dataset, zipf_probs
from negatives.runner import Workers
from negatives.runs import RunStore
from negatives.sweep import execute
from negatives.train import TrainConfig

PRIORS: tuple[str, ...] = ("uniform", "zipf")
MAX_CLASSES = 200  # C = 100 takes ~1-2 s per random start on one idle CPU core
MAX_NEGATIVES = 2**16
CACHE_VERSION = 1  # bump when theory's numbers change, so that cached scans are recomputed
SIMPLEX_TOLERANCE = 1e-4  # max |G - G_simplex| below which we call an optimum "the simplex"
FLAT_TOLERANCE = 1e-6  # change of the optimum's supervised loss (nats) that counts as none
PAPER = "Awasthi, Dikkala & Kamath (2022)"

QUADRATURE_CASES: tuple[tuple[int, int, float], ...] = (
    (2, 9, 10.0),
    (3, 5, 1.0),
    (4, 7, 3.0),
    (3, 40, 1.0),
    (5, 12, 2.0),
    (6, 6, 0.5),
)  # (C, K, scale s) of the quadrature check: small enough to enumerate


@dataclass(frozen=True)
class Params(ChapterParams):
    """Chapter 4 parameters, each one a papermill parameter of ``notebooks/more_negatives.ipynb``.

    * ``num_classes``: the class counts C of the main scan (uniform and Zipf priors).
    * ``population_num_negatives``: the K values of every population scan.
    * ``dim``: representation dimension; ``None`` uses ``d = C`` for each C (must be >= C - 1).
    * ``scales``: inverse temperatures s; the first is the main scan's.
    * ``constraints``: ``"sphere"`` (|v| = 1) and/or ``"ball"`` (|v| <= 1); the first is the
      main scan's. The paper's constraint could not be checked, hence both.
    * ``zipf_exponent``: the non-uniform prior rho_c proportional to c^-a (ours, not the paper's).
    * ``skew_exponents``: Zipf exponents of the skew sweep (C = ``variant_num_classes``, main
      scale and constraint, smallest and largest K).
    * ``variant_num_classes``: C of the constraint x scale x prior comparison.
    * ``heatmap_num_classes``: C of the Gram-matrix heatmaps.
    * ``restarts``: random starts per optimisation (the lowest loss is kept).
    * ``seed``: seed of the random starts and of the Monte-Carlo check.
    * ``accuracy_margin``: accuracy points within which a drop at the largest K counts as "no
      degradation" in :func:`k_comparison`'s verdict rule.
    * ``quadrature_cases``, ``quadrature_samples``: how many of :data:`QUADRATURE_CASES` the
      quadrature check runs, with how many Monte-Carlo samples.
    * ``scan``: the K-scan shared with chapter 3 (:class:`negatives.chapters.kscan.Params`,
      its parameters flat in the notebook under chapter 3's names), so both chapters train
      the same encoders; its ``results_dir`` also caches the population scans.
    """

    profile: str
    num_classes: tuple[int, ...]
    population_num_negatives: tuple[int, ...]
    dim: int | None
    scales: tuple[float, ...]
    constraints: tuple[str, ...]
    zipf_exponent: float
    skew_exponents: tuple[float, ...]
    variant_num_classes: int
    heatmap_num_classes: int
    restarts: int
    seed: int
    accuracy_margin: float
    quadrature_cases: int
    quadrature_samples: int
    scan: kscan.Params

    def __post_init__(self) -> None:
        cfg.check_profile(self.profile)
        num_classes = cfg.check_int_list("num_classes", self.num_classes, minimum=2)
        if max(num_classes) > MAX_CLASSES:
            raise ValueError(f"num_classes={list(num_classes)}: each must be <= {MAX_CLASSES}")
        self.set("num_classes", tuple(sorted(set(num_classes))))
        name = "population_num_negatives"
        ks = cfg.check_int_list(name, self.population_num_negatives, minimum=1)
        if max(ks) > MAX_NEGATIVES:
            raise ValueError(f"{name}={list(ks)}: each must be <= {MAX_NEGATIVES}")
        self.set(name, tuple(sorted(set(ks))))
        cfg.check_int("variant_num_classes", self.variant_num_classes, 2, MAX_CLASSES)
        cfg.check_int("heatmap_num_classes", self.heatmap_num_classes, 2, 30)
        if self.dim is not None:
            cfg.check_int("dim", self.dim, minimum=1)
            needed = max(*self.num_classes, self.variant_num_classes, self.heatmap_num_classes) - 1
            if self.dim < needed:
                raise ValueError(
                    f"dim={self.dim} is too small: the regular simplex of the largest class count "
                    f"needs dim >= {needed} (or leave dim=None for d = C)"
                )
        self.set("scales", check_list("scales", self.scales, _check_scale))
        self.set("constraints", check_list("constraints", self.constraints, _check_constraint))
        self.set("zipf_exponent", cfg.check_float("zipf_exponent", self.zipf_exponent, 0.0, 3.0))
        skew = check_list("skew_exponents", self.skew_exponents, _check_exponent)
        self.set("skew_exponents", tuple(sorted(set(skew))))
        cfg.check_int("restarts", self.restarts, 1, 20)
        cfg.check_int("seed", self.seed, minimum=0)
        cfg.check_float("accuracy_margin", self.accuracy_margin, 0.0, 100.0)
        cfg.check_int("quadrature_cases", self.quadrature_cases, 1, len(QUADRATURE_CASES))
        cfg.check_int("quadrature_samples", self.quadrature_samples, 100)

    @property
    def main_scale(self) -> float:
        return self.scales[0]

    @property
    def main_constraint(self) -> str:
        return self.constraints[0]


def _check_scale(name: str, value: Any) -> float:
    return cfg.check_float(name, value, 0.0, 1000.0, strict_minimum=True)


def _check_constraint(name: str, value: Any) -> str:
    return cfg.check_choice(name, value, theory.CONSTRAINTS)


def _check_exponent(name: str, value: Any) -> float:
    return cfg.check_float(name, value, 0.0, 3.0)


BOOK = Params(
    profile="book",
    num_classes=(2, 3, 5, 10, 30, 100),
    # log-spaced up to 1024 at about a minute of CPU for C = 100
    population_num_negatives=(1, 2, 4, 16, 64, 256, 1024),
    dim=None,
    scales=(1.0, 10.0),
    constraints=("sphere", "ball"),
    zipf_exponent=1.0,
    skew_exponents=(0.5, 1.0, 1.5, 2.0),
    variant_num_classes=10,
    heatmap_num_classes=6,
    restarts=2,
    seed=0,
    accuracy_margin=1.0,
    quadrature_cases=6,
    quadrature_samples=100_000,
    scan=kscan.BOOK,
)
Params.profiles = {
    "smoke": BOOK.replace(
        profile="smoke",
        num_classes=(2, 4),
        population_num_negatives=(1, 32),
        variant_num_classes=3,
        heatmap_num_classes=4,
        skew_exponents=(1.0, 2.0),
        restarts=1,
        quadrature_cases=3,
        quadrature_samples=20_000,
        scan=kscan.Params.profiles["smoke"],
    ),
    "book": BOOK,
    "full": BOOK.replace(
        profile="full",
        num_classes=(2, 3, 5, 10, 20, 30, 50, 100),
        population_num_negatives=tuple(2**i for i in range(13)),
        variant_num_classes=30,
        heatmap_num_classes=10,
        restarts=3,
        scan=kscan.Params.profiles["full"],
    ),
}


# ---------------------------------------------------------------------------------------------
# the population scans, cached


def _exponent(params: Params, prior: str) -> float:
    """The Zipf exponent of a scan row's prior: ``"uniform"`` is the exponent 0."""
    cfg.check_choice("prior", prior, PRIORS)
    return 0.0 if prior == "uniform" else params.zipf_exponent


def prior_label(params: Params, prior: str) -> str:
    exponent = _exponent(params, prior)
    return "uniform" if exponent == 0.0 else f"Zipf a={exponent:g}"


def _dim(params: Params, num_classes: int) -> int:
    return num_classes if params.dim is None else params.dim


def _store(params: Params) -> RunStore:
    """The run cache of the K-scan, which also keeps the population scans."""
    return RunStore(params.scan.results_dir)


def optimum_row(
    params: Params,
    num_classes: int,
    num_negatives: int,
    prior: str,
    scale: float,
    constraint: str,
    store: RunStore | None = None,
) -> dict[str, Any]:
    """:func:`negatives.theory.optimum` under ``prior`` (``"uniform"``, or ``"zipf"`` with
    ``params.zipf_exponent``), cached in the run cache (``store``, default the K-scan's) by its
    arguments."""
    row = (store or _store(params)).cached(
        "optimum",
        theory.optimum,
        version=CACHE_VERSION,
        num_classes=num_classes,
        num_negatives=num_negatives,
        dim=_dim(params, num_classes),
        class_probs=list(zipf_probs(num_classes, _exponent(params, prior))),
        scale=scale,
        constraint=constraint,
        seed=params.seed,
        restarts=params.restarts,
    )
    return {"C": row["C"], "K": row["K"], "prior": prior, **row}


def optimum_scan(
    params: Params,
    num_classes: Iterable[int],
    priors: Iterable[str],
    scales: Iterable[float],
    constraints: Iterable[str],
    store: RunStore | None = None,
) -> pd.DataFrame:
    """:func:`optimum_row` over the product of the arguments and ``params.population_num_negatives``."""
    rows = [
        optimum_row(params, c, k, prior, s, con, store)
        for prior in priors
        for con in constraints
        for s in scales
        for c in num_classes
        for k in params.population_num_negatives
    ]
    return pd.DataFrame(rows)


def main_scan(params: Params, store: RunStore | None = None) -> pd.DataFrame:
    """Every C of ``num_classes`` and K, uniform and Zipf priors, the main scale and constraint."""
    return optimum_scan(
        params, params.num_classes, PRIORS, [params.main_scale], [params.main_constraint], store
    )


def variant_scan(params: Params, store: RunStore | None = None) -> pd.DataFrame:
    """C = ``variant_num_classes``: every constraint x scale x prior, over K."""
    return optimum_scan(
        params, [params.variant_num_classes], PRIORS, params.scales, params.constraints, store
    )


def skew_scan(params: Params, store: RunStore | None = None) -> pd.DataFrame:
    """How the Zipf exponent changes the K-dependence: C = ``variant_num_classes``, the main
    scale and constraint, the smallest and the largest K, each exponent of ``skew_exponents``."""
    c = params.variant_num_classes
    k_lo, k_hi = min(params.population_num_negatives), max(params.population_num_negatives)
    rows = []
    for a in params.skew_exponents:
        p = params.replace(zipf_exponent=a)
        lo = optimum_row(p, c, k_lo, "zipf", params.main_scale, params.main_constraint, store)
        hi = optimum_row(p, c, k_hi, "zipf", params.main_scale, params.main_constraint, store)
        rho = zipf_probs(c, a)
        rows.append(
            {
                "Zipf exponent a": a,
                "rho_max / rho_min": rho[0] / rho[-1],
                "simplex distance (K min)": lo["simplex distance"],
                "simplex distance (K max)": hi["simplex distance"],
                "supervised loss (K min)": lo["supervised loss"],
                "supervised loss (K max)": hi["supervised loss"],
                "change (%)": 100 * (hi["supervised loss"] / lo["supervised loss"] - 1),
                "balanced sup. loss (K min)": lo["balanced supervised loss"],
                "balanced sup. loss (K max)": hi["balanced supervised loss"],
                "balanced change (%)": 100
                * (hi["balanced supervised loss"] / lo["balanced supervised loss"] - 1),
                "min accuracy": min(lo["accuracy"], hi["accuracy"]),
            }
        )
    return pd.DataFrame(rows)


def optimum_grams(params: Params) -> dict[str, np.ndarray]:
    """Gram matrices at C = ``heatmap_num_classes`` and the largest K: the regular simplex and
    the optimum under each prior (main scale and constraint)."""
    c, k = params.heatmap_num_classes, max(params.population_num_negatives)
    out = {"regular simplex": theory.simplex_gram(c).numpy()}
    for prior in PRIORS:
        res = theory.optimal_representation(
            c,
            k,
            _dim(params, c),
            zipf_probs(c, _exponent(params, prior)),
            scale=params.main_scale,
            constraint=params.main_constraint,
            seed=params.seed,
            restarts=params.restarts,
        )
        out[f"optimum, {prior_label(params, prior)}"] = res.gram.numpy()
    return out


def variant_summary(variants: pd.DataFrame) -> pd.DataFrame:
    """For each prior x constraint x scale: the metrics at the smallest and the largest K."""
    rows = []
    for (prior, con, s), g in variants.groupby(["prior", "constraint", "scale"], sort=False):
        g = g.sort_values("K")
        first, last = g.iloc[0], g.iloc[-1]
        rows.append(
            {
                "prior": prior,
                "constraint": con,
                "scale s": s,
                "K range": f"{int(first['K'])}-{int(last['K'])}",
                "simplex distance (K min)": first["simplex distance"],
                "simplex distance (K max)": last["simplex distance"],
                "supervised loss (K min)": first["supervised loss"],
                "supervised loss (K max)": last["supervised loss"],
                "balanced sup. loss (K min)": first["balanced supervised loss"],
                "balanced sup. loss (K max)": last["balanced supervised loss"],
                "min accuracy over K": g["accuracy"].min(),
                "min norm over K": g["min norm"].min(),
            }
        )
    return pd.DataFrame(rows)


def timing_table(scan: pd.DataFrame) -> pd.DataFrame:
    """Seconds per optimisation (all restarts) by C, as measured in this run."""
    return (
        scan.groupby("C")["seconds"]
        .agg(["mean", "max", "count"])
        .rename(columns={"mean": "mean s", "max": "max s", "count": "optimisations"})
        .reset_index()
    )


# ---------------------------------------------------------------------------------------------
# finite samples: the K-scan shared with chapter 3

SCAN_KINDS: tuple[str, ...] = ("latent", "image")
# The probes of negatives.probes.evaluate_model (backbone features) that the chapter reports.
METRICS: dict[str, str] = {"linear_accuracy": "linear probe", "mean_accuracy": "mean classifier"}
MODE_NAMES = kscan.MODE_NAMES


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
    _, df = kscan.run_scan(
        scan, data, store, desc=f"K-scan ({kind})", probe_data=probe_data, workers=workers
    )
    df.insert(0, "data", kind)
    df.insert(1, "dataset", data.name)
    df.insert(2, "num_classes", data.num_classes)
    return df


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
        by_seed = g.pivot_table(index="seed", columns="K", values=metric, aggfunc="mean")
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
        for name, k in (("best", k_best), ("min", k_min)):
            d = (by_seed[k_max] - by_seed[k]).dropna()
            mean, low, high = stats.mean_interval(d.tolist(), confidence)
            row.update({f"{name}_n": len(d), f"{name}_mean": mean})
            row.update({f"{name}_low": low, f"{name}_high": high})
        row["margin"] = margin
        row["verdict"] = vd.decide(row["best_low"], row["best_high"], vd.above(-margin))
        if f"{metric.removesuffix('_accuracy')}_correct" in g.columns:
            col = f"{metric.removesuffix('_accuracy')}_correct"
            top, best = g[g["K"] == k_max].set_index("seed"), g[g["K"] == k_best].set_index("seed")
            seeds = sorted(set(top.index) & set(best.index))
            top, best = top.loc[seeds], best.loc[seeds]
            _, row["best_test_low"], row["best_test_high"] = stats.paired_bootstrap(
                probes.correct_matrix(top, col), probes.correct_matrix(best, col)
            )
        out.append(row)
    return pd.DataFrame(out)


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


# ---------------------------------------------------------------------------------------------
# the chapter


def plan(P: Params) -> list[tuple[TrainConfig, Dataset]]:
    """Every training run of the chapter with its data: the K-scan's (:func:`kscan.plan`); the
    population optima are computed in the notebook's process."""
    return kscan.plan(P.scan)


def run(P: Params, store: RunStore | None = None) -> dict[str, Any]:
    """Every table of the chapter: the population part (``quad``, ``main``, ``variants``,
    ``skew``, ``grams``, with ``compute_seconds``, and ``timing``), the K-scan shared with
    chapter 3 (``scan_rows``, ``acc``, ``comparisons``, ``scan_labels``, with ``scan_seconds``),
    and the ``verdicts`` (:func:`claims`)."""
    store = store or _store(P)  # the K-scan's run cache keeps the population optima too
    workers = execute(P, "more_negatives", plan, store)
    t0 = time.perf_counter()
    cases = QUADRATURE_CASES[: P.quadrature_cases]
    T: dict[str, Any] = {
        "quad": pd.DataFrame(theory.quadrature_check(cases, P.quadrature_samples, P.seed)),
        "main": main_scan(P, store),
        "variants": variant_scan(P, store),
        "skew": skew_scan(P, store),
        "grams": optimum_grams(P),
    }
    T["compute_seconds"] = time.perf_counter() - t0
    T["timing"] = timing_table(pd.concat([T["main"], T["variants"]]))
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


# ---------------------------------------------------------------------------------------------
# claims

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
        f"{len(uni)} optimisations: C = {sorted(int(c) for c in uni['C'].unique())}, K = "
        f"{int(uni['K'].min())}..{int(uni['K'].max())}, "
        f"{'/'.join(sorted(set(uni['constraint'])))}, s = "
        f"{sorted(float(s) for s in uni['scale'].unique())}"
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
            setting += f", and the Zipf exponents {[float(a) for a in skew['Zipf exponent a']]}"
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


# ---------------------------------------------------------------------------------------------
# the page's numbers


def numbers(P: Params, T: dict[str, Any]) -> dict[str, Any]:
    """Every number the page quotes, by its glue name."""
    main, variants, skew = T["main"], T["variants"], T["skew"]
    k_min, k_max = min(P.population_num_negatives), max(P.population_num_negatives)
    c_max = max(P.num_classes)
    estimate = dict(zip(T["verdicts"]["key"], T["verdicts"]["estimate"], strict=True))
    both = _optima(main, variants)
    out: dict[str, Any] = {
        "morenegatives_quad_maxdiff": float(T["quad"]["|integral - enumeration|"].max()),
        "morenegatives_quad_maxz": float(T["quad"]["(integral - MC) / s.e."].abs().max()),
        "morenegatives_kmin": int(k_min),
        "morenegatives_kmax": int(k_max),
        "morenegatives_cmax": int(c_max),
        "morenegatives_main_scale": float(P.main_scale),
        "morenegatives_main_constraint": P.main_constraint,
        "morenegatives_uniform_n": int((both["prior"] == "uniform").sum()),
        "morenegatives_uniform_maxdist": float(estimate["structure"]),
        "morenegatives_uniform_supchange": float(estimate["flat"]),
        "morenegatives_uniform_minacc": float(estimate["accuracy"]),
    }

    # the Zipf prior from the smallest to the largest K; with two classes every prior's optimum
    # is the antipodal pair, so these use C >= 3
    zipf = both[(both["prior"] == "zipf") & (both["C"] >= 3)]
    first, last = _ends(zipf, "simplex distance")
    sup = _relative_change(zipf, "supervised loss")
    bal = _relative_change(zipf, "balanced supervised loss")
    out |= {
        "morenegatives_zipf_mindist": float(zipf["simplex distance"].min()),
        "morenegatives_zipf_dist_shrinks": int((last < first).sum()),
        "morenegatives_zipf_groups": len(first),
        "morenegatives_zipf_sup_rel_min": float(100 * sup.min()),
        "morenegatives_zipf_sup_rel_max": float(100 * sup.max()),
        "morenegatives_zipf_sup_up": int((sup > 1e-9).sum()),
        "morenegatives_zipf_bal_rel_min": float(100 * bal.min()),
        "morenegatives_zipf_bal_rel_max": float(100 * bal.max()),
        "morenegatives_zipf_minacc": float(zipf["accuracy"].min()),
        "morenegatives_zipf_label": prior_label(P, "zipf"),
    }

    sk = skew.sort_values("Zipf exponent a")
    out |= {
        "morenegatives_skew_amin": float(sk["Zipf exponent a"].iloc[0]),
        "morenegatives_skew_amax": float(sk["Zipf exponent a"].iloc[-1]),
        "morenegatives_skew_change_amin": float(sk["change (%)"].iloc[0]),
        "morenegatives_skew_change_amax": float(sk["change (%)"].iloc[-1]),
        "morenegatives_skew_balchange_amax": float(sk["balanced change (%)"].iloc[-1]),
        "morenegatives_skew_ratio_amax": float(sk["rho_max / rho_min"].iloc[-1]),
        "morenegatives_skew_minacc": float(sk["min accuracy"].min()),
    }

    # sphere against ball (same C, K, prior, scale)
    sphere_ball = ball_min_norm = math.nan
    if len(set(variants["constraint"])) > 1:
        piv = variants.pivot_table(
            index=["prior", "scale", "K"], columns="constraint", values="loss"
        )
        sphere_ball = float((piv["sphere"] - piv["ball"]).abs().max())
    ball = variants[variants["constraint"] == "ball"]
    if len(ball):
        ball_min_norm = float(ball["min norm"].min())
    # the CURL view at the main scale, uniform prior
    curl_c = 10 if 10 in P.num_classes else c_max
    g = main[(main["prior"] == "uniform") & (main["C"] == curl_c)].sort_values("K")
    out |= {
        "morenegatives_sphere_ball_maxdiff": sphere_ball,
        "morenegatives_ball_minnorm": ball_min_norm,
        "morenegatives_variant_c": int(P.variant_num_classes),
        "morenegatives_heatmap_c": int(P.heatmap_num_classes),
        "morenegatives_seconds_cmax": float(T["timing"].set_index("C").loc[c_max, "mean s"]),
        "morenegatives_compute_seconds": float(T["compute_seconds"]),
        "morenegatives_optim_seconds_total": float(both["seconds"].sum()),
        "morenegatives_optim_count": len(both),
        "morenegatives_restarts": int(P.restarts),
        "morenegatives_curl_c": int(curl_c),
        "morenegatives_curl_log10_nocoll": float(g["log10 (1 - tau_K)"].iloc[-1]),
        "morenegatives_curl_log10_first": float(g["log10 CURL bound"].iloc[0]),
        "morenegatives_curl_log10_last": float(g["log10 CURL bound"].iloc[-1]),
        "morenegatives_curl_sup": float(g["supervised loss"].iloc[-1]),
    }

    # the two sections on trained encoders
    rows, margin = T["scan_rows"], P.accuracy_margin
    out |= {
        "more_negatives_scan_runs": len(rows),
        "more_negatives_scan_seeds": int(rows["seed"].nunique()),
        "more_negatives_scan_minutes": float(rows["train_seconds"].sum() / 60),
        "more_negatives_margin": float(margin),
    }
    for kind in SCAN_KINDS:
        g = rows[rows["data"] == kind]
        comp = T["comparisons"][T["comparisons"]["data"] == kind]
        found = departures(comp, margin)
        name = f"more_negatives_{kind}"
        out[f"{name}_label"] = T["scan_labels"][kind]
        out[f"{name}_k_range"] = f"{g.K.min()} to {g.K.max()}"
        out[f"{name}_modes"] = " and ".join(MODE_NAMES[m] for m in sorted(set(g["mode"])))
        out[f"{name}_departures"] = (
            "; ".join(found) + "."
            if found
            else f"none: no comparison moves by more than {margin:g} points with 95% confidence."
        )
        out[f"{name}_verdicts"] = "; ".join(
            f"{METRICS[r.metric]}, {MODE_NAMES[r['mode']]}: {r.best_mean:+.1f} points "
            f"[{r.best_low:+.1f}, {r.best_high:+.1f}], {r.verdict}"
            for _, r in comp.iterrows()
        )
    out["more_negatives_verdicts"] = vd.records(T["verdicts"])  # for the summary on the first page
    out["more_negatives_rerun"] = P.papermill_command("more_negatives")
    out["more_negatives_figure_runs"] = json.dumps(figure_runs(P, T))
    return out


def figure_runs(P: Params, T: dict[str, Any]) -> dict[str, list[str]]:
    """The run ids behind each figure of the page, by the figure's name (the reproducibility
    page lists them). The population figures come from no training run: their optima are
    computed (and cached) by :func:`negatives.theory.optimum`."""
    rows = T["scan_rows"]
    population = ("gram", "simplex", "loss", "variants", "curl")
    out: dict[str, list[str]] = {f"fig-morenegatives-{n}": [] for n in population}
    for kind in ("latent", "image"):
        out[f"fig-morenegatives-{kind}"] = sorted(set(rows.loc[rows["data"] == kind, "run_id"]))
    return out
