"""Tests for negatives.filters against per-row Python versions."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from negatives.filters import (
    band_fraction_kept,
    band_mask,
    random_subset_mask,
    same_class_fraction,
    same_class_mask,
    same_class_weight,
)


def naive_band_mask(sims: list[list[float]], low: float, high: float, valid) -> list[list[bool]]:
    """Sort each row's valid entries hardest first, ties by index; keep low <= r/n < high."""
    out = []
    for row, ok in zip(sims, valid, strict=True):
        idx = [j for j in range(len(row)) if ok[j]]
        ranked = sorted(idx, key=lambda j: (-row[j], j))
        n = len(ranked)
        keep = [False] * len(row)
        for r, j in enumerate(ranked):
            keep[j] = low <= r / n < high
        out.append(keep)
    return out


BANDS = [
    (0.0, 1.0),
    (0.0, 0.05),
    (0.05, 1.0),
    (0.001, 1.0),
    (0.0, 0.001),
    (0.3, 0.31),
    (0.25, 0.75),
    (0.5, 0.5 + 1e-9),
    (0.999, 1.0),
]


@pytest.mark.parametrize("low,high", BANDS)
def test_band_mask_matches_naive_with_ties_and_invalid(low: float, high: float) -> None:
    g = torch.Generator().manual_seed(0)
    batch, k = 12, 37
    sims = torch.randint(-3, 4, (batch, k), generator=g).float()  # many ties
    valid = torch.rand(batch, k, generator=g) < 0.7
    valid[0] = True
    valid[1] = False  # a row without valid entries keeps none
    valid[2] = False
    valid[2, 5] = True  # a row with a single valid entry
    # valid -inf entries after an invalid one: they tie with the invalid entries' sort key
    sims[3, -4:] = float("-inf")
    valid[3, -4:] = True
    valid[3, 0] = False
    got = band_mask(sims, low, high, valid)
    assert got.dtype == torch.bool and got.shape == (batch, k)
    expected = naive_band_mask(sims.tolist(), low, high, valid.tolist())
    assert got.tolist() == expected
    assert not got[~valid].any()
    assert not got[1].any()


def test_band_mask_without_valid_and_shared_valid() -> None:
    g = torch.Generator().manual_seed(1)
    sims = torch.randn(5, 50, generator=g)
    everything = [[True] * 50] * 5
    assert band_mask(sims, 0.1, 0.4).tolist() == naive_band_mask(
        sims.tolist(), 0.1, 0.4, everything
    )
    shared = torch.arange(50) < 30  # e.g. a queue's filled slots, (K,)
    got = band_mask(sims, 0.0, 0.05, shared)
    assert got.tolist() == naive_band_mask(sims.tolist(), 0.0, 0.05, [shared.tolist()] * 5)
    assert got.sum(1).tolist() == [2] * 5  # r/30 < 0.05 for r = 0, 1


def test_band_mask_keeps_the_hardest() -> None:
    sims = torch.tensor([[0.1, 0.9, 0.5, 0.9, -0.2]])
    # hardest first, tie 0.9/0.9 broken by index: order 1, 3, 2, 0, 4
    assert band_mask(sims, 0.0, 0.2).tolist() == [[False, True, False, False, False]]
    assert band_mask(sims, 0.2, 0.4).tolist() == [[False, False, False, True, False]]
    assert band_mask(sims, 0.8, 1.0).tolist() == [[False, False, False, False, True]]
    # narrower than one negative: [0, 0.001) keeps the single hardest (0/5 < 0.001) ...
    assert band_mask(sims, 0.0, 0.001).sum().item() == 1
    # ... and a band that contains no r/n keeps none
    assert band_mask(sims, 0.01, 0.19).sum().item() == 0


def test_band_edges_exactly_at_r_over_n() -> None:
    # bands whose edges fall on r/n (or round near it): compare with Python's r / n
    # (ceil(0.07 * 100) = 8 but 7 / 100 >= 0.07, so a naive ceil would be off by one)
    edges = [i / 10 for i in range(11)] + [1 / 3, 2 / 3, 0.001, 0.999, 0.07, 0.14, 0.28, 0.56]
    for n in [*range(1, 41), 50, 75, 100]:
        sims = -torch.arange(n, dtype=torch.float64)[None, :]  # column r has rank r
        for low in edges:
            for high in edges:
                if low < high:
                    got = band_mask(sims, low, high)[0].tolist()
                    assert got == [low <= r / n < high for r in range(n)], (n, low, high)


@pytest.mark.parametrize("low,high", BANDS)
def test_band_partition_and_fraction_kept(low: float, high: float) -> None:
    g = torch.Generator().manual_seed(2)
    sims = torch.randn(3, 1000, generator=g)
    kept = band_mask(sims, low, high)
    expected_count = sum(1 for r in range(1000) if low <= r / 1000 < high)
    assert kept.sum(1).tolist() == [expected_count] * 3
    assert band_fraction_kept(low, high, 1000) == expected_count / 1000


def test_bands_partition_the_row() -> None:
    g = torch.Generator().manual_seed(3)
    sims = torch.randint(0, 5, (4, 33), generator=g).float()
    edges = [0.0, 0.05, 0.2, 0.5, 1.0]
    masks = [band_mask(sims, a, b) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    total = torch.stack(masks).sum(0)
    assert (total == 1).all()


def test_band_mask_errors() -> None:
    sims = torch.zeros(2, 3)
    for low, high in [(0.5, 0.5), (0.6, 0.5), (-0.1, 0.5), (0.0, 1.5)]:
        with pytest.raises(ValueError, match="low.*high"):
            band_mask(sims, low, high)
    with pytest.raises(ValueError, match="low"):
        band_mask(sims, float("nan"), 0.5)
    with pytest.raises(ValueError, match="high"):
        band_mask(sims, 0.0, float("inf"))
    with pytest.raises(ValueError, match="0 <= low < high <= 1"):
        band_mask(sims, 0.2, 0.1)
    with pytest.raises(ValueError, match="similarities"):
        band_mask(torch.zeros(3), 0.0, 0.5)
    with pytest.raises(ValueError, match="valid"):
        band_mask(sims, 0.0, 0.5, torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid"):
        band_mask(sims, 0.0, 0.5, torch.ones(2, 3))
    with pytest.raises(ValueError, match="n"):
        band_fraction_kept(0.0, 0.5, 0)


def test_random_subset_counts_and_diagonal() -> None:
    g = torch.Generator().manual_seed(0)
    for k in (0, 1, 3, 7, 8, 20):
        mask = random_subset_mask(8, 8, k, g)
        assert mask.dtype == torch.bool and mask.shape == (8, 8)
        assert mask.sum(1).tolist() == [min(k, 7)] * 8
        assert not mask.diagonal().any()
    mask = random_subset_mask(4, 6, 10, g, exclude_diagonal=False)
    assert mask.all()


def test_random_subset_respects_valid() -> None:
    g = torch.Generator().manual_seed(1)
    valid = torch.rand(10, 12, generator=g) < 0.5
    for k in (0, 2, 5, 12):
        mask = random_subset_mask(10, 12, k, g, valid=valid)
        assert not mask[~valid].any()
        assert not torch.eye(10, 12, dtype=torch.bool)[mask].any()
        eligible = (valid & ~torch.eye(10, 12, dtype=torch.bool)).sum(1)
        assert mask.sum(1).tolist() == torch.clamp(eligible, max=k).tolist()


def test_random_subset_is_uniform_over_subsets() -> None:
    # each row is an independent draw: 2-subsets of 5 columns, 10 of them, 600 expected each
    g = torch.Generator().manual_seed(2)
    mask = random_subset_mask(6000, 5, 2, g, exclude_diagonal=False)
    counts = Counter(tuple(row) for row in mask.tolist())
    assert len(counts) == math.comb(5, 2)
    expected = 6000 / 10
    chi2 = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi2 < 27.9  # 9 degrees of freedom, p = 0.001


def test_random_subset_uniform_with_diagonal_excluded() -> None:
    # row 2 of a 5x5 mask with k = 2: each of the 4 off-diagonal columns has probability 1/2
    g = torch.Generator().manual_seed(3)
    draws = 1000
    hits = torch.zeros(5)
    for _ in range(draws):
        hits += random_subset_mask(5, 5, 2, g)[2].float()
    assert hits[2] == 0
    for j in (0, 1, 3, 4):
        assert abs(hits[j].item() / draws - 0.5) < 4 * math.sqrt(0.25 / draws)


def test_random_subset_determinism() -> None:
    a = random_subset_mask(16, 16, 4, torch.Generator().manual_seed(7))
    b = random_subset_mask(16, 16, 4, torch.Generator().manual_seed(7))
    c = random_subset_mask(16, 16, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_random_subset_errors() -> None:
    g = torch.Generator()
    with pytest.raises(ValueError, match="k"):
        random_subset_mask(4, 4, -1, g)
    with pytest.raises(ValueError, match="k"):
        random_subset_mask(4, 4, 1.5, g)
    with pytest.raises(ValueError, match="num_rows"):
        random_subset_mask(0, 4, 1, g)
    with pytest.raises(ValueError, match="num_cols"):
        random_subset_mask(4, 0, 1, g)
    with pytest.raises(ValueError, match="valid"):
        random_subset_mask(4, 4, 1, g, valid=torch.ones(4, 5, dtype=torch.bool))


def test_same_class_mask_matches_loop() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 3, (6,), generator=g)
    shared = torch.randint(0, 3, (9,), generator=g)
    per_query = torch.randint(0, 3, (6, 9), generator=g)
    got = same_class_mask(q, shared)
    assert got.shape == (6, 9)
    assert got.tolist() == [[q[i].item() != shared[j].item() for j in range(9)] for i in range(6)]
    got = same_class_mask(q, per_query)
    assert got.tolist() == [
        [q[i].item() != per_query[i, j].item() for j in range(9)] for i in range(6)
    ]
    with pytest.raises(ValueError, match="negative_labels"):
        same_class_mask(q, per_query[:5])
    with pytest.raises(ValueError, match="query_labels"):
        same_class_mask(per_query, shared)


def test_same_class_fraction_matches_loop() -> None:
    g = torch.Generator().manual_seed(1)
    q = torch.randint(0, 3, (7,), generator=g)
    negs = torch.randint(0, 3, (7, 11), generator=g)
    mask = torch.rand(7, 11, generator=g) < 0.5
    mask[4] = False  # nothing kept -> NaN
    got = same_class_fraction(q, negs, mask)
    assert got.shape == (7,)
    for i in range(7):
        kept = [j for j in range(11) if mask[i, j]]
        if not kept:
            assert math.isnan(got[i].item())
        else:
            same = sum(1 for j in kept if negs[i, j] == q[i])
            assert got[i].item() == pytest.approx(same / len(kept))
    unmasked = same_class_fraction(q, negs)
    assert unmasked.tolist() == pytest.approx((negs == q[:, None]).float().mean(1).tolist())
    with pytest.raises(ValueError, match="mask"):
        same_class_fraction(q, negs, mask[:, :3])


def test_same_class_weight_matches_loop() -> None:
    g = torch.Generator().manual_seed(2)
    q = torch.randint(0, 3, (6,), generator=g)
    negs = torch.randint(0, 3, (9,), generator=g)  # shared negatives (a queue)
    logits = 30 * torch.randn(6, 9, generator=g)  # large: the max shift must keep it finite
    mask = torch.rand(6, 9, generator=g) < 0.6
    mask[2] = False
    got = same_class_weight(q, negs, logits, mask)
    for i in range(6):
        kept = [j for j in range(9) if mask[i, j]]
        if not kept:
            assert math.isnan(got[i].item())
            continue
        w = {
            j: math.exp(logits[i, j].item() - max(logits[i, k].item() for k in kept)) for j in kept
        }
        same = sum(w[j] for j in kept if negs[j] == q[i])
        assert got[i].item() == pytest.approx(same / sum(w.values()), rel=1e-5, abs=1e-7)
    # equal logits: the weight share is the count share
    flat = same_class_weight(q, negs, torch.zeros(6, 9), mask)
    frac = same_class_fraction(q, negs, mask)
    assert torch.allclose(flat[~frac.isnan()], frac[~frac.isnan()])
    with pytest.raises(ValueError, match="logits"):
        same_class_weight(q, negs, logits[:, :4], mask)


@pytest.mark.parametrize(
    "low, high", [(0.0, 0.05), (0.05, 1.0), (0.001, 1.0), (0.01, 0.1), (0.0, 0.2)]
)
def test_partial_sort_path_equals_the_full_sort(monkeypatch, low: float, high: float) -> None:
    from negatives import filters

    g = torch.Generator().manual_seed(7)
    sims = torch.randint(-20, 21, (64, 400), generator=g).float() / 10  # many ties
    valid = torch.rand(64, 400, generator=g) < 0.97
    valid[0] = False  # a row without valid entries
    valid[1, :3] = True
    valid[1, 3:] = False  # a row with three
    monkeypatch.setattr(filters, "FAST_PATH_FRACTION", 1)  # partial sort whenever it applies
    fast = filters.band_mask(sims, low, high, valid=valid)
    monkeypatch.setattr(filters, "FAST_PATH_FRACTION", 10**9)  # always the full sort
    full = filters.band_mask(sims, low, high, valid=valid)
    assert torch.equal(fast, full)
    assert torch.equal(fast, torch.tensor(naive_band_mask(sims, low, high, valid)))
