"""Chapter 1, the coupon collector's view (Nozawa & Sato 2021, sections 3-4).

Parameters of the chapter (:class:`Params`, one field per papermill parameter) and the
functions that turn :mod:`negatives.bounds` into the chapter's tables. Pure maths, so every
profile runs in seconds; the profile only changes how densely the K axis is sampled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from negatives import bounds
from negatives import config as cfg
from negatives.chapters.params import ChapterParams
from negatives.data import zipf_probs

# Nozawa & Sato (2021), Table 3: ceil(E[K+1]) to draw every class, as published (quotation).
PAPER_TABLE3: tuple[tuple[str, int, int], ...] = (
    ("Binary", 2, 3),
    ("AG News", 4, 9),
    ("CIFAR-10", 10, 30),
    ("CIFAR-100", 100, 519),
    ("Wiki-3029", 3029, 26030),
)

# υ(N) for C = 100 as printed by the authors' public notebook code/notebooks/coupon.ipynb
# (float64 alternating sum); the values for N = 128 and 256 are then hard-coded in their
# bound.ipynb to replace an empirical υ of 0. Quotations, not our results.
PUBLISHED_NOTEBOOK_UPSILON_C100: dict[int, float] = {
    128: 0.0004517171443332115,
    256: 0.0005750103110269027,
    384: 0.10845377001311465,
    512: 0.5531327628081966,
    640: 0.8510308810769567,
    768: 0.956899070354311,
    896: 0.9882414056661265,
    1024: 0.9970649738141432,
}

# Collision probabilities τ_K quoted by Nozawa & Sato (2021) for uniform priors: (C, K, τ_K).
PAPER_TAU: tuple[tuple[int, int, float], ...] = (
    (10, 31, 0.96),
    (100, 127, 0.72),
    (100, 255, 0.92),
    (100, 511, 0.99),
)

PRIORS: tuple[str, ...] = ("uniform", "zipf")
# The C of the two CIFAR data sets the paper trains on: always summarised, whatever num_classes.
REFERENCE_CLASSES: tuple[int, ...] = (10, 100)
MAX_CLASSES = 1000  # exact uniform υ costs ~1 s per point at C = 1000, K ~ 8000
MAX_NEGATIVES = 2**15
MAX_TRAP_CLASSES = 500  # the float64 binomials of the naive sum overflow beyond ~1000


@dataclass(frozen=True)
class Params(ChapterParams):
    """Chapter 1 parameters, each one a papermill parameter of ``notebooks/coupon.ipynb``.

    * ``num_classes``: C of the uniform priors drawn as υ / τ curves.
    * ``max_negatives``: the largest K on the curves (K runs log-spaced from 1).
    * ``grid_points``: how many K values (the only thing the profile changes).
    * ``prior``: ``"zipf"`` adds a non-uniform prior ρ_c ∝ c^{-s} (ours, not the paper's);
      ``"uniform"`` makes that extra prior uniform too.
    * ``prior_num_classes``, ``zipf_exponent``: its C and exponent s.
    * ``trap_num_classes``: C of the naive-versus-exact float64 comparison.
    """

    profile: str
    num_classes: tuple[int, ...]
    max_negatives: int
    grid_points: int
    prior: str
    prior_num_classes: int
    zipf_exponent: float
    trap_num_classes: int

    def __post_init__(self) -> None:
        cfg.check_profile(self.profile)
        num_classes = cfg.check_int_list("num_classes", self.num_classes, minimum=2)
        if max(num_classes) > MAX_CLASSES:
            raise ValueError(f"num_classes={list(num_classes)}: each must be <= {MAX_CLASSES}")
        self.set("num_classes", num_classes)
        self.set(
            "max_negatives", cfg.check_int("max_negatives", self.max_negatives, 1, MAX_NEGATIVES)
        )
        self.set("grid_points", cfg.check_int("grid_points", self.grid_points, 4, 400))
        cfg.check_choice("prior", self.prior, PRIORS)
        self.set(
            "prior_num_classes",
            cfg.check_int("prior_num_classes", self.prior_num_classes, 2, MAX_CLASSES),
        )
        self.set("zipf_exponent", cfg.check_float("zipf_exponent", self.zipf_exponent, 0.0, 3.0))
        self.set(
            "trap_num_classes",
            cfg.check_int("trap_num_classes", self.trap_num_classes, 2, MAX_TRAP_CLASSES),
        )


BOOK = Params(
    profile="book",
    num_classes=(10, 100),
    max_negatives=8192,
    grid_points=64,
    prior="zipf",
    prior_num_classes=100,
    zipf_exponent=1.0,
    trap_num_classes=100,
)
Params.profiles = {
    "smoke": BOOK.replace(profile="smoke", grid_points=24),
    "book": BOOK,
    "full": BOOK.replace(profile="full", grid_points=160),
}


# ---------------------------------------------------------------------------------------------
# priors and grids


def prior_label(params: Params) -> str:
    """How the chapter's extra prior is named in tables and legends."""
    if params.prior == "uniform" or params.zipf_exponent == 0.0:
        return f"uniform, C={params.prior_num_classes} (ours)"
    return f"Zipf s={params.zipf_exponent:g}, C={params.prior_num_classes} (ours)"


def curve_priors(params: Params) -> list[tuple[str, int, dict[str, Any]]]:
    """(label, C, keyword arguments for negatives.bounds) of every curve, uniform ones first."""
    out: list[tuple[str, int, dict[str, Any]]] = []
    for c in sorted(set(params.num_classes)):
        out.append((f"uniform, C={c}", c, {"num_classes": c}))
    exponent = params.zipf_exponent if params.prior == "zipf" else 0.0
    out.append(
        (
            prior_label(params),
            params.prior_num_classes,
            {"class_probs": list(zipf_probs(params.prior_num_classes, exponent))},
        )
    )
    return out


def negatives_grid(max_negatives: int, points: int) -> np.ndarray:
    """Integers K from 1 to ``max_negatives``, about log-spaced, without repeats."""
    return np.unique(np.round(np.geomspace(1, max_negatives, points)).astype(int))


# ---------------------------------------------------------------------------------------------
# tables


def expected_draws_table(params: Params) -> pd.DataFrame:
    """The paper's Table 3 (E[K+1] to draw every class) with our exact values beside it."""
    rows = []
    for name, c, published in PAPER_TABLE3:
        e = bounds.expected_draws_to_cover(num_classes=c)
        rows.append((name, c, "uniform", e, math.ceil(e), published))
    label, c, kwargs = curve_priors(params)[-1]
    e = bounds.expected_draws_to_cover(**kwargs)
    rows.append((f"{label}", c, label.split(",")[0], e, math.ceil(e), pd.NA))
    df = pd.DataFrame(
        rows,
        columns=["data set", "C", "prior", "E[K+1] (ours)", "ceil (ours)", "paper, Table 3"],
    )
    df["paper, Table 3"] = df["paper, Table 3"].astype("Int64")
    return df


def paper_tau_table() -> pd.DataFrame:
    """The paper's τ_K values (uniform priors) beside ours, with the coverage υ(K+1) at that K."""
    rows = [
        (
            c,
            k,
            k + 1,
            published,
            bounds.collision_probability(k, num_classes=c),
            bounds.coverage_probability(k + 1, num_classes=c),
        )
        for c, k, published in PAPER_TAU
    ]
    return pd.DataFrame(
        rows, columns=["C", "K", "K+1", "τ_K (paper)", "τ_K (ours)", "υ(K+1) (ours)"]
    )


def coverage_collision_curves(params: Params) -> pd.DataFrame:
    """υ(K+1) and τ_K on the K grid for every prior: long format (prior, C, K, upsilon, tau)."""
    ks = negatives_grid(params.max_negatives, params.grid_points)
    rows = []
    for label, c, kwargs in curve_priors(params):
        for k in ks.tolist():
            rows.append(
                (
                    label,
                    c,
                    k,
                    bounds.coverage_probability(k + 1, **kwargs),
                    bounds.collision_probability(k, **kwargs),
                )
            )
    return pd.DataFrame(rows, columns=["prior", "C", "K", "upsilon", "tau"])


def coverage_milestones(params: Params) -> pd.DataFrame:
    """Per prior: E[K+1], the smallest K with υ(K+1) >= 0.5 and >= 0.99, and τ at those K.

    Always includes uniform C = 10 and C = 100 (CIFAR-10/100) besides the chosen curves.
    """
    priors = [(f"uniform, C={c}", c, {"num_classes": c}) for c in REFERENCE_CLASSES]
    priors += [p for p in curve_priors(params) if p[0] not in {q[0] for q in priors}]
    rows = []
    for label, c, kwargs in priors:
        k50 = bounds.min_draws_for_coverage(0.5, **kwargs) - 1
        k99 = bounds.min_draws_for_coverage(0.99, **kwargs) - 1
        rows.append(
            (
                label,
                c,
                bounds.expected_draws_to_cover(**kwargs),
                k50,
                bounds.collision_probability(k50, **kwargs),
                k99,
                bounds.collision_probability(k99, **kwargs),
            )
        )
    return pd.DataFrame(
        rows,
        columns=["prior", "C", "E[K+1]", "K for υ≥0.5", "τ at that K", "K for υ≥0.99", "τ at K99"],
    )


def trap_draws(num_classes: int) -> list[int]:
    """N = K+1 values of the trap table: the authors' grid 128, 256, ..., 1024 for C = 100."""
    if num_classes == 100:
        return sorted(PUBLISHED_NOTEBOOK_UPSILON_C100)
    return [max(num_classes, round(1.28 * num_classes * i)) for i in range(1, 9)]


def naive_vs_exact(num_classes: int, draws: list[int] | np.ndarray) -> pd.DataFrame:
    """υ(N) exactly and by the two float64 forms of the alternating sum, with relative errors."""
    rows = []
    for n in [int(x) for x in draws]:
        exact = bounds.coverage_probability(n, num_classes)
        notebook = bounds.naive_coverage_probability(n, num_classes, "notebook")
        direct = bounds.naive_coverage_probability(n, num_classes, "direct")
        rows.append(
            (
                n,
                exact,
                notebook,
                direct,
                abs(notebook - exact) / exact if exact > 0 else math.inf,
                abs(direct - exact) / exact if exact > 0 else math.inf,
            )
        )
    return pd.DataFrame(
        rows,
        columns=[
            "N = K+1",
            "exact",
            "naive (notebook form)",
            "naive (direct form)",
            "rel. error (notebook)",
            "rel. error (direct)",
        ],
    )


def trap_table(params: Params) -> pd.DataFrame:
    """The naive-versus-exact table on :func:`trap_draws`, with the authors' printed values."""
    c = params.trap_num_classes
    df = naive_vs_exact(c, trap_draws(c))
    published = PUBLISHED_NOTEBOOK_UPSILON_C100 if c == 100 else {}
    df.insert(3, "authors' notebook (published)", df["N = K+1"].map(published).astype(float))
    return df


def trap_curve(params: Params) -> pd.DataFrame:
    """The naive-versus-exact comparison on a dense N grid from C to ~2.5 E[N] (for the figure)."""
    c = params.trap_num_classes
    top = max(c + 8, math.ceil(2.5 * bounds.expected_draws_to_cover(num_classes=c)))
    draws = np.unique(np.linspace(c, top, 4 * params.grid_points).round().astype(int))
    return naive_vs_exact(c, draws)


def published_comparison() -> pd.DataFrame:
    """The authors' printed υ(N) for C = 100 against the exact value and our float64 rerun.

    ``published / exact`` is how many times too large the printed value is;
    ``rerun vs published`` is the relative difference between the printed value and the same
    float64 notebook form run here (rounding noise differs between machines).
    """
    rows = []
    for n, published in sorted(PUBLISHED_NOTEBOOK_UPSILON_C100.items()):
        exact = bounds.coverage_probability(n, num_classes=100)
        rerun = bounds.naive_coverage_probability(n, 100, "notebook")
        rows.append(
            (n, published, exact, rerun, published / exact, abs(rerun - published) / published)
        )
    return pd.DataFrame(
        rows,
        columns=[
            "N = K+1",
            "published",
            "exact",
            "rerun here",
            "published / exact",
            "rerun vs published",
        ],
    )


# ---------------------------------------------------------------------------------------------
# the chapter


def run(P: Params) -> dict[str, pd.DataFrame]:
    """Every table of the chapter, in the page's order (pure maths: seconds on one core)."""
    return {
        "table3": expected_draws_table(P),
        "tau": paper_tau_table(),
        "curves": coverage_collision_curves(P),
        "milestones": coverage_milestones(P).set_index("prior"),
        "trap": trap_table(P),
        "trap_dense": trap_curve(P),
        "published": published_comparison().set_index("N = K+1"),
    }


def numbers(P: Params, tables: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Every number the page quotes, by its glue name (plain Python values)."""
    out: dict[str, Any] = {}
    expected = tables["table3"].set_index("data set")["E[K+1] (ours)"]
    for key, name in (("c10", "CIFAR-10"), ("c100", "CIFAR-100"), ("wiki", "Wiki-3029")):
        out[f"coupon_{key}_expected"] = float(expected[name])
    milestones = tables["milestones"]
    for c in (10, 100):
        row = milestones.loc[f"uniform, C={c}"]
        out[f"coupon_c{c}_k50"] = int(row["K for υ≥0.5"])
        out[f"coupon_c{c}_k99"] = int(row["K for υ≥0.99"])
        out[f"coupon_c{c}_tau50"] = float(row["τ at that K"])
        out[f"coupon_c{c}_tau99"] = float(row["τ at K99"])
    by_k = tables["tau"].set_index(["C", "K"])["υ(K+1) (ours)"]
    for key, (c, k) in {
        "c10_upsilon32": (10, 31),
        "c100_upsilon128": (100, 127),
        "c100_upsilon256": (100, 255),
        "c100_upsilon512": (100, 511),
    }.items():
        out[f"coupon_{key}"] = float(by_k.loc[(c, k)])

    label = prior_label(P)
    prior_row = milestones.loc[label]
    uniform_same_c = bounds.expected_draws_to_cover(num_classes=P.prior_num_classes)
    out["coupon_prior_label"] = label.replace(" (ours)", "")
    out["coupon_prior_c"] = P.prior_num_classes
    out["coupon_prior_expected"] = float(prior_row["E[K+1]"])
    out["coupon_prior_uniform_expected"] = float(uniform_same_c)
    out["coupon_prior_ratio"] = float(prior_row["E[K+1]"] / uniform_same_c)
    out["coupon_prior_k99"] = int(prior_row["K for υ≥0.99"])

    trap, dense = tables["trap"], tables["trap_dense"]
    first, last = trap.iloc[0], trap.iloc[-1]
    n0 = int(first["N = K+1"])
    out["coupon_trap_c"] = P.trap_num_classes
    out["coupon_trap_n0"] = n0
    out["coupon_trap_max_term"] = bounds.alternating_sum_largest_term(n0, P.trap_num_classes)
    out["coupon_trap_exact0"] = float(first["exact"])
    out["coupon_trap_naive0"] = float(first["naive (notebook form)"])
    out["coupon_trap_ratio0"] = float(first["naive (notebook form)"] / first["exact"])
    out["coupon_trap_nlast"] = int(last["N = K+1"])
    out["coupon_trap_bias"] = float(last["naive (notebook form)"] - last["exact"])
    max_naive = float(dense["naive (notebook form)"].max())
    out["coupon_trap_max_naive"] = max_naive
    out["coupon_trap_max_note"] = (
        "above 1, which no probability can be" if max_naive > 1 else "just below 1 on this grid"
    )
    published = tables["published"]
    out["coupon_pub_ratio128"] = float(published.loc[128, "published / exact"])
    out["coupon_pub_ratio256"] = float(published.loc[256, "published / exact"])
    out["coupon_pub_rerun_diff"] = float(published["rerun vs published"].max())
    out["coupon_rerun"] = P.papermill_command("coupon")
    # every figure of the page is computed exactly, in the page: no training run
    out["coupon_figure_runs"] = json.dumps({"fig-coupon-curves": [], "fig-coupon-trap": []})
    return out
