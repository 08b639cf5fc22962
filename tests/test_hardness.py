"""negatives.hardness: same-class rates by difficulty and the consistency of hardness."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from negatives import hardness
from negatives.train import RANK_BIN_EDGES

# -- same-class analysis ---------------------------------------------------------------------


def test_base_rate() -> None:
    assert hardness.base_rate(torch.tensor([0, 0, 1, 1])) == pytest.approx(0.5)
    assert hardness.base_rate(torch.arange(10).repeat(7)) == pytest.approx(0.1)
    assert hardness.base_rate(torch.tensor([0, 0, 0, 1])) == pytest.approx(0.75**2 + 0.25**2)


def test_same_class_summary_weights_bins_by_width() -> None:
    nb = len(RANK_BIN_EDGES) - 1
    rows = []
    for seed, hard_rate in enumerate([0.3, 0.5]):
        for epoch in (1, 2):
            for b in range(nb):
                lo, hi = RANK_BIN_EDGES[b], RANK_BIN_EDGES[b + 1]
                # at the last epoch: the hardest 0.1% at 1.0, the rest of [0, 5%) at hard_rate
                rate = (1.0 if b == 0 else hard_rate) if hi <= 0.05 + 1e-12 else 0.1
                rows.append(
                    {
                        "temperature": 0.2,
                        "seed": seed,
                        "epoch": epoch,
                        "bin": b,
                        "bin_low": lo,
                        "bin_high": hi,
                        "rate": rate if epoch == 2 else 0.0,
                    }
                )
    s = hardness.same_class_summary(pd.DataFrame(rows), 0.1).iloc[0]
    expected = [(0.001 * 1.0 + 0.049 * h) / 0.05 for h in (0.3, 0.5)]
    assert s["hard_rate"] == pytest.approx(np.mean(expected))
    assert s["rest_rate"] == pytest.approx(0.1)
    assert s["excess_mean"] == pytest.approx(np.mean(expected) - 0.1)
    assert s["excess_low"] < s["excess_mean"] < s["excess_high"]
    with pytest.raises(ValueError, match="hardest"):
        hardness.same_class_summary(pd.DataFrame(rows), 0.1, hardest=0.04)


# -- consistency of hardness -----------------------------------------------------------------


def _naive_counts(q: torch.Tensor, k: torch.Tensor, frac: float) -> torch.Tensor:
    nk = k.shape[0]
    m = math.ceil(frac * nk - 1e-12)
    counts = torch.zeros(nk, dtype=torch.int64)
    for i in range(q.shape[0]):
        sims = [(float(q[i] @ k[j]), -j) for j in range(nk)]  # ties: earlier key is harder
        for _, neg_j in sorted(sims, reverse=True)[:m]:
            counts[-neg_j] += 1
    return counts


def test_hardness_counts_match_naive_sort() -> None:
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(30, 5, generator=g), dim=1)
    k = F.normalize(torch.randn(40, 5, generator=g), dim=1)
    k[7] = k[3]  # a tie
    for frac in (0.05, 0.1, 0.33):
        assert torch.equal(hardness.hardness_counts(q, k, frac, chunk=7), _naive_counts(q, k, frac))


def test_consistency_finds_hub_keys_and_not_random_ones() -> None:
    g = torch.Generator().manual_seed(1)
    d, nk, nq = 64, 200, 600
    common = F.normalize(torch.randn(d, generator=g), dim=0)
    # every query leans towards `common`; 5 hub keys point along it: hard for every query
    queries = F.normalize(torch.randn(nq, d, generator=g) / math.sqrt(d) + 1.0 * common, dim=1)
    keys = F.normalize(torch.randn(nk, d, generator=g), dim=1)
    keys[:5] = F.normalize(common + 0.05 * torch.randn(5, d, generator=g), dim=1)
    hub = hardness.consistency_from_features(queries, keys, top_fraction=0.05, null_draws=5)
    assert hub["top_count"] == 10
    assert (hub["counts"][:5] == nq).all()
    assert hub["counts"].sum() == nq * 10
    assert hub["variance_ratio"] > 10
    assert hub["frac_hard"] >= 5 / nk

    # independent isotropic features: counts behave like the null
    rand_q = F.normalize(torch.randn(nq, 256, generator=g), dim=1)
    rand_k = F.normalize(torch.randn(nk, 256, generator=g), dim=1)
    rnd = hardness.consistency_from_features(rand_q, rand_k, top_fraction=0.05, null_draws=20)
    assert 0.7 < rnd["variance_ratio"] < 1.5
    assert rnd["frac_hard"] < 0.05 and rnd["frac_easy"] < 0.05
    # the simulated shuffled null agrees with its exact binomial description
    p = rnd["top_count"] / nk
    assert rnd["null_counts"].mean() == pytest.approx(nq * p, rel=1e-9)  # each draw sums to nq*m
    assert rnd["simulated_null_variance"] == pytest.approx(nq * p * (1 - p), rel=0.15)
    assert rnd["null_frac_hard"] <= 0.01 and rnd["null_frac_easy"] <= 0.01


class _Identity(nn.Module):
    """An 'encoder' whose features are the flattened pixels (scaled to [-1, 1])."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.flatten(1), x.flatten(1)


def test_hardness_consistency_on_images_with_identity_encoder() -> None:
    g = torch.Generator().manual_seed(2)
    # all pixels in [128, 255], i.e. in [0, 1] after augment.to_float: every image leans towards
    # the all-ones direction; three keys are exactly white (all ones), closer to every query
    # (cosine about 0.87) than any random key (about 0.75 +- 0.03 in 64 dimensions)
    images = torch.randint(128, 256, (300, 1, 8, 8), generator=g, dtype=torch.uint8)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(0))
    images[perm[:3]] = 255  # keys are perm[:num_keys], in that order
    out = hardness.hardness_consistency(_Identity(), images, num_keys=100, num_queries=200, seed=0)
    assert out["num_keys"] == 100 and out["num_queries"] == 200 and out["top_count"] == 5
    assert (out["counts"][:3] == 200).all()
    assert out["counts"].sum() == 200 * 5
    assert out["variance_ratio"] > 5 and out["frac_hard"] >= 0.03
    with pytest.raises(ValueError, match="num_keys"):
        hardness.hardness_consistency(_Identity(), images, num_keys=200, num_queries=200)
