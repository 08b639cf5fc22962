"""Contrastive losses: InfoNCE with shared or per-query negatives and masks, and SimCLR's NT-Xent.

Both return the per-sample loss (no reduction) so that callers can average, weight or log it
per sample. Logits are built and reduced in float32 even under ``torch.autocast``: with a
temperature of 0.07 a bf16 dot product (about three significant digits) would move a logit by
several hundredths, which is the size of the effects the study measures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from negatives.config import check_float


def _check_mask(mask: Tensor, rows: int, cols: int, name: str) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool tensor (True = keep), got dtype {mask.dtype}")
    if tuple(mask.shape) != (rows, cols):
        raise ValueError(f"{name} must have shape ({rows}, {cols}), got {tuple(mask.shape)}")


# exp() of arguments below about -87 (float32 underflow) takes a slow path on x86 CPUs: a row
# of -inf logits made a masked softmax 6-20x slower than an unmasked one. Masked logits are
# therefore multiplied out (times 0) instead of set to -inf, with the exponent capped here so
# that a masked logit far above the kept ones cannot overflow to inf * 0 = nan.
MAX_EXPONENT: float = 80.0


def _check_views(z1: Tensor, z2: Tensor) -> None:
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"z1 and z2 must both have shape (B, D), got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )


def masked_logsumexp(logits: Tensor, keep: Tensor) -> Tensor:
    """``log sum_j keep_ij exp(logits_ij)`` per row: logsumexp over the kept entries only.

    Exactly what ``logsumexp(logits.masked_fill(~keep, -inf), 1)`` computes (a dropped entry
    adds exactly 0 and gets exactly zero gradient), but fast on CPUs (see
    :data:`MAX_EXPONENT`). Every row must keep at least one entry. ``(B, N) -> (B,)``.
    """
    m = logits.detach().masked_fill(~keep, float("-inf")).amax(dim=1, keepdim=True)  # (B, 1)
    e = torch.exp((logits - m).clamp(max=MAX_EXPONENT)) * keep  # (B, N), 0 where dropped
    return m[:, 0] + torch.log(e.sum(dim=1))


def contrastive_logits(query: Tensor, positive: Tensor, negatives: Tensor) -> Tensor:
    """Dot products ``[q.k+, q.k1-, ..., q.kK-]`` per query, as in MoCo's ``builder.py``.

    ``negatives`` is either shared by all queries, ``(K, D)`` (MoCo's queue), or given per query,
    ``(B, K, D)``. Returns ``(B, 1 + K)`` with the positive in column 0; no temperature, no
    normalisation.
    """
    if query.ndim != 2:
        raise ValueError(f"query must have shape (B, D), got {tuple(query.shape)}")
    if positive.shape != query.shape:
        raise ValueError(
            f"positive must have the query's shape {tuple(query.shape)}, got {tuple(positive.shape)}"
        )
    batch, dim = query.shape
    # positive logits: (B, 1)
    l_pos = torch.einsum("bd,bd->b", query, positive).unsqueeze(-1)
    if negatives.ndim == 2 and negatives.shape[1] == dim:
        # q: (B, D), negatives: (K, D) -> (B, K)
        l_neg = torch.einsum("bd,kd->bk", query, negatives)
    elif negatives.ndim == 3 and negatives.shape[0] == batch and negatives.shape[2] == dim:
        # q: (B, D), negatives: (B, K, D) -> (B, K)
        l_neg = torch.einsum("bd,bkd->bk", query, negatives)
    else:
        raise ValueError(
            f"negatives must have shape (K, {dim}) or ({batch}, K, {dim}), "
            f"got {tuple(negatives.shape)}"
        )
    return torch.cat([l_pos, l_neg], dim=1)  # (B, 1+K)


def info_nce(
    query: Tensor,
    positive: Tensor,
    negatives: Tensor,
    temperature: float,
    mask: Tensor | None = None,
    negative_shift: float = 0.0,
) -> Tensor:
    """Per-sample InfoNCE (van den Oord et al. 2018; MoCo, He et al. 2020, eq. 1).

    ``loss_b = -log( exp(q.k+/T) / (exp(q.k+/T) + sum_{j kept} exp(q.k_j/T)) )``.

    ``mask`` (``(B, K)`` bool, True = keep) removes negatives exactly: they add 0 to the
    denominator and receive zero gradient (:func:`masked_logsumexp`). The
    positive is never masked, so a row with every negative masked has loss ``-log 1 = 0``.
    Inputs are used as given: the caller L2-normalises them if it wants cosine similarities.
    ``negative_shift`` is added to every negative's logit (after the temperature): EqCo's
    ``log(alpha / K)`` (:attr:`negatives.TrainConfig.negative_logit_shift`).
    Returns ``(B,)``, float32.
    """
    temperature = check_float("temperature", temperature, 0.0, strict_minimum=True)
    with torch.autocast(device_type=query.device.type, enabled=False):
        logits = contrastive_logits(query.float(), positive.float(), negatives.float())
        logits = logits / temperature  # (B, 1+K)
        if negative_shift:
            shift = torch.full_like(logits[:1], negative_shift)  # (1, 1+K)
            shift[:, 0] = 0.0  # the positive keeps its logit
            logits = logits + shift
        if mask is None:
            return torch.logsumexp(logits, dim=1) - logits[:, 0]
        batch, k = logits.shape[0], logits.shape[1] - 1
        _check_mask(mask, batch, k, "mask")
        keep = torch.cat([mask.new_ones(batch, 1), mask.to(logits.device)], dim=1)
        # -log softmax at the positive (column 0), which is always kept
        return masked_logsumexp(logits, keep) - logits[:, 0]


def nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    neg_mask: Tensor | None = None,
    *,
    rows: slice | None = None,
    negative_shift: float = 0.0,
) -> Tensor:
    """Per-view NT-Xent of SimCLR (Chen et al. 2020, eq. 1), the loss ``l(i, j)`` for all 2B views.

    Views are ordered ``[z1; z2]``; anchor ``a`` has as positive the other view of its instance
    and as negatives both views of every other instance (2(B-1) of them). ``neg_mask``
    (``(B, B)`` bool, True = instance ``j`` is a negative for anchor instance ``i``; the
    diagonal is ignored) is expanded to both views of both instances, so keeping ``K`` negative
    instances keeps ``2K`` negative views; dropped views leave the denominator exactly.

    ``rows`` (consecutive instances ``[start, stop)`` of the B, ``b`` of them): only the anchors
    of those instances, against every view of ``z1`` and ``z2``; ``neg_mask`` is then
    ``(b, B)`` (row ``i`` for instance ``start + i``) and the result ``(2b,)``, ordered
    ``[z1[rows]; z2[rows]]``. That is one rank's share of a batch gathered from every rank; the
    mean over ranks of their shares' mean is the mean of the whole batch's loss.

    The inputs are L2-normalised here (sim = cosine similarity, as in the paper); normalisation
    is idempotent, so already-normalised inputs are fine. ``negative_shift`` is added to every
    negative view's logit (EqCo, as :func:`info_nce`). Returns ``(2B,)`` (or ``(2b,)``),
    float32.
    """
    temperature = check_float("temperature", temperature, 0.0, strict_minimum=True)
    _check_views(z1, z2)
    batch = z1.shape[0]
    if rows is not None:
        return _nt_xent_rows(z1, z2, temperature, neg_mask, rows, negative_shift)
    if neg_mask is not None:
        _check_mask(neg_mask, batch, batch, "neg_mask")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1.float(), z2.float()], dim=0), dim=1)  # (2B, D)
        sim = (z @ z.T) / temperature  # (2B, 2B)
        idx = torch.arange(2 * batch, device=z.device)
        pos_idx = (idx + batch) % (2 * batch)  # view a's partner: (2B,)
        instance = idx % batch  # (2B,)
        same_instance = instance[:, None] == instance[None, :]  # self and positive, (2B, 2B)
        keep = _view_keep(neg_mask, same_instance)  # (2B, 2B)
        keep[idx, pos_idx] = True
        positive = sim[idx, pos_idx]  # (2B,)
        return masked_logsumexp(_shifted(sim, idx, pos_idx, negative_shift), keep) - positive


def _shifted(sim: Tensor, rows: Tensor, positive: Tensor, shift: float) -> Tensor:
    """``sim`` ``(n, 2B)`` with ``shift`` added to every entry but each row's positive."""
    if not shift:
        return sim
    out = sim + shift
    out[rows, positive] = sim[rows, positive]
    return out


def _view_keep(neg_mask: Tensor | None, same_instance: Tensor) -> Tensor:
    """An instance-level keep-mask ``(b, B)`` as the view-level ``(2b, 2B)`` one that NT-Xent's
    logits need (``keep[a, c] = neg_mask[a % b, c % B]``), without the anchor's own instance."""
    if neg_mask is None:
        return ~same_instance
    return neg_mask.to(same_instance.device).repeat(2, 2) & ~same_instance


def _nt_xent_rows(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    neg_mask: Tensor | None,
    rows: slice,
    negative_shift: float = 0.0,
) -> Tensor:
    """:func:`nt_xent` of the anchors of instances ``rows`` only: ``(2b,)``."""
    batch = z1.shape[0]
    start, stop, stride = rows.indices(batch)
    if stride != 1 or stop <= start:
        raise ValueError(
            f"rows={rows} must be consecutive instances [start, stop) of the {batch}, not empty"
        )
    b = stop - start
    if neg_mask is not None:
        _check_mask(neg_mask, b, batch, "neg_mask")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1.float(), z2.float()], dim=0), dim=1)  # (2B, D)
        own = torch.arange(start, stop, device=z.device)
        anchors = torch.cat([own, own + batch])  # (2b,) the anchors' view indices
        sim = (z[anchors] @ z.T) / temperature  # (2b, 2B)
        a = torch.arange(2 * b, device=z.device)
        pos_idx = (anchors + batch) % (2 * batch)  # (2b,)
        instance = torch.arange(2 * batch, device=z.device) % batch  # (2B,)
        same_instance = (anchors % batch)[:, None] == instance[None, :]  # (2b, 2B)
        keep = _view_keep(neg_mask, same_instance)  # (2b, 2B)
        keep[a, pos_idx] = True
        positive = sim[a, pos_idx]  # (2b,)
        return masked_logsumexp(_shifted(sim, a, pos_idx, negative_shift), keep) - positive


def debiased_info_nce(
    positive: Tensor,
    negatives: Tensor,
    temperature: float,
    tau_plus: float,
    beta: float = 0.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Per-anchor debiased (Chuang et al. 2020) and hard-negative reweighted (Robinson et al.
    2021) contrastive loss, from cosine similarities: ``positive`` ``(B,)`` and ``negatives``
    ``(B, N)``, ``mask`` ``(B, N)`` (True = a negative of the anchor; default all).

    With ``n`` kept negatives ``s_j``, ``e_j = exp(s_j / T)`` and importance weights
    ``w_j = e_j^beta / mean_k e_k^beta`` (Robinson et al.'s ``exp(beta s_j / T)``; ``beta = 0``
    gives ``w = 1``, Chuang et al.'s estimator), the negative term is the debiased estimate

        ``Ng = max((sum_j w_j e_j - n tau_plus exp(s+ / T)) / (1 - tau_plus), n exp(-1/T))``

    (the lower clamp is the papers': ``e^{-1/T}`` is the smallest ``e_j`` of unit vectors), and
    ``loss = -log(exp(s+/T) / (exp(s+/T) + Ng))``. ``tau_plus`` is the class prior, the chance
    that a negative shares the anchor's class (``1/C`` for ``C`` balanced classes); ``tau_plus
    = 0`` and ``beta = 0`` is InfoNCE with the anchor's kept negatives. Every row must keep at
    least one negative. Returns ``(B,)``, float32.
    """
    temperature = check_float("temperature", temperature, 0.0, strict_minimum=True)
    tau_plus = check_float("tau_plus", tau_plus, 0.0, 1.0)
    if tau_plus >= 1.0:
        raise ValueError(f"tau_plus={tau_plus} must be in [0, 1): the class prior of a negative")
    beta = check_float("beta", beta, 0.0)
    if positive.ndim != 1 or negatives.ndim != 2 or negatives.shape[0] != positive.shape[0]:
        raise ValueError(
            f"positive must be (B,) and negatives (B, N), got {tuple(positive.shape)} and "
            f"{tuple(negatives.shape)}"
        )
    batch, n_all = negatives.shape
    if mask is not None:
        _check_mask(mask, batch, n_all, "mask")
    with torch.autocast(device_type=negatives.device.type, enabled=False):
        s = negatives.float() / temperature  # (B, N)
        lp = positive.float() / temperature  # (B,)
        keep = torch.ones_like(s, dtype=torch.bool) if mask is None else mask.to(s.device)
        n = keep.sum(1).float()  # (B,)
        if bool((n == 0).any()):
            raise ValueError("mask keeps no negative for some anchor: every row needs one")
        # log(sum_j w_j e_j) = log n + logsumexp((1 + beta) s) - logsumexp(beta s), in log space
        log_weighted = masked_logsumexp((1.0 + beta) * s, keep)
        if beta > 0:  # (beta = 0: the two terms cancel exactly)
            log_weighted = log_weighted + torch.log(n) - masked_logsumexp(beta * s, keep)
        ng = (torch.exp(log_weighted) - tau_plus * n * torch.exp(lp)) / (1.0 - tau_plus)
        ng = torch.maximum(ng, n * math.exp(-1.0 / temperature))  # (B,)
        return torch.log(torch.exp(lp) + ng) - lp


def debiased_nt_xent(
    z1: Tensor,
    z2: Tensor,
    temperature: float,
    tau_plus: float,
    beta: float = 0.0,
    neg_mask: Tensor | None = None,
) -> Tensor:
    """SimCLR's NT-Xent with :func:`debiased_info_nce`'s negative term: per view ``(2B,)``,
    ordered ``[z1; z2]``, each anchor's positive the other view of its instance and its
    negatives both views of every other instance (``2(B - 1)``, as in the authors' code), or
    those of the instances ``neg_mask`` ``(B, B)`` keeps (as :func:`nt_xent`). Inputs are
    L2-normalised here."""
    _check_views(z1, z2)
    batch = z1.shape[0]
    if neg_mask is not None:
        _check_mask(neg_mask, batch, batch, "neg_mask")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1.float(), z2.float()], dim=0), dim=1)  # (2B, D)
        sim = z @ z.T  # (2B, 2B) cosine similarities
        idx = torch.arange(2 * batch, device=z.device)
        instance = idx % batch  # (2B,)
        keep = instance[:, None] != instance[None, :]  # not self, not the positive: (2B, 2B)
        if neg_mask is not None:
            keep = keep & neg_mask.to(z.device).repeat(2, 2)
        positive = sim[idx, (idx + batch) % (2 * batch)]  # (2B,)
        return debiased_info_nce(positive, sim, temperature, tau_plus, beta, keep)
