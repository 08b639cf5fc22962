"""Masks over negatives: which logits enter the InfoNCE denominator (True = keep).

Shapes stay static (a masked negative becomes a ``-inf`` logit, see :func:`negatives.losses.info_nce`)
so that the same compiled step serves every condition, and nothing here synchronises with the
device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from negatives.config import check_int

# band_mask uses a partial sort when the band's cut-offs lie within the hardest 1 / this of a row.
FAST_PATH_FRACTION: int = 4


def _check_valid(valid: Tensor | None, shape: tuple[int, ...], name: str = "valid") -> None:
    if valid is None:
        return
    if valid.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor (True = usable), got dtype {valid.dtype}")
    if tuple(valid.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(valid.shape)}")


def _check_band(low: float, high: float) -> tuple[float, float]:
    allowed = "fractions of the ranked negatives with 0 <= low < high <= 1 (hardest first)"
    for name, value in (("low", low), ("high", high)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name}={value!r} must be a finite number; the band is {allowed}")
    if not (0.0 <= low < high <= 1.0):
        raise ValueError(f"low={low!r}, high={high!r} is not a band; allowed are {allowed}")
    return float(low), float(high)


def band_mask(
    similarities: Tensor,
    low: float,
    high: float,
    valid: Tensor | None = None,
) -> Tensor:
    """Keep the negatives whose difficulty percentile lies in ``[low, high)`` (Cai & Frankle 2020).

    Per row (query), the valid negatives are ranked by similarity, hardest (largest) first:
    rank ``r = 0, ..., n-1`` with ``n`` the number of valid entries of the row. Entry ``j`` is
    kept iff it is valid and ``low <= r / n < high``. So ``[0, 0.05)`` is "the hardest 5%",
    ``[0.05, 1)`` "the easiest 95%" and ``[0.001, 1)`` "all but the hardest 0.1%".

    - Ties are broken by index: among equal similarities the earlier column is harder (the
      sort is stable), so the result is deterministic.
    - Bands narrower than one negative: the kept ranks are those with ``r / n`` in the band,
      i.e. ``ceil(low * n) <= r < ceil(high * n)``. ``[0, 0.001)`` with ``n = 100`` keeps the
      single hardest (``0 / 100 < 0.001``); a band containing no ``r / n``, e.g.
      ``[0.001, 0.009)`` with ``n = 100``, keeps none, and that row's loss is then 0.
    - Invalid entries are never kept; a row without valid entries keeps none.
    - Similarities at valid entries must not be NaN (torch sorts NaN as the largest value).

    Args:
        similarities: ``(B, K)``, e.g. ``q @ queue.T`` on normalised embeddings; not
            differentiated through.
        low, high: the band, fractions in ``[0, 1]`` with ``low < high``.
        valid: ``(B, K)`` or ``(K,)`` bool, True = the entry is a usable negative (e.g. a
            filled queue slot, or not the anchor itself); default all valid.

    Returns:
        ``(B, K)`` bool mask, True = keep.
    """
    low, high = _check_band(low, high)
    if similarities.ndim != 2:
        raise ValueError(f"similarities must have shape (B, K), got {tuple(similarities.shape)}")
    sims = similarities.detach()
    if valid is None:
        valid = torch.ones_like(sims, dtype=torch.bool)
    else:
        if valid.ndim == 1:
            _check_valid(valid, (sims.shape[1],))
            valid = valid.to(sims.device).expand_as(sims)
        _check_valid(valid, tuple(sims.shape))
        valid = valid.to(sims.device)
    # Invalid entries sort last (key -inf); a valid entry tied with them at -inf still gets the
    # right rank below, because ranks count valid entries only.
    key = sims.masked_fill(~valid, float("-inf"))
    n = valid.sum(dim=1, keepdim=True)  # (B, 1)
    r_low, r_high = _first_rank_at(low, n), _first_rank_at(high, n)
    # Most bands cut off few ranks at the top (the hardest 5%, 0.1%, ...): a partial sort of
    # those ranks (topk) is 5-20x cheaper than sorting whole rows of a MoCo queue.
    needed = max(int(r_low.max()), 0 if high == 1.0 else int(r_high.max()))
    if needed <= sims.shape[1] // FAST_PATH_FRACTION:
        keep = valid & ~_hardest(key, valid, r_low)
        if high < 1.0:
            keep &= _hardest(key, valid, r_high)
        return keep
    order = torch.sort(key, dim=1, descending=True, stable=True).indices  # (B, K)
    valid_sorted = torch.gather(valid, 1, order)  # (B, K)
    # rank among the valid entries of the row, hardest first: (B, K)
    rank = torch.cumsum(valid_sorted, dim=1) - 1
    # low <= r/n < high  <=>  r_low <= r < r_high, thresholds per row: (B, 1)
    keep_sorted = valid_sorted & (rank >= r_low) & (rank < r_high)
    return torch.zeros_like(valid_sorted).scatter(1, order, keep_sorted)


def _hardest(key: Tensor, valid: Tensor, r: Tensor) -> Tensor:
    """(B, K) bool: per row, the ``r`` hardest valid entries (``r`` is ``(B, 1)``), ties broken
    by index as the stable sort of :func:`band_mask` breaks them.

    The ``r``-th largest key ``v`` of the row (a partial sort, ``topk``) splits the row: every
    entry above ``v`` is in, and of the valid entries equal to ``v`` the first ``r - #above``
    by index. Needs ``r <= #valid`` in each row (true for ranks of the band's definition).
    """
    top = int(r.max())
    if top == 0:
        return torch.zeros_like(valid)
    values = torch.topk(key, top, dim=1, sorted=True).values  # (B, top), descending
    v = values.gather(1, (r - 1).clamp_min(0))  # (B, 1), the r-th largest
    above = key > v  # (B, K); invalid entries are -inf, never above
    tied = (key == v) & valid
    wanted = r - above.sum(dim=1, keepdim=True)  # (B, 1) how many tied entries are in
    if bool((tied.sum(dim=1, keepdim=True) > wanted).any()):  # ties across the cut: by index
        tied = tied & (torch.cumsum(tied, dim=1) <= wanted)
    return (above | tied) & (r > 0)


def _first_rank_at(fraction: float, n: Tensor) -> Tensor:
    """Per row, the smallest integer ``r >= 0`` with ``r / n >= fraction`` in float64.

    The comparison is the definition's ``r / n`` as Python computes it (a correctly rounded
    quotient, monotone in ``r``), so e.g. ``3 / 10 >= 0.3`` holds; ``ceil(fraction * n)`` can be
    off by one through rounding and is corrected both ways. Done on ``(B, 1)`` rather than on
    every entry.
    """
    n = n.clamp_min(1).double()
    r = torch.ceil(fraction * n)
    r = torch.where((r - 1 >= 0) & ((r - 1) / n >= fraction), r - 1, r)
    r = torch.where(r / n < fraction, r + 1, r)
    return r.long()


def band_fraction_kept(low: float, high: float, n: int) -> float:
    """Fraction of ``n`` valid negatives that :func:`band_mask` keeps: ``#{r : low <= r/n < high} / n``."""
    low, high = _check_band(low, high)
    n = check_int("n", n, 1)
    return sum(1 for r in range(n) if low <= r / n < high) / n


def random_subset_mask(
    num_rows: int,
    num_cols: int,
    k: int,
    generator: torch.Generator,
    *,
    exclude_diagonal: bool = True,
    valid: Tensor | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Keep ``min(k, eligible)`` negatives per row, uniformly at random among the eligible ones.

    Eligible = valid and (if ``exclude_diagonal``) not on the diagonal ``i == j``. Used to
    decouple the number of negatives ``K`` from the batch size: a SimCLR batch of ``B`` is masked
    down to ``K`` negative instances per anchor (our design; Nozawa & Sato 2021 vary ``K``
    through the batch size). Each row's subset is uniform over all ``k``-subsets of its
    eligible entries: i.i.d. uniform keys, keep the ``k`` largest.

    The keys are drawn on ``generator``'s device (so a CPU generator gives the same mask on any
    device) and the mask is returned on ``device`` (default: ``valid``'s device, else the
    generator's).
    """
    num_rows = check_int("num_rows", num_rows, 1)
    num_cols = check_int("num_cols", num_cols, 1)
    k = check_int("k", k, 0)
    _check_valid(valid, (num_rows, num_cols))
    if device is None:
        device = valid.device if valid is not None else generator.device
    keys = torch.rand((num_rows, num_cols), generator=generator, device=generator.device)
    keys = keys.to(device)  # (B, N) in [0, 1)
    eligible = (
        torch.ones(num_rows, num_cols, dtype=torch.bool, device=device)
        if valid is None
        else valid.to(device).clone()
    )
    if exclude_diagonal:
        eligible &= ~torch.eye(num_rows, num_cols, dtype=torch.bool, device=device)
    keys = keys.masked_fill(~eligible, -1.0)  # ineligible entries lose to every eligible one
    top = torch.topk(keys, min(k, num_cols), dim=1).indices  # (B, min(k, N))
    keep = torch.zeros_like(eligible).scatter(1, top, True)
    return keep & eligible


def group_mask(size: int, groups: int, device: torch.device | str | None = None) -> Tensor:
    """``(size, size)`` bool: True where ``i`` and ``j`` lie in the same of ``groups`` blocks of
    ``size / groups`` consecutive indices (``groups`` must divide ``size``).

    SimCLR's batch cut into groups that each contrast only with themselves: Nozawa & Sato
    (2021) trained on 4 GPUs, each of whose anchors saw only its own GPU's share of the batch.
    """
    size = check_int("size", size, 1)
    groups = check_int("groups", groups, 1, size)
    if size % groups:
        raise ValueError(f"groups={groups} must divide size={size} (blocks of equal size)")
    block = torch.arange(size, device=device) // (size // groups)  # (size,) each index's group
    return block[:, None] == block[None, :]


def same_class_mask(query_labels: Tensor, negative_labels: Tensor) -> Tensor:
    """True where the negative's class differs from the query's (oracle removal of collisions).

    ``query_labels`` ``(B,)``; ``negative_labels`` shared ``(K,)`` or per query ``(B, K)``.
    Returns ``(B, K)`` bool. Labels of ``-1`` (e.g. an empty queue slot) are compared like any
    other; combine with a validity mask for those.
    """
    if query_labels.ndim != 1:
        raise ValueError(f"query_labels must have shape (B,), got {tuple(query_labels.shape)}")
    batch = query_labels.shape[0]
    if negative_labels.ndim == 1:
        negative_labels = negative_labels[None, :]  # (1, K), broadcast over queries
    elif negative_labels.ndim != 2 or negative_labels.shape[0] != batch:
        raise ValueError(
            f"negative_labels must have shape (K,) or ({batch}, K), "
            f"got {tuple(negative_labels.shape)}"
        )
    # (B, 1) vs (1 or B, K) -> (B, K)
    out = query_labels[:, None] != negative_labels.to(query_labels.device)
    return out.expand(batch, negative_labels.shape[1]).contiguous()


def same_class_fraction(
    query_labels: Tensor, negative_labels: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Per row, the fraction of kept negatives that share the query's class.

    Returns ``(B,)`` float32; a row that keeps no negative gets NaN (the fraction is undefined)
    without any division warning, so average rows with ``torch.nanmean``.
    """
    different = same_class_mask(query_labels, negative_labels)  # (B, K)
    if mask is None:
        mask = torch.ones_like(different)
    else:
        _check_valid(mask, tuple(different.shape), "mask")
        mask = mask.to(different.device)
    kept = mask.sum(dim=1).float()
    same = (mask & ~different).sum(dim=1).float()
    return torch.where(kept > 0, same / kept.clamp_min(1.0), torch.full_like(kept, float("nan")))


def same_class_weight(
    query_labels: Tensor, negative_labels: Tensor, logits: Tensor, mask: Tensor | None = None
) -> Tensor:
    """Per row, the share of the softmax's negative mass that falls on same-class negatives.

    ``logits`` ``(B, K)`` are what the loss exponentiates for each negative (``s / T``, or
    ``(1 + beta) s / T`` under the hard-negative weights ``exp(beta s / T)``): the gradient
    pushes negative ``j`` of row ``i`` away with the weight ``softmax_j(logits_i)`` over the kept
    negatives (``mask``), so this is how much of that push lands on the query's own class, where
    :func:`same_class_fraction` counts negatives. ``(B,)`` float32; NaN for a row that keeps none.
    """
    different = same_class_mask(query_labels, negative_labels)  # (B, K)
    _check_valid(mask, tuple(different.shape), "mask")
    if tuple(logits.shape) != tuple(different.shape):
        raise ValueError(
            f"logits must have shape {tuple(different.shape)}, got {tuple(logits.shape)}"
        )
    keep = torch.ones_like(different) if mask is None else mask.to(different.device)
    masked = logits.float().masked_fill(~keep, float("-inf"))  # (B, K)
    top = masked.amax(dim=1, keepdim=True)  # (B, 1): -inf where the row keeps none
    weights = torch.exp(masked - torch.where(torch.isinf(top), 0.0, top))  # (B, K), 0 off-mask
    total = weights.sum(dim=1)
    same = (weights * ~different).sum(dim=1)
    return torch.where(
        total > 0, same / total.clamp_min(1e-30), torch.full_like(total, float("nan"))
    )
