"""How hard negatives are: same-class rates by difficulty and the consistency of hardness.

Cai & Frankle (2020) rank each query's negatives by ``q . k`` and ask two questions of the
ranking: are the hardest negatives more often of the query's class than chance (the base rate
Σ_c p_c²), and are some negatives hard for many queries (more than a shuffled null allows)?
The trainer logs the first (same-class rate per rank bin, :data:`negatives.train.RANK_BIN_EDGES`);
this module aggregates it and measures the second on a trained encoder's features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats as scipy_stats
from torch import Tensor, nn

from negatives import config as cfg
from negatives import filters, probes
from negatives.data import Dataset
from negatives.epochs import RANK_BIN_EDGES
from negatives.runner import Run
from negatives.stats import mean_interval

# The fractions of keys that are consistently hard / easy / never hard, each with its null's.
FRACTIONS: tuple[str, ...] = (
    "frac_hard",
    "null_frac_hard",
    "frac_easy",
    "null_frac_easy",
    "frac_never",
    "null_frac_never",
)


def base_rate(labels: Tensor) -> float:
    """Probability that a random negative shares a random query's class: Σ_c p_c², with p_c the
    empirical class frequencies (1/C for balanced classes)."""
    counts = torch.bincount(labels.long()).double()
    p = counts / counts.sum()
    return float((p * p).sum())


def same_class_by_rank(
    runs_: list[Run], df: pd.DataFrame, *, group: str, condition: str
) -> pd.DataFrame:
    """Same-class rate of the queue's negatives per rank-percentile bin, per epoch, from training.

    Read from the histories (``same_class_by_rank``, bins :data:`negatives.train.RANK_BIN_EDGES`,
    hardest first) of the runs of ``(group, condition)`` (all negatives rank the whole queue). One row per ``(temperature, seed, epoch, bin)`` with ``bin_low,
    bin_high, rate``.
    """
    by_id = {r.run_id: r for r in runs_}
    sel = df[(df["group"] == group) & (df["condition"] == condition)]
    rows = []
    for _, row in sel.iterrows():
        hist = by_id[row["run_id"]].history
        for epoch, rates in zip(hist["epoch"], hist["same_class_by_rank"], strict=True):
            for b, rate in enumerate(rates):
                rows.append(
                    {
                        "temperature": row["temperature"],
                        "seed": row["seed"],
                        "epoch": epoch,
                        "bin": b,
                        "bin_low": RANK_BIN_EDGES[b],
                        "bin_high": RANK_BIN_EDGES[b + 1],
                        "rate": rate,
                    }
                )
    return pd.DataFrame(rows)


def same_class_summary(
    rank_df: pd.DataFrame, base: float, *, hardest: float = 0.05
) -> pd.DataFrame:
    """Per temperature, over seeds at the last epoch: the same-class rate of the hardest
    ``hardest`` fraction of the queue, its excess over the ``base`` rate (mean, 95% interval) and
    its ratio to it, next to the rate of the rest of the queue.

    The rate over ``[0, hardest)`` averages the bins inside it weighted by their width (each bin
    holds a share of the ranked queue proportional to its width); ``hardest`` must be a bin edge.
    """
    edges = list(RANK_BIN_EDGES)
    if hardest not in edges[1:]:
        raise ValueError(f"hardest={hardest} must be one of the bin edges {edges[1:]}")
    cfg.check_float("base", base, 0.0, 1.0, strict_minimum=True)
    last = rank_df[
        rank_df["epoch"] == rank_df.groupby(["temperature", "seed"])["epoch"].transform("max")
    ]
    rows = []
    for t, g in last.groupby("temperature", sort=True):
        hard, rest = [], []
        for _, s in g.groupby("seed"):
            w = (s["bin_high"] - s["bin_low"]).to_numpy()
            inside = (s["bin_high"] <= hardest + 1e-12).to_numpy()
            rate = s["rate"].to_numpy()
            hard.append(float((w[inside] * rate[inside]).sum() / w[inside].sum()))
            rest.append(float((w[~inside] * rate[~inside]).sum() / w[~inside].sum()))
        mean, low, high = mean_interval([h - base for h in hard])
        rows.append(
            {
                "temperature": t,
                "n": len(hard),
                "base_rate": base,
                "hard_rate": float(np.mean(hard)),
                "rest_rate": float(np.mean(rest)),
                "ratio": float(np.mean(hard)) / base,
                "excess_mean": mean,
                "excess_low": low,
                "excess_high": high,
            }
        )
    return pd.DataFrame(rows)


# -- consistency of hardness -----------------------------------------------------------------


def hardness_counts(
    queries: Tensor, keys: Tensor, top_fraction: float, *, chunk: int = 2048
) -> Tensor:
    """For each key, the number of queries that have it in their hardest ``top_fraction``.

    ``queries`` ``(Nq, D)`` and ``keys`` ``(Nk, D)``, L2-normalised. A query's hardest set is
    :func:`negatives.filters.band_mask` ``[0, top_fraction)`` of its similarities (the training
    definition: ``ceil(top_fraction * Nk)`` keys, ties to the earlier key). Returns ``(Nk,)`` int64.
    """
    if queries.ndim != 2 or keys.ndim != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(
            f"queries (Nq, D) and keys (Nk, D) must share D; got {tuple(queries.shape)}, {tuple(keys.shape)}"
        )
    counts = torch.zeros(keys.shape[0], dtype=torch.int64)
    for q in queries.split(chunk):
        sims = q @ keys.T  # (n, D) @ (D, Nk) -> (n, Nk)
        counts += filters.band_mask(sims, 0.0, top_fraction).sum(0).cpu()
    return counts


def consistency_from_features(
    queries: Tensor,
    keys: Tensor,
    *,
    top_fraction: float = 0.05,
    seed: int = 0,
    null_draws: int = 10,
) -> dict[str, Any]:
    """Are some keys hard for many queries more often than chance? (Cai & Frankle 2020, sec. 5)

    Observed: ``counts[j]`` = number of queries with key ``j`` in their hardest ``m =
    ceil(top_fraction * Nk)`` (:func:`hardness_counts`). Null: the same queries with their
    similarities permuted, i.e. each query's top set drawn uniformly at random; then every
    ``counts[j] ~ Binomial(Nq, m / Nk)`` exactly (queries independent, each includes a given key
    with probability ``m / Nk``). The null is also simulated ``null_draws`` times (for the figure).

    Returns a dict: ``counts`` (Nk,), ``null_counts`` (null_draws, Nk) as numpy arrays; ``num_keys,
    num_queries, top_count`` (m), ``expected`` (Nq m / Nk); ``variance`` of the counts over keys,
    ``null_variance`` (binomial), ``simulated_null_variance``, ``variance_ratio``; the null's 1st
    and 99th percentiles ``q_low, q_high`` and the fractions of keys ``frac_hard`` (count >
    q_high), ``frac_easy`` (count < q_low), ``frac_never`` (count 0) with the null's exact
    probabilities of the same events (``null_frac_hard``, ``null_frac_easy``, ``null_frac_never``).
    """
    cfg.check_float("top_fraction", top_fraction, 0.0, 1.0, strict_minimum=True)
    cfg.check_int("null_draws", null_draws, 1)
    cfg.check_int("seed", seed, 0)
    nq, nk = queries.shape[0], keys.shape[0]
    counts = hardness_counts(queries, keys, top_fraction)
    m = round(filters.band_fraction_kept(0.0, top_fraction, nk) * nk)
    p = m / nk
    gen = torch.Generator().manual_seed(seed)
    null = torch.zeros(null_draws, nk, dtype=torch.int64)
    for d in range(null_draws):
        for start in range(0, nq, 2048):
            rows = min(2048, nq - start)
            null[d] += filters.random_subset_mask(rows, nk, m, gen, exclude_diagonal=False).sum(0)
    binom = scipy_stats.binom(nq, p)
    q_low, q_high = float(binom.ppf(0.01)), float(binom.ppf(0.99))
    c = counts.numpy()
    null_var = nq * p * (1 - p)
    variance = float(c.var())
    return {
        "counts": c,
        "null_counts": null.numpy(),
        "num_keys": nk,
        "num_queries": nq,
        "top_count": m,
        "expected": nq * p,
        "variance": variance,
        "null_variance": null_var,
        "simulated_null_variance": float(null.double().var(dim=1, unbiased=False).mean()),
        "variance_ratio": variance / null_var if null_var > 0 else math.nan,
        "q_low": q_low,
        "q_high": q_high,
        "frac_hard": float((c > q_high).mean()),
        "frac_easy": float((c < q_low).mean()),
        "frac_never": float((c == 0).mean()),
        "null_frac_hard": float(binom.sf(q_high)),
        "null_frac_easy": float(binom.cdf(q_low - 1)),
        "null_frac_never": float(binom.pmf(0)),
    }


@torch.no_grad()
def hardness_consistency(
    model: nn.Module,
    images: Tensor,
    *,
    num_keys: int,
    num_queries: int,
    top_fraction: float = 0.05,
    seed: int = 0,
    null_draws: int = 10,
    device: str = "cpu",
) -> dict[str, Any]:
    """:func:`consistency_from_features` on a trained encoder's normalised projections z.

    A fixed random set of ``num_keys`` images plays the negatives (the queue) and ``num_queries``
    other images (disjoint, same seeded permutation) the queries. Both are embedded without
    augmentation by ``model`` (we keep the query encoder only, so keys are embedded by it rather
    than by MoCo's momentum encoder: with m = 0.99 the two differ little at the end of training).
    ``images``: uint8 ``(N, C, H, W)``.
    """
    n = images.shape[0]
    cfg.check_int("num_keys", num_keys, 1)
    cfg.check_int("num_queries", num_queries, 1)
    cfg.check_int("seed", seed, 0)
    if num_keys + num_queries > n:
        raise ValueError(
            f"num_keys + num_queries = {num_keys + num_queries} exceeds the {n} images given "
            "(keys and queries are disjoint)"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    z = probes.extract_features(
        model, images[perm[: num_keys + num_queries]], which="projection", device=device
    )
    z = F.normalize(z, dim=1)  # (Nk + Nq, D)
    return consistency_from_features(
        z[num_keys:], z[:num_keys], top_fraction=top_fraction, seed=seed, null_draws=null_draws
    )


def consistency_of_runs(
    labelled: Sequence[tuple[dict[str, Any], Run]],
    data: Dataset,
    *,
    num_keys: int,
    num_queries: int,
    top_fraction: float = 0.05,
    device: str = "cpu",
) -> pd.DataFrame:
    """:func:`hardness_consistency` of each run's encoder on ``data``'s training images, cached
    with the run (:meth:`negatives.runner.Run.evaluate`).

    ``labelled``: ``(labels, run)`` pairs. One row per run: its labels, the scalar statistics,
    and ``counts`` / ``null_counts`` as lists (for the figure).
    """
    params = {"data": data.fingerprint, "num_keys": num_keys, "num_queries": num_queries,
              "top_fraction": top_fraction, "null_draws": 10, "version": 1}  # fmt: skip
    rows = []
    for labels, run in labelled:

        def compute(run: Run = run) -> dict[str, Any]:
            out = hardness_consistency(
                run.load_model(), data.train_images, num_keys=num_keys, num_queries=num_queries,
                top_fraction=top_fraction, seed=0, device=device,
            )  # fmt: skip
            return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in out.items()}

        rows.append({**labels, **run.evaluate("consistency", params, compute)})
    return pd.DataFrame(rows)


def consistency_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per temperature: mean and 95% interval over seeds of the variance ratio, and the mean
    fractions of consistently hard / easy keys with their null expectations."""
    rows = []
    for t, g in table.groupby("temperature", sort=True):
        mean, low, high = mean_interval(g["variance_ratio"].tolist())
        rows.append(
            {
                "temperature": t,
                "n": len(g),
                "variance_ratio_mean": mean,
                "variance_ratio_low": low,
                "variance_ratio_high": high,
                **{k: float(g[k].mean()) for k in FRACTIONS},
            }
        )
    return pd.DataFrame(rows)
