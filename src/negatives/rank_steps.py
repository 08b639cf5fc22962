"""The steps of a rank's share of a batch, in a run across processes (``torchrun``).

Each of ``W`` ranks trains the rows ``[r B / W, (r + 1) B / W)`` of every batch under
DistributedDataParallel, and every rank draws the same epoch plans, so no images are sent.
The functions here have the signatures of their one-process versions in
:mod:`negatives.steps` (:func:`batch`, :func:`simclr_step`, :func:`moco_step`,
:func:`fill_queue`), and the trainer picks one module or the other once; what differs is what
crosses ranks: SimCLR gathers every rank's embeddings with their gradients, MoCo computes its
keys under one shuffle of the whole batch (:func:`shuffled_keys_across_ranks`) and every rank
enqueues the whole batch's keys, so every rank holds the same global queue.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from negatives import distributed, filters, losses
from negatives.epochs import EpochPlan, _view, _views
from negatives.queue import Queue
from negatives.steps import (
    Batch,
    Encoder,
    Step,
    _moco_loss,
    _negative_mask,
    _simclr_loss,
    momentum_update,
)
from negatives.trainconfig import TrainConfig


@dataclass
class RankBatch(Batch):
    """A rank's share of one batch: ``ids`` and ``labels`` are the global batch's ``(B,)`` and
    ``rows`` this rank's share of it; ``v1`` and ``v2`` are the views of those rows only
    ``(b, C, H, W)``. MoCo's keys are computed under a shuffle across ranks, of other rows than
    the rank's: ``v2`` is then None and ``key_views(positions)`` makes the second views of any
    positions ``(n,)`` of the batch (from the shared epoch plan)."""

    rows: slice = field(default_factory=lambda: slice(None))  # this rank's rows
    key_views: Callable[[Tensor], Tensor] | None = None

    @property
    def local_labels(self) -> Tensor:
        """The labels of this rank's rows ``(b,)``."""
        return self.labels[self.rows]


def rank_rows(batch_size: int) -> slice:
    """The rows of every batch this rank trains."""
    share = batch_size // distributed.world_size()
    return slice(distributed.rank() * share, (distributed.rank() + 1) * share)


def batch(images: Tensor, labels: Tensor, plan: EpochPlan, where: slice, moco: bool) -> RankBatch:
    """This rank's share of the batch at plan positions ``where``: the global ids and labels
    ``(B,)``, the views of its rows ``(b, C, H, W)``; MoCo's second views made on demand for
    the rows of the shuffle across ranks."""
    idx = plan.perm[where]
    rows = rank_rows(where.stop - where.start)
    mine = slice(where.start + rows.start, where.start + rows.stop)
    if not moco:
        return RankBatch(idx, labels[idx], *_views(images, plan, mine), rows=rows)

    def key_views(positions: Tensor) -> Tensor:  # batch positions (n,) -> (n, C, H, W)
        return _view(images, plan, positions.to(images.device) + where.start, 1)

    return RankBatch(idx, labels[idx], _view(images, plan, mine, 0), None, rows, key_views)


def simclr_step(
    encoder: Encoder, batch: RankBatch, config: TrainConfig, mask_gen: torch.Generator
) -> Step:
    """:func:`negatives.steps.simclr_step` on a rank's share ``batch.rows`` (``b`` of ``B``).

    With ``negative_groups == 1`` the rank gathers every rank's ``z1``, ``z2`` with their
    gradients (:func:`negatives.distributed.all_gather_with_grad`), so each of its anchors sees
    the global batch's negatives, and its loss is the mean over its own anchors;
    DistributedDataParallel's average of the ranks' gradients is then the gradient of the whole
    batch's mean loss, as in one process. With ``negative_groups`` a multiple of the world size
    each anchor's group lies on its rank: nothing is gathered and the rank contrasts its own
    rows. Masks are those of its rows (columns: the candidates it has), ``random-k`` drawn for
    the whole batch.
    """
    z1, z2 = encoder(batch.v1), encoder(batch.v2)  # (b, P) each: this rank's rows
    n, rows = len(batch.ids), batch.rows  # B
    gather = config.negative_groups == 1
    cols = slice(0, n) if gather else rows  # the candidates: every rank's rows, or its own
    if gather:
        world = distributed.world_size()
        z = distributed.all_gather_with_grad(torch.cat([z1, z2]))  # (W * 2b, P), rank by rank
        z = z.view(world, 2, z1.shape[0], z1.shape[1])
        c1, c2 = z[:, 0].reshape(n, -1), z[:, 1].reshape(n, -1)  # (B, P) each, batch order
    else:
        c1, c2 = z1, z2
    sims = (z1.detach() @ c2.T.detach()).detach()  # (b, N): anchor i is row rows.start + i
    valid_all = ~torch.eye(n, dtype=torch.bool, device=sims.device)  # (B, B)
    if config.negative_groups > 1:
        valid_all &= filters.group_mask(n, config.negative_groups, device=sims.device)
    valid = valid_all[rows, cols]  # (b, N)
    labels = batch.labels[cols]
    share = (valid_all, rows, cols)
    mask = _negative_mask(config, sims, valid, batch.local_labels, labels, mask_gen, share)
    if gather:
        shift = config.negative_logit_shift
        loss = losses.nt_xent(
            c1, c2, config.temperature, neg_mask=mask, rows=rows, negative_shift=shift
        ).mean()
    else:  # the rank's own rows are a whole batch of groups
        loss = _simclr_loss(config, c1, c2, mask).mean()
    return Step(loss, sims, valid, mask, labels)


def shuffled_keys_across_ranks(
    embed: Callable[[Tensor], Tensor],
    views: Callable[[Tensor], Tensor],
    batch_size: int,
    gen: torch.Generator,
) -> Tensor:
    """MoCo's shuffle-BN across ranks: the keys ``(B, D)`` of the whole batch, in its order.

    As MoCo's ``_batch_shuffle_ddp`` (He et al. 2020, section 3.3): one permutation of the
    global batch, the same on every rank (drawn from ``gen``, as :func:`shuffled_keys` draws it
    in one process), rank ``r`` computes the keys of rows ``[r b, (r + 1) b)`` of the shuffled
    batch with its key encoder (whose batch norm splits them into the rank's ``bn_groups / W``
    groups), the keys are gathered and unshuffled. MoCo gathers the key images to every GPU
    first; here every rank makes the views of its shuffled rows itself from the shared epoch
    plan (``views``: batch positions ``(n,)`` -> second views ``(n, C, H, W)``), which is the
    same and sends nothing. So the groups are those of :func:`shuffled_keys` with
    ``bn_groups`` groups, and a query's key is normalised with other samples than its query.
    """
    world, me = distributed.world_size(), distributed.rank()
    share = batch_size // world
    perm = torch.randperm(batch_size, generator=gen, device=gen.device)
    mine = perm[me * share : (me + 1) * share]
    k = embed(views(mine))  # (b, D), row t is the key of batch position mine[t]
    shuffled = distributed.all_gather(k)  # (B, D), row t is the key of sample perm[t]
    out = torch.empty_like(shuffled)
    out[perm.to(shuffled.device)] = shuffled  # unshuffle: row i is the key of sample i
    return out


def moco_step(
    encoder_q: Encoder,
    encoder_k: Encoder,
    queue: Queue,
    batch: RankBatch,
    config: TrainConfig,
    mask_gen: torch.Generator,
    shuffle_gen: torch.Generator,
) -> Step:
    """:func:`negatives.steps.moco_step` on a rank's share ``batch.rows``: the queries are its
    rows, the keys are computed under the shuffle across ranks
    (:func:`shuffled_keys_across_ranks`) and the returned ``keys`` are the whole batch's
    ``(B, P)``, so that every rank enqueues the same B keys and holds the same global queue: a
    query is contrasted (and a band ranks it) against the whole global queue.
    """
    q = encoder_q(batch.v1)  # (b, P): this rank's rows
    momentum_update(encoder_k.net, encoder_q.net, config.momentum)
    keys = queue.keys  # (Q, P)
    assert batch.key_views is not None, "a rank's MoCo batch needs key_views"
    with torch.no_grad():
        k_all = shuffled_keys_across_ranks(encoder_k, batch.key_views, len(batch.ids), shuffle_gen)
    k = k_all[batch.rows]  # (b, P), the keys of this rank's queries
    sims = torch.einsum("bp,qp->bq", q.detach(), keys)  # (b, Q)
    ids = batch.ids[batch.rows]  # (b,)
    own = queue.ids[None, :] == ids[:, None]  # (b, Q)
    valid = queue.valid[None, :] & ~own  # (b, Q)
    share = None
    if config.negatives == "random-k":  # drawn for the whole batch: its (B, Q) valid mask
        valid_all = queue.valid[None, :] & (queue.ids[None, :] != batch.ids[:, None])
        share = (valid_all, batch.rows, slice(None))
    mask = _negative_mask(config, sims, valid, batch.local_labels, queue.labels, mask_gen, share)
    loss = _moco_loss(config, q, k, keys, mask).mean()
    own_key = (own & queue.valid[None, :]).any(dim=1)  # (b,)
    return Step(loss, sims, valid, mask, queue.labels, keys=k_all, own_key=own_key)


@torch.no_grad()
def fill_queue(
    queue: Queue,
    encoder_k: Encoder,
    images: Tensor,
    labels: Tensor,
    plan: EpochPlan,
    batch_size: int,
    *,
    groups: int = 1,
) -> None:
    """:func:`negatives.steps.fill_queue` across ranks: each rank computes the keys of its share
    of every batch, the rows of its ``groups / W`` of the ``groups`` batch-norm groups
    (``config.batchnorm_groups``) one process would split the batch into (the last batch's
    groups may differ by one in size, as ``tensor_split``'s), and every rank enqueues the
    gathered keys of the whole batch."""
    count = min(queue.size, plan.perm.shape[0])
    world, me = distributed.world_size(), distributed.rank()
    for start in range(0, count, batch_size):
        where = slice(start, min(start + batch_size, count))
        ids = plan.perm[where]
        sizes = _group_shares(where.stop - where.start, groups, world)
        first = start + sum(sizes[:me])
        v2 = _view(images, plan, slice(first, first + sizes[me]), 1)
        keys = distributed.all_gather_rows(encoder_k(v2), sizes)  # (n, P), the whole batch
        queue.enqueue(keys, ids, labels[ids])


def _group_shares(count: int, groups: int, world: int) -> list[int]:
    """Rows of each of ``world`` ranks in a batch of ``count`` cut into ``groups`` batch-norm
    groups as ``tensor_split`` cuts it (the first ``count % groups`` one larger), rank ``r``
    taking groups ``[r groups / W, (r + 1) groups / W)``: then its own split of its rows into
    ``groups / W`` groups is the same cut."""
    base, extra = divmod(count, groups)
    per = groups // world
    return [sum(base + (g < extra) for g in range(r * per, (r + 1) * per)) for r in range(world)]
