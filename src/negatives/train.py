"""The contrastive trainer: SimCLR (in-batch negatives) and MoCo v2 (a queue of keys).

One frozen config whose fields are the notebooks' parameters (:class:`TrainConfig`), one loop
(:func:`train`) and one cached entry point (:func:`run`). The data set lives on the device as a
uint8 tensor; batches are ``randperm`` indices; views are made in batch on the device.

The loop is made of named steps: :func:`simclr_step` and :func:`moco_step` (the loss of one
batch, MoCo's momentum update and shuffle-BN keys included), :func:`update` (the optimiser
step), :func:`fill_queue`, :class:`EpochLog` (the history) and :class:`Checkpoint` (resume).
:func:`check_memory` refuses, by name, a config whose run the device cannot hold, before
anything is allocated.

Negative regimes (masks over the logits, shapes static, see :mod:`negatives.filters`):

* ``all``: every negative (SimCLR: both views of the other B-1 instances; MoCo: the whole queue);
* ``random-k``: a uniformly random subset of ``num_negatives`` per query, so that K is decoupled
  from the batch / queue size;
* ``band``: Cai & Frankle (2020): per query, only negatives whose difficulty rank (by q.k on
  normalised embeddings, hardest first, recomputed every step) lies in ``[band_low, band_high)``;
* ``no-same-class``: an oracle that drops negatives of the query's class (for analysis only).

Positives are two augmented views of one instance (``positives="views"``, instance
discrimination) or two samples of the same latent class (``positives="latent-class"``, the model
of Saunshi et al. 2019, used for the synthetic data).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from negatives import augment, filters, losses, runs
from negatives import config as cfg
from negatives.data import Dataset, sample_same_class
from negatives.models import ContrastiveModel, build_model, split_batchnorm
from negatives.queue import Queue

METHODS = ("simclr", "moco")
NEGATIVE_REGIMES = ("all", "random-k", "band", "no-same-class")
POSITIVES = ("views", "latent-class")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "constant")
STREAMS = ("data", "mask", "shuffle")
# MoCo's shuffle-BN groups when ``bn_groups`` is None: the official one-GPU CIFAR demo splits
# its batch into 8 (and MoCo v2 on ImageNet runs 8 GPUs of 32 images each).
MOCO_BN_GROUPS: int = 8
ARCHS = ("cnn-small", "mlp", "resnet18-cifar")

# Edges of the rank-percentile bins (hardest first) in which the same-class rate of the queue's
# negatives is logged during MoCo training (chapter 2's semantic analysis).
RANK_BIN_EDGES: tuple[float, ...] = (
    0.0,
    0.001,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.7,
    1.0,
)
# Queries whose negatives enter that log, every RANK_LOG_EVERY steps (the kept negatives' count
# and same-class share are logged on the same steps): ranking a whole (B, Q) similarity matrix
# costs about half a training step on a CPU, and 64 rows every 4th step cost about 3% of one
# (benchmarks/step_costs.py); the batch is a random sample, so its first RANK_LOG_QUERIES rows
# are an unbiased subsample.
RANK_LOG_QUERIES: int = 64
RANK_LOG_EVERY: int = 4


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of one training run (mirrored as keyword defaults of the notebooks)."""

    method: str = "simclr"
    arch: str = "cnn-small"
    width: int = 32
    proj_hidden: int = 128
    proj_dim: int = 64
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    schedule: str = "cosine"  # after the warm-up: cosine decay to zero, or constant
    temperature: float = 0.2
    negatives: str = "all"
    num_negatives: int | None = None  # K for negatives="random-k"
    band_low: float = 0.0
    band_high: float = 1.0
    queue_size: int = 4096
    momentum: float = 0.99
    bn_groups: int | None = None  # MoCo's shuffle-BN groups; None: 8 for moco, 1 for simclr
    positives: str = "views"
    strength: float = 0.5
    min_scale: float = 0.2
    flip: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast of the encoders where the device has it natively
    compile: bool = False

    def __post_init__(self) -> None:
        cfg.check_choice("method", self.method, METHODS)
        cfg.check_choice("arch", self.arch, ARCHS)
        cfg.check_choice("negatives", self.negatives, NEGATIVE_REGIMES)
        cfg.check_choice("positives", self.positives, POSITIVES)
        cfg.check_choice("optimizer", self.optimizer, OPTIMIZERS)
        cfg.check_choice("schedule", self.schedule, SCHEDULES)
        cfg.check_choice("device", self.device, cfg.DEVICES)
        cfg.check_choice("precision", self.precision, cfg.PRECISIONS)
        for name in ("width", "proj_hidden", "proj_dim", "epochs"):
            cfg.check_int(name, getattr(self, name), 1)
        cfg.check_int("batch_size", self.batch_size, 2)
        cfg.check_int("queue_size", self.queue_size, 1)
        cfg.check_int("seed", self.seed, 0)
        cfg.check_float("lr", self.lr, 0.0, strict_minimum=True)
        cfg.check_float("weight_decay", self.weight_decay, 0.0)
        cfg.check_float("warmup_epochs", self.warmup_epochs, 0.0, self.epochs)
        cfg.check_float("temperature", self.temperature, 0.0, strict_minimum=True)
        cfg.check_float("momentum", self.momentum, 0.0, 1.0)
        cfg.check_float("strength", self.strength, 0.0, 1.0)
        cfg.check_float("min_scale", self.min_scale, 0.0, 1.0, strict_minimum=True)
        cfg.check_float("band_low", self.band_low, 0.0, 1.0)
        cfg.check_float("band_high", self.band_high, 0.0, 1.0)
        if self.bn_groups is not None:
            cfg.check_int("bn_groups", self.bn_groups, 1)
            if self.method != "moco" and self.bn_groups != 1:
                raise ValueError(
                    f"bn_groups={self.bn_groups} is MoCo's shuffle-BN; method={self.method!r} "
                    "normalises over the whole batch: leave it None (or 1)"
                )
        if self.batch_size < 2 * self.batchnorm_groups:
            raise ValueError(
                f"batch_size={self.batch_size} cannot be split into bn_groups="
                f"{self.batchnorm_groups} batch-norm groups of at least 2 samples"
            )
        if self.band_low >= self.band_high:
            raise ValueError(
                f"band_low={self.band_low} must be < band_high={self.band_high} "
                "(fractions of the ranked negatives, hardest first, in [0, 1])"
            )
        if self.negatives == "random-k":
            if self.num_negatives is None:
                raise ValueError(
                    "num_negatives must be given (an integer >= 1) when negatives='random-k'"
                )
            cfg.check_int("num_negatives", self.num_negatives, 1)
            available = self.batch_size - 1 if self.method == "simclr" else self.queue_size
            if self.num_negatives > available:
                raise ValueError(
                    f"num_negatives={self.num_negatives} exceeds the {available} negatives available "
                    f"to method={self.method!r} (batch_size - 1 for simclr, queue_size for moco)"
                )
        elif self.num_negatives is not None:
            raise ValueError(
                f"num_negatives={self.num_negatives} is only used with negatives='random-k', "
                f"not negatives={self.negatives!r}; leave it None"
            )

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def batchnorm_groups(self) -> int:
        """The resolved ``bn_groups``: MoCo's default is :data:`MOCO_BN_GROUPS`, SimCLR's 1."""
        if self.bn_groups is not None:
            return self.bn_groups
        return MOCO_BN_GROUPS if self.method == "moco" else 1

    @property
    def negatives_per_query(self) -> int:
        """K: the number of negative instances each query is contrasted with (before bands)."""
        if self.negatives == "random-k":
            assert self.num_negatives is not None
            return self.num_negatives
        return self.batch_size - 1 if self.method == "simclr" else self.queue_size


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    model: ContrastiveModel
    history: dict[str, list[Any]]
    config: TrainConfig
    device: str
    seconds: float
    images_per_second: float
    key_model: ContrastiveModel | None = None
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)


def execution(config: TrainConfig) -> dict[str, Any]:
    """What ``config`` leaves to the machine but the numbers depend on; part of a run's identity.

    The device and precision that ``auto`` resolves to, and on the CPU the number of torch
    threads (reductions split across threads round differently, so 1 and 2 threads give
    slightly different weights).
    """
    device = cfg.resolve_device(config.device)
    out: dict[str, Any] = {
        "device": device,
        "precision": cfg.resolve_precision(config.precision, device),
    }
    if device == "cpu":
        out["cpu_threads"] = torch.get_num_threads()
    return out


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The trainer's optimiser of ``model``: AdamW, or SGD with momentum 0.9, at ``config.lr``.

    No weight decay on norms and biases (parameters of one dimension), as in the usual SimCLR
    / MoCo recipes.
    """
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=config.lr)


def _lr_factor(step: int, total: int, warmup: int, schedule: str = "cosine") -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero (or a constant)."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def stream_generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator for one named random stream of a run (``data``, ``mask``, ``shuffle``).

    Separate streams are what makes conditions of one seed share their random numbers (common
    random numbers): the data order and the augmentations come from ``data`` alone, so a regime
    that draws random subsets (``mask``) or MoCo's key shuffle (``shuffle``) cannot shift them.
    ``data`` is seeded with ``seed`` itself; the others with a hash of ``(seed, stream)``.
    """
    cfg.check_choice("stream", stream, STREAMS)
    if stream == "data":
        value = seed
    else:
        digest = hashlib.sha256(f"{seed}:{stream}".encode()).digest()
        value = int.from_bytes(digest[:8], "little") & (2**63 - 1)
    gen = torch.Generator(device=device)
    gen.manual_seed(value)
    return gen


# -- the data stream -------------------------------------------------------------------------


@dataclass
class EpochPlan:
    """The data stream of one epoch, drawn at its start: the order and both views' parameters.

    ``perm`` ``(n,)`` is the order of the training samples; ``views`` holds, for position ``p``
    of the order, the parameters of the two augmented views of sample ``perm[p]`` (images) or
    ``partners`` its positive (latent-class data). Because they are indexed by position, not by
    step, a run with another batch size sees the same views of the same samples.
    """

    perm: Tensor
    views: tuple[augment.ViewParams, augment.ViewParams] | None
    partners: Tensor | None

    def batch(self, step: int, batch_size: int) -> tuple[Tensor, slice]:
        """The sample ids ``(B,)`` of batch ``step`` and their positions in the plan."""
        where = slice(step * batch_size, (step + 1) * batch_size)
        return self.perm[where], where


def _plan_epoch(
    n: int, images: Tensor, labels: Tensor, config: TrainConfig, gen: torch.Generator
) -> EpochPlan:
    """Draw one epoch's plan on ``gen`` (a CPU generator, so that a run draws the same numbers
    on every device) and move it to the images' device. ``labels``: on the CPU."""
    device = images.device
    perm = torch.randperm(n, generator=gen)
    if config.positives == "latent-class":
        partners = sample_same_class(labels[perm], labels, gen, exclude=perm)
        return EpochPlan(perm.to(device), None, partners.to(device))
    kw = dict(strength=config.strength, min_scale=config.min_scale, flip=config.flip)
    aspect = images.shape[-1] / images.shape[-2]
    views = tuple(
        augment.sample_view_params(n, images.shape[1], gen, aspect=aspect, **kw).to(device)
        for _ in range(2)
    )
    return EpochPlan(perm.to(device), views, None)  # type: ignore[arg-type]


def _views(images: Tensor, plan: EpochPlan, where: slice) -> tuple[Tensor, Tensor]:
    """The two views ``(B, C, H, W)`` float of the samples at positions ``where`` of the plan."""
    x = images[plan.perm[where]]
    if plan.views is None:  # latent-class positives: another sample of the class
        assert plan.partners is not None
        return augment.to_float(x), augment.to_float(images[plan.partners[where]])
    return tuple(augment.apply_view(x, v.select(where)) for v in plan.views)  # type: ignore[return-value]


# -- one training step -----------------------------------------------------------------------


def _negative_mask(
    config: TrainConfig,
    sims: Tensor,
    valid: Tensor,
    query_labels: Tensor,
    negative_labels: Tensor,
    gen: torch.Generator,
) -> Tensor:
    """(B, N) keep-mask of the negatives for this step's queries under the config's regime."""
    if config.negatives == "band":
        return filters.band_mask(sims, config.band_low, config.band_high, valid=valid)
    if config.negatives == "random-k":
        assert config.num_negatives is not None
        return filters.random_subset_mask(
            sims.shape[0],
            sims.shape[1],
            config.num_negatives,
            gen,
            exclude_diagonal=False,
            valid=valid,
            device=sims.device,
        )
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
    ``(B, C, H, W)`` float (the query's and the key's / the positive's)."""

    ids: Tensor
    labels: Tensor
    v1: Tensor
    v2: Tensor


@dataclass
class Step:
    """What one training step computed: its loss and what the epoch log reads.

    ``loss``: the mean loss of the batch, with its graph. ``similarities`` ``(B, N)``: q.k of
    every query with every negative candidate (detached); ``valid`` ``(B, N)``: the candidates
    that are negatives at all; ``mask`` ``(B, N)``: those the regime kept; ``negative_labels``
    ``(N,)``: the candidates' labels (MoCo: the queue's, which the enqueue overwrites).
    ``keys`` ``(B, P)``: MoCo's keys of the batch, enqueued after the optimiser step.
    """

    loss: Tensor
    similarities: Tensor
    valid: Tensor
    mask: Tensor
    negative_labels: Tensor
    keys: Tensor | None = None


def simclr_step(
    encoder: Encoder, batch: Batch, config: TrainConfig, mask_gen: torch.Generator
) -> Step:
    """SimCLR's loss of one batch (Chen et al. 2020, eq. 1): NT-Xent over both views, with the
    other instances of the batch as negatives, kept by the config's regime.

    The regime ranks instance ``j`` as a negative of anchor ``i`` by ``z1_i . z2_j``.
    """
    z1, z2 = encoder(batch.v1), encoder(batch.v2)  # (B, P) each
    sims = (z1 @ z2.T).detach()  # (B, B), the diagonal is each anchor's positive
    valid = ~torch.eye(len(batch.ids), dtype=torch.bool, device=sims.device)  # (B, B)
    mask = _negative_mask(config, sims, valid, batch.labels, batch.labels, mask_gen)
    loss = losses.nt_xent(z1, z2, config.temperature, neg_mask=mask).mean()
    return Step(loss, sims, valid, mask, batch.labels)


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
    optimiser step.
    """
    q = encoder_q(batch.v1)  # (B, P)
    momentum_update(encoder_k.net, encoder_q.net, config.momentum)
    with torch.no_grad():
        k = shuffled_keys(encoder_k, batch.v2, config.batchnorm_groups, shuffle_gen)  # (B, P)
    keys = queue.keys  # (Q, P)
    sims = torch.einsum("bp,qp->bq", q.detach(), keys)  # (B, Q)
    # A key of the query's own instance from an earlier step is not a negative: it matters when
    # the queue holds a large part of a small data set.
    valid = queue.valid[None, :] & (queue.ids[None, :] != batch.ids[:, None])  # (B, Q)
    mask = _negative_mask(config, sims, valid, batch.labels, queue.labels, mask_gen)
    loss = losses.info_nce(q, k, keys, config.temperature, mask=mask).mean()
    return Step(loss, sims, valid, mask, queue.labels, keys=k)


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
) -> None:
    """Enqueue the keys (second views, key encoder, no shuffle) of the first ``queue.size``
    samples of ``plan``'s order, ``batch_size`` at a time (fewer in the last batch).

    MoCo starts from a queue of random vectors instead; real keys mean that every step, the
    first included, sees a full queue of the data's keys.
    """
    count = min(queue.size, plan.perm.shape[0])
    for start in range(0, count, batch_size):
        where = slice(start, min(start + batch_size, count))
        ids = plan.perm[where]
        _, v2 = _views(images, plan, where)
        queue.enqueue(encoder_k(v2), ids, labels[ids])


# -- the epoch's log and the checkpoint ------------------------------------------------------


def _rank_bin_same_class(sims: Tensor, same: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Same-class counts and totals per rank-percentile bin (hardest first) for one batch.

    sims, same, valid: (B, Q) -> two (len(RANK_BIN_EDGES) - 1,) tensors.
    """
    order = torch.argsort(sims.masked_fill(~valid, -math.inf), dim=1, descending=True, stable=True)
    same_sorted = torch.gather(same & valid, 1, order).float()  # (B, Q), rank 0 = hardest
    n_valid = valid.sum(1, keepdim=True).clamp_min(1)  # (B, 1)
    ranks = torch.arange(sims.shape[1], device=sims.device).expand_as(sims)
    pct = ranks / n_valid  # (B, Q) rank percentile per row
    in_row = (ranks < n_valid).float()  # ranks past a row's valid count do not exist
    edges = torch.tensor(RANK_BIN_EDGES, device=sims.device)
    nb = len(RANK_BIN_EDGES) - 1
    bins = (torch.bucketize(pct, edges, right=True) - 1).clamp(0, nb - 1).flatten()
    counts = torch.zeros(nb, device=sims.device).index_add_(
        0, bins, (same_sorted * in_row).flatten()
    )
    totals = torch.zeros(nb, device=sims.device).index_add_(0, bins, in_row.flatten())
    return counts, totals


class EpochLog:
    """One epoch's sums, kept on the device (reading them would wait for it every step), and
    the history entry they make.

    Every step adds its loss; a ``sampled`` step (every :data:`RANK_LOG_EVERY`-th) also adds
    the kept negatives' same-class fraction and count, averaged over queries, and (``ranks``,
    MoCo) the same-class counts per rank bin of its first :data:`RANK_LOG_QUERIES` queries.
    """

    def __init__(self, device: str, ranks: bool) -> None:
        self.start = (time.perf_counter(), time.process_time())
        bins = len(RANK_BIN_EDGES) - 1
        self.loss = torch.zeros((), device=device)
        self.same_class = torch.zeros((), device=device)
        self.used = torch.zeros((), device=device)
        self.rank_same = torch.zeros(bins, device=device) if ranks else None
        self.rank_total = torch.zeros(bins, device=device) if ranks else None
        self.steps = 0
        self.sampled = 0

    @staticmethod
    def new_history(config: TrainConfig) -> dict[str, list[Any]]:
        """An empty history with the keys that :meth:`entry` fills for ``config``."""
        keys = ["epoch", "loss", "same_class_fraction", "negatives_used", "seconds", "cpu_seconds"]
        if config.method == "moco":
            keys.append("same_class_by_rank")
        return {k: [] for k in keys}

    @torch.no_grad()
    def add(self, step: Step, labels: Tensor, sampled: bool) -> None:
        """Add one step; ``labels`` ``(B,)`` of its queries. Before the enqueue: it reads the
        queue's labels."""
        self.loss += step.loss.detach()
        self.steps += 1
        if not sampled:  # (B, N) passes: a sample of the steps suffices
            return
        frac = filters.same_class_fraction(labels, step.negative_labels, step.mask)  # (B,)
        self.same_class += torch.nan_to_num(torch.nanmean(frac), nan=0.0)
        self.used += step.mask.sum(1).float().mean()
        self.sampled += 1
        if self.rank_same is not None and self.rank_total is not None:
            r = slice(0, RANK_LOG_QUERIES)
            same = labels[r, None] == step.negative_labels[None, :]  # (R, Q)
            c, t = _rank_bin_same_class(step.similarities[r], same, step.valid[r])
            self.rank_same += c
            self.rank_total += t

    def entry(self, epoch: int) -> dict[str, Any]:
        """The history values of the epoch (numbered from 1); its clocks stop here."""
        seconds = time.perf_counter() - self.start[0]
        out: dict[str, Any] = {
            "epoch": epoch,
            "loss": self.loss.item() / self.steps,
            "same_class_fraction": self.same_class.item() / self.sampled,
            "negatives_used": self.used.item() / self.sampled,
            "seconds": seconds,
            "cpu_seconds": time.process_time() - self.start[1],
        }
        if self.rank_same is not None and self.rank_total is not None:
            out["same_class_by_rank"] = (self.rank_same / self.rank_total.clamp_min(1)).tolist()
        return out


@dataclass
class Checkpoint:
    """A run's state after a finished epoch: everything that resuming needs to continue it with
    the same numbers as an uninterrupted run.

    On disk, a dict of these fields written by :func:`negatives.runs.save_torch`; ``config`` is
    ``dataclasses.asdict`` of the run's config and ``epoch`` the number of finished epochs.
    """

    config: dict[str, Any]
    model: dict[str, Any]
    key_model: dict[str, Any] | None
    optimizer: dict[str, Any]
    queue: dict[str, Any] | None
    generators: dict[str, Tensor]
    torch_rng: Tensor
    history: dict[str, list[Any]]
    epoch: int
    elapsed: float

    @classmethod
    def capture(
        cls,
        config: TrainConfig,
        model: nn.Module,
        key_model: nn.Module | None,
        optimizer: torch.optim.Optimizer,
        queue: Queue | None,
        streams: dict[str, torch.Generator],
        history: dict[str, list[Any]],
        epoch: int,
        elapsed: float,
    ) -> Checkpoint:
        """The state of a run now, after ``epoch`` finished epochs and ``elapsed`` seconds."""
        return cls(
            config=dataclasses.asdict(config),
            model=model.state_dict(),
            key_model=key_model.state_dict() if key_model is not None else None,
            optimizer=optimizer.state_dict(),
            queue=queue.state_dict() if queue is not None else None,
            generators={name: g.get_state() for name, g in streams.items()},
            torch_rng=torch.get_rng_state(),
            history=history,
            epoch=epoch,
            elapsed=elapsed,
        )

    def restore(
        self,
        model: nn.Module,
        key_model: nn.Module | None,
        optimizer: torch.optim.Optimizer,
        queue: Queue | None,
        streams: dict[str, torch.Generator],
    ) -> None:
        """Load the state into a freshly built run's objects (and torch's global generator)."""
        model.load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)
        if key_model is not None:
            key_model.load_state_dict(self.key_model)
        if queue is not None:
            queue.load_state_dict(self.queue)
        for name, g in streams.items():
            g.set_state(self.generators[name].to(g.get_state().device))
        torch.set_rng_state(self.torch_rng)

    def save(self, path: str | Path) -> None:
        """Write the checkpoint atomically to ``path``."""
        # a shallow dict: dataclasses.asdict would deep-copy every tensor first
        runs.save_torch(path, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def load(cls, path: str | Path, config: TrainConfig) -> Checkpoint | None:
        """The checkpoint at ``path`` if it holds a run of ``config``; ``None`` if the file is
        missing, unreadable (set aside by :func:`negatives.runs.load_torch`) or of another
        config."""
        state = runs.load_torch(path)
        if state is None or state.get("config") != dataclasses.asdict(config):
            return None
        return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls)})


# -- memory ----------------------------------------------------------------------------------

# (B, 1 + Q) float32 matrices alive at once in a MoCo step (similarities, logits, their shifted
# exponentials and gradients; the masks and a band's sort indices): an estimate from losses.py
# and filters.py. SimCLR's (2B, 2B) matrices count the same.
MATRIX_COPIES: int = 8


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes one part of a run allocates, and the config fields it grows with."""

    what: str
    bytes: int
    parameters: tuple[str, ...]


def _meta_model(config: TrainConfig, data: Dataset) -> ContrastiveModel:
    """``config``'s model on the meta device: shapes, no memory. ValueError when its size does
    not fit an int64 (a width far too large)."""
    try:
        with torch.device("meta"):
            return model_for(config, data.train_images)
    except (RuntimeError, OverflowError) as err:
        raise ValueError(
            f"width={config.width}, proj_hidden={config.proj_hidden}, proj_dim="
            f"{config.proj_dim}: the model is too large to build ({err})"
        ) from None


def _activation_elements_per_sample(model: nn.Module, data: Dataset) -> int:
    """Elements of the layers' outputs per sample in a forward pass of ``model`` (on the meta
    device: nothing is allocated): roughly what backward keeps. 0 where the meta forward
    fails."""
    outputs: dict[int, Tensor] = {}

    def keep(_module: nn.Module, _inputs: Any, out: Any) -> None:
        for t in out if isinstance(out, tuple) else (out,):
            if isinstance(t, Tensor):
                outputs[id(t)] = t  # an in-place ReLU returns its input: count it once

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(keep) for m in leaves]
    try:
        x = torch.empty((2, *data.train_images.shape[1:]), device="meta")  # BN needs 2 samples
        model.train()(x)
    except (RuntimeError, ValueError, NotImplementedError):
        return 0
    finally:
        for h in hooks:
            h.remove()
    return sum(t.numel() for t in outputs.values()) // 2


def estimate_memory(config: TrainConfig, data: Dataset) -> list[MemoryNeed]:
    """What training ``config`` on ``data`` allocates on its device, by part, largest first.

    Computed from shapes alone (the model is built on the meta device): the queue of keys
    (``queue_size x (proj_dim x 4 + 16)`` bytes with its ids and labels), the ``(B, 1 + Q)``
    similarity and logit matrices (:data:`MATRIX_COPIES` of them), the encoder's and the
    head's weights with their gradients, the optimiser's state and MoCo's key encoder, the
    activations that backward keeps (2 bytes an element under bf16, else 4) and the data set
    with an epoch's view parameters. About, and rather below than above the peak.
    """
    device = cfg.resolve_device(config.device)
    bf16 = cfg.resolve_precision(config.precision, device) == "bf16"
    b, moco = config.batch_size, config.method == "moco"
    model = _meta_model(config, data)
    # weights, gradients, optimiser state (AdamW: 2 moments, SGD: momentum), MoCo's key encoder
    copies = 2 + (2 if config.optimizer == "adamw" else 1) + int(moco)
    encoder_by = ("arch",) if config.arch == "resnet18-cifar" else ("width",)
    needs = [
        MemoryNeed(
            "the encoder (weights, gradients, optimiser state)",
            4 * copies * sum(p.numel() for p in model.backbone.parameters()),
            encoder_by,
        ),
        MemoryNeed(
            "the projection head (weights, gradients, optimiser state)",
            4 * copies * sum(p.numel() for p in model.head.parameters()),
            ("proj_hidden", "proj_dim"),
        ),
        MemoryNeed(
            "the activations kept for backward",
            (2 if bf16 else 4)
            * (1 if moco else 2)  # SimCLR back-propagates through both views
            * b
            * _activation_elements_per_sample(model, data),
            ("batch_size", *encoder_by),
        ),
    ]
    n, per_image = data.train_images.shape[0], data.train_images[0].numel()
    needs.append(
        MemoryNeed(
            f"the training set {data.name!r} on the device with an epoch's view parameters",
            n * (per_image * data.train_images.element_size() + 16 + 2 * 10 * 4)
            + 2 * b * per_image * 4,
            (),
        )
    )
    if moco:
        q = config.queue_size
        needs.append(
            MemoryNeed(
                "the queue of keys", q * (4 * config.proj_dim + 16), ("queue_size", "proj_dim")
            )
        )
        needs.append(
            MemoryNeed(
                "the (batch, 1 + queue) similarity and logit matrices",
                4 * MATRIX_COPIES * b * (q + 1),
                ("batch_size", "queue_size"),
            )
        )
    else:
        needs.append(
            MemoryNeed(
                "the (2 batch, 2 batch) similarity and logit matrices",
                4 * MATRIX_COPIES * (2 * b) ** 2,
                ("batch_size",),
            )
        )
    return sorted(needs, key=lambda need: need.bytes, reverse=True)


def device_memory(device: str) -> int | None:
    """Bytes a run on ``device`` can use: the machine's physical memory for ``cpu``; for
    ``cuda``, the GPU's free memory plus what torch's allocator holds unused. ``None`` where
    the system does not say."""
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def _gigabytes(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n < 1e11 else f"{n / 1e9:,.0f} GB"


def check_memory(config: TrainConfig, data: Dataset, device: str) -> list[MemoryNeed]:
    """:func:`estimate_memory`, or ``ValueError`` if it exceeds :func:`device_memory`, naming
    the fields of the parts that alone exceed it or take a tenth of the total (at least one)."""
    needs = estimate_memory(config, data)
    total, available = sum(need.bytes for need in needs), device_memory(device)
    if available is None or total <= available:
        return needs
    blamed = [n for n in needs if n.bytes > available or n.bytes >= total / 10] or needs[:1]
    parts = []
    for need in blamed:
        names = ", ".join(f"{name}={getattr(config, name)!r}" for name in need.parameters)
        who = f"{names} needs" if names else "needs"
        parts.append(f"{who} about {_gigabytes(need.bytes)} for {need.what}")
    where = "this machine has" if device == "cpu" else "the GPU has free"
    raise ValueError(
        f"this run needs about {_gigabytes(total)} of memory and {where} {_gigabytes(available)}: "
        + "; ".join(parts)
        + ". Lower them."
    )


# -- the loop --------------------------------------------------------------------------------


def model_for(config: TrainConfig, images: torch.Tensor) -> ContrastiveModel:
    """The (freshly initialised) model that ``config`` trains on ``images`` ``(N, C, H, W)``,
    before shuffle-BN splits its batch norms."""
    return build_model(
        config.arch,
        images.shape[1],
        images.shape[-1],
        width=config.width,
        proj_hidden=config.proj_hidden,
        proj_dim=config.proj_dim,
        input_dim=images[0].numel(),
    )


def _build_models(
    config: TrainConfig, data: Dataset, device: str
) -> tuple[ContrastiveModel, ContrastiveModel | None, Queue | None]:
    torch.manual_seed(config.seed)  # the same initialisation in every condition of a seed
    model = model_for(config, data.train_images)
    if config.batchnorm_groups > 1:
        split_batchnorm(model, config.batchnorm_groups)
    model = model.to(device)
    if config.arch != "mlp":  # faster convolutions on CUDA and, for the small CNN, on the CPU too
        model = model.to(memory_format=torch.channels_last)
    if config.method != "moco":
        return model, None, None
    key_model = copy.deepcopy(model)
    for p in key_model.parameters():
        p.requires_grad_(False)
    return model, key_model, Queue(config.queue_size, config.proj_dim, device=device)


def _check_data(config: TrainConfig, data: Dataset) -> int:
    """The number of training samples, if ``config`` can train on ``data``."""
    n = data.train_images.shape[0]
    if n < config.batch_size:
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {n} training samples of {data.name!r}"
        )
    if config.positives == "views" and data.train_images.shape[-1] == 1:
        raise ValueError(
            f"positives='views' needs images; {data.name!r} holds vectors: use 'latent-class'"
        )
    return n


def _check_finite(
    loss: Tensor, config: TrainConfig, where: str, done: int, checkpoint: str | Path | None
) -> None:
    """TrainingDiverged if ``loss`` is NaN or infinite; ``done`` epochs are in ``checkpoint``."""
    if torch.isfinite(loss):
        return
    kept = (
        f"; the last good checkpoint (epoch {done}) is kept at {checkpoint}" if checkpoint else ""
    )
    raise TrainingDiverged(
        f"loss became {loss.item()} at {where} (lr={config.lr}, temperature="
        f"{config.temperature}){kept}. Lower lr or raise temperature."
    )


def train(
    config: TrainConfig,
    data: Dataset,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    stop_after_epochs: int | None = None,
) -> TrainResult:
    """Train one encoder; resume from ``checkpoint`` when it holds an unfinished run.

    ``stop_after_epochs`` stops early (as an interruption would), leaving the checkpoint; used by
    the tests of resumption.
    """
    device = cfg.resolve_device(config.device)
    n = _check_data(config, data)
    check_memory(config, data, device)  # before anything is allocated
    # CPU generators: the same config and seed draw the same numbers on any device
    streams = {name: stream_generator(config.seed, name) for name in STREAMS}
    images = data.train_images.to(device)  # uint8 (N, C, H, W), stays on the device
    labels = data.train_labels.to(device)
    model, key_model, queue = _build_models(config, data, device)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = n // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    history, done, elapsed = EpochLog.new_history(config), 0, 0.0
    state = Checkpoint.load(checkpoint, config) if checkpoint is not None else None
    if state is not None:
        state.restore(model, key_model, optimizer, queue, streams)
        history, done, elapsed = state.history, state.epoch, state.elapsed

    precision = cfg.resolve_precision(config.precision, device)
    how = dict(device=device, bf16=precision == "bf16", channels_last=config.arch != "mlp")
    encoder_q = Encoder(torch.compile(model) if config.compile else model, **how)
    encoder_k = Encoder(key_model, **how) if key_model is not None else None
    plan_epoch = functools.partial(_plan_epoch, n, images, data.train_labels.cpu(), config)
    if queue is not None and encoder_k is not None and done == 0:
        fill_queue(queue, encoder_k, images, labels, plan_epoch(streams["data"]), config.batch_size)

    last = config.epochs if stop_after_epochs is None else min(config.epochs, stop_after_epochs)
    desc = f"{config.method} {config.negatives}"
    bar = tqdm(range(done, last), desc=desc, disable=not progress, leave=False)
    mask_gen, shuffle_gen = streams["mask"], streams["shuffle"]
    for epoch in bar:
        log = EpochLog(device, ranks=queue is not None)
        model.train()
        plan = plan_epoch(streams["data"])
        for b in range(steps_per_epoch):
            idx, where = plan.batch(b, config.batch_size)
            batch = Batch(idx, labels[idx], *_views(images, plan, where))
            t = epoch * steps_per_epoch + b
            for g in optimizer.param_groups:
                g["lr"] = config.lr * _lr_factor(t, total_steps, warmup_steps, config.schedule)
            if queue is None or encoder_k is None:
                step = simclr_step(encoder_q, batch, config, mask_gen)
            else:
                step = moco_step(encoder_q, encoder_k, queue, batch, config, mask_gen, shuffle_gen)
            _check_finite(step.loss, config, f"epoch {epoch + 1}, step {b + 1}", done, checkpoint)
            log.add(step, batch.labels, sampled=b % RANK_LOG_EVERY == 0)
            update(optimizer, step.loss)
            if queue is not None and step.keys is not None:
                queue.enqueue(step.keys, batch.ids, batch.labels)  # after the step, as MoCo
        for key, value in log.entry(epoch + 1).items():
            history[key].append(value)
        elapsed += history["seconds"][-1]
        done = epoch + 1
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
        if checkpoint is not None:
            state = Checkpoint.capture(
                config, model, key_model, optimizer, queue, streams, history, done, elapsed
            )
            state.save(checkpoint)
    bar.close()
    images_seen = 2 * steps_per_epoch * config.batch_size * len(history["epoch"])
    return TrainResult(
        model=model.eval(),
        key_model=key_model.eval() if key_model is not None else None,
        history=history,
        config=config,
        device=device,
        seconds=elapsed,
        images_per_second=images_seen / elapsed if elapsed > 0 else math.nan,
        precision=precision,
        extra={"finished": len(history["epoch"]) == config.epochs},
    )


@dataclass
class Run:
    """A finished, cached training run."""

    run_id: str
    config: TrainConfig
    result: dict[str, Any]
    store: runs.RunStore

    @property
    def history(self) -> dict[str, list[Any]]:
        return self.result["history"]

    def load_model(self, device: str = "cpu") -> ContrastiveModel:
        """The trained query encoder (with projection head), in eval mode."""
        state = runs.load_torch(self.store.run_dir(self.run_id) / "model.pt")
        if state is None:
            raise FileNotFoundError(f"model weights of run {self.run_id} are missing or corrupt")
        meta = self.result["model_args"]
        model = build_model(**meta)
        model.load_state_dict(state)
        return model.to(device).eval()

    def evaluate(self, name: str, params: dict[str, Any], compute) -> dict[str, Any]:
        return self.store.evaluation(self.run_id, name, params, compute)


def run(
    config: TrainConfig,
    data: Dataset,
    store: runs.RunStore | None = None,
    *,
    progress: bool = True,
) -> Run:
    """Train ``config`` on ``data`` unless its finished result is cached; resume if interrupted."""
    store = store or runs.RunStore()
    how = execution(config)
    run_id = runs.config_hash(config, data.fingerprint, execution=how)
    run_dir = store.run_dir(run_id)
    result = store.result(run_id)
    if result is None:
        runs.write_json(
            run_dir / "config.json",
            {
                "config": config,
                "data": data.fingerprint,
                "dataset": data.name,
                "execution": how,
            },
        )
        out = train(config, data, checkpoint=run_dir / "checkpoint.pt", progress=progress)
        model_args = dict(
            arch=config.arch,
            in_channels=data.train_images.shape[1],
            image_size=data.train_images.shape[-1],
            width=config.width,
            proj_hidden=config.proj_hidden,
            proj_dim=config.proj_dim,
            input_dim=data.train_images[0].numel(),
        )
        runs.save_torch(
            run_dir / "model.pt", {k: v.cpu() for k, v in out.model.state_dict().items()}
        )
        result = {
            "run_id": run_id,
            "config": dataclasses.asdict(config),
            "dataset": data.name,
            "data_fingerprint": data.fingerprint,
            "history": out.history,
            "model_args": model_args,
            "seconds": out.seconds,
            "images_per_second": out.images_per_second,
            "environment": runs.environment(out.device),
            "execution": how,
        }
        runs.write_json(run_dir / "result.json", result)
        result = store.result(run_id)
        assert result is not None
    return Run(run_id=run_id, config=config, result=result, store=store)


def sweep(
    configs: list[TrainConfig],
    data: Dataset,
    store: runs.RunStore | None = None,
    *,
    desc: str = "runs",
    progress: bool = True,
) -> list[Run]:
    """Run every config (cached ones are reused, an interrupted one resumes), with one bar."""
    store = store or runs.RunStore()
    out = []
    bar = tqdm(configs, desc=desc, disable=not progress)
    for config in bar:
        out.append(run(config, data, store, progress=False))
    bar.close()
    return out
