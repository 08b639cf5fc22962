"""The steps of SimCLR and MoCo v2: the loss of one batch, as the papers write it.

:func:`simclr_step`: both views through one encoder, NT-Xent over the batch (``2B x 2B``);
:func:`moco_step`: queries through the encoder, keys through its momentum copy with shuffle-BN
(:func:`shuffled_keys`), InfoNCE of each query against its key and the queue (``B x (1 + K)``);
the negative regime a mask over those logits (:func:`_negative_mask`). :func:`update` is the
optimiser's step, :func:`momentum_update` MoCo's key encoder, :func:`fill_queue` MoCo's first
queue. Every function here is one process's; a rank's share of a batch in a run across
processes has its own steps in :mod:`negatives.rank_steps`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from negatives import filters, losses
from negatives.epochs import EpochPlan, _view, _views
from negatives.queue import Queue
from negatives.trainconfig import TrainConfig


def _negative_mask(
    config: TrainConfig,
    sims: Tensor,
    valid: Tensor,
    query_labels: Tensor,
    negative_labels: Tensor,
    gen: torch.Generator,
    share: tuple[Tensor, slice, slice] | None = None,
) -> Tensor:
    """(b, N) keep-mask of the negatives for this step's queries under the config's regime.

    ``share``: ``(valid_all, rows, cols)``, the whole batch's ``(B, N_all)`` valid mask and the
    rows and columns of it that ``sims`` and ``valid`` are (a rank's share of the batch).
    ``random-k`` then draws the whole batch's mask from ``gen``, as one process does, and keeps
    the share's part: every rank draws the same numbers, and its rows are the one process's.
    The other regimes are per query and need no more than the share's rows.
    """
    if config.negatives == "band":
        return filters.band_mask(sims, config.band_low, config.band_high, valid=valid)
    if config.negatives == "random-k":
        assert config.num_negatives is not None
        # a rank draws the whole batch's mask (the same numbers as one process) and keeps its rows
        whole = valid if share is None else share[0]  # (B, N_all)
        full = filters.random_subset_mask(
            whole.shape[0],
            whole.shape[1],
            config.num_negatives,
            gen,
            exclude_diagonal=False,
            valid=whole,
            device=sims.device,
        )
        return full if share is None else full[share[1], share[2]]
    if config.negatives == "no-same-class":
        return valid & filters.same_class_mask(query_labels, negative_labels)
    return valid


@dataclass(frozen=True)
class Encoder:
    """A network as the trainer runs it: ``encoder(x)`` is ``net``'s projection ``z`` of ``x``
    ``(B, C, H, W)``, L2-normalised, float32 ``(B, P)`` (MoCo's ``encoder_q`` / ``encoder_k``).

    The input is made channels-last for the CNNs (faster convolutions) and the forward pass runs
    under bf16 autocast when ``bf16``; the normalisation runs in float32 whatever the autocast.
    """

    net: nn.Module
    device: str
    bf16: bool = False
    channels_last: bool = True

    def __call__(self, x: Tensor) -> Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            _, z = self.net(x)
        return F.normalize(z.float(), dim=1)


@dataclass
class Batch:
    """One training batch: sample ``ids`` and ``labels`` ``(B,)``, the two views ``v1``, ``v2``
    ``(B, C, H, W)`` float (the query's and the key's / the positive's). A rank's share of a
    batch is a :class:`negatives.rank_steps.RankBatch`."""

    ids: Tensor
    labels: Tensor
    v1: Tensor
    v2: Tensor | None

    @property
    def local_labels(self) -> Tensor:
        """The labels of the rows this process trains ``(B,)``: all of them."""
        return self.labels


def batch(images: Tensor, labels: Tensor, plan: EpochPlan, where: slice, moco: bool) -> Batch:
    """The batch at ``plan`` positions ``where``: its ids and labels and both views."""
    idx = plan.perm[where]
    return Batch(idx, labels[idx], *_views(images, plan, where))


@dataclass
class Step:
    """What one training step computed: its loss and what the epoch log reads.

    ``loss``: the mean loss of the batch, with its graph. ``similarities`` ``(B, N)``: q.k of
    every query with every negative candidate (detached); ``valid`` ``(B, N)``: the candidates
    that are negatives at all; ``mask`` ``(B, N)``: those the regime kept; ``negative_labels``
    ``(N,)``: the candidates' labels (MoCo: the queue's, which the enqueue overwrites).
    ``keys`` ``(B, P)``: MoCo's keys of the batch, enqueued after the optimiser step.
    ``own_key`` ``(B,)``: MoCo, whether the queue holds a key of the query's own instance (from
    an earlier step; it is no negative, see :func:`moco_step`); None for SimCLR, whose anchor
    is never among its negatives.
    """

    loss: Tensor
    similarities: Tensor
    valid: Tensor
    mask: Tensor
    negative_labels: Tensor
    keys: Tensor | None = None
    own_key: Tensor | None = None


def simclr_step(
    encoder: Encoder, batch: Batch, config: TrainConfig, mask_gen: torch.Generator
) -> Step:
    """SimCLR's loss of one batch (Chen et al. 2020, eq. 1): NT-Xent over both views, with the
    other instances of the batch (of the anchor's group, ``negative_groups``) as negatives,
    kept by the config's regime.

    The regime ranks instance ``j`` as a negative of anchor ``i`` by ``z1_i . z2_j``. A rank's
    share of a batch: :func:`negatives.rank_steps.simclr_step`.
    """
    z1, z2 = encoder(batch.v1), encoder(batch.v2)  # (B, P) each
    n = len(batch.ids)  # B
    sims = (z1 @ z2.T).detach()  # (B, B), the diagonal is each anchor's positive
    valid = ~torch.eye(n, dtype=torch.bool, device=sims.device)  # (B, B)
    if config.negative_groups > 1:
        valid &= filters.group_mask(n, config.negative_groups, device=sims.device)
    mask = _negative_mask(config, sims, valid, batch.labels, batch.labels, mask_gen)
    loss = _simclr_loss(config, z1, z2, mask).mean()
    return Step(loss, sims, valid, mask, batch.labels)


def _simclr_loss(config: TrainConfig, z1: Tensor, z2: Tensor, mask: Tensor) -> Tensor:
    """NT-Xent of ``(B, P)`` views under the keep-mask ``(B, B)``, debiased if configured."""
    if config.debiased:
        return losses.debiased_nt_xent(
            z1, z2, config.temperature, config.tau_plus, config.beta, neg_mask=mask
        )
    return losses.nt_xent(
        z1, z2, config.temperature, neg_mask=mask, negative_shift=config.negative_logit_shift
    )


def _moco_loss(config: TrainConfig, q: Tensor, k: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
    """InfoNCE of queries ``(b, P)`` against their keys and the queue ``(Q, P)``, debiased if
    configured (the embeddings are unit vectors: dot products are cosines)."""
    if config.debiased:
        pos, neg = (q * k).sum(1), q @ keys.T  # (b,), (b, Q)
        return losses.debiased_info_nce(
            pos, neg, config.temperature, config.tau_plus, config.beta, mask
        )
    shift = config.negative_logit_shift
    return losses.info_nce(q, k, keys, config.temperature, mask=mask, negative_shift=shift)


@torch.no_grad()
def momentum_update(key_model: nn.Module, model: nn.Module, momentum: float) -> None:
    """MoCo's key encoder update ``theta_k <- m theta_k + (1 - m) theta_q`` (He et al. 2020,
    eq. 2), in place, on the parameters (the key encoder's batch-norm statistics are its own)."""
    for pk, pq in zip(key_model.parameters(), model.parameters(), strict=True):
        pk.mul_(momentum).add_(pq.detach(), alpha=1 - momentum)


def shuffled_keys(
    embed: Callable[[Tensor], Tensor], x: Tensor, groups: int, gen: torch.Generator
) -> Tensor:
    """MoCo's shuffle-BN on one device: keys of ``x`` ``(B, ...)`` computed in shuffled order.

    The key encoder's batch norm is split into ``groups`` blocks of consecutive samples
    (:class:`negatives.models.SplitBatchNorm`), as the query encoder's is. Shuffling the batch
    before the key encoder (and restoring the order after) puts a query's key in a block of
    other samples than its query's block, so the network cannot match a query to its key
    through shared batch statistics (He et al. 2020, section 3.3). Returns ``(B, D)`` in the
    order of ``x``. With ``groups == 1`` there is nothing to shuffle across.
    """
    if groups == 1:
        return embed(x)
    perm = torch.randperm(x.shape[0], generator=gen, device=gen.device).to(x.device)
    k = embed(x[perm])  # (B, D), row t is the key of sample perm[t]
    out = torch.empty_like(k)
    out[perm] = k  # unshuffle: row i is the key of sample i
    return out


def moco_step(
    encoder_q: Encoder,
    encoder_k: Encoder,
    queue: Queue,
    batch: Batch,
    config: TrainConfig,
    mask_gen: torch.Generator,
    shuffle_gen: torch.Generator,
) -> Step:
    """MoCo v2's loss of one batch (He et al. 2020, algorithm 1): the momentum update of the key
    encoder, keys of the second views under shuffle-BN, and InfoNCE of the queries against their
    keys and the queue's keys, kept by the config's regime.

    The queue is read, not written: the returned ``keys`` are enqueued by the caller after the
    optimiser step. A rank's share of a batch: :func:`negatives.rank_steps.moco_step`.
    """
    q = encoder_q(batch.v1)  # (B, P)
    momentum_update(encoder_k.net, encoder_q.net, config.momentum)
    keys = queue.keys  # (Q, P)
    with torch.no_grad():
        k = shuffled_keys(encoder_k, batch.v2, config.batchnorm_groups, shuffle_gen)  # (B, P)
    sims = torch.einsum("bp,qp->bq", q.detach(), keys)  # (B, Q)
    # A key of the query's own instance from an earlier step is not a negative: it matters
    # when the queue holds a large part of a small data set.
    own = queue.ids[None, :] == batch.ids[:, None]  # (B, Q)
    valid = queue.valid[None, :] & ~own  # (B, Q)
    mask = _negative_mask(config, sims, valid, batch.labels, queue.labels, mask_gen)
    loss = _moco_loss(config, q, k, keys, mask).mean()
    own_key = (own & queue.valid[None, :]).any(dim=1)  # (B,)
    return Step(loss, sims, valid, mask, queue.labels, keys=k, own_key=own_key)


def update(optimizer: torch.optim.Optimizer, loss: Tensor) -> None:
    """One optimiser step on ``loss``: gradients set to None, backward, step."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


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
    """Enqueue the keys (second views, key encoder, no shuffle) of the first ``queue.size``
    samples of ``plan``'s order, ``batch_size`` at a time (fewer in the last batch).

    MoCo starts from a queue of random vectors instead; real keys mean that every step, the
    first included, sees a full queue of the data's keys. (``groups``, the key encoder's
    batch-norm groups, matters only across ranks: :func:`negatives.rank_steps.fill_queue`.)
    """
    count = min(queue.size, plan.perm.shape[0])
    for start in range(0, count, batch_size):
        where = slice(start, min(start + batch_size, count))
        ids = plan.perm[where]
        v2 = _view(images, plan, where, 1)  # the keys' views only
        queue.enqueue(encoder_k(v2), ids, labels[ids])
