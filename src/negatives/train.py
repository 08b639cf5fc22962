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

One run across several processes (``torchrun --nproc-per-node W -m negatives.train --config
run.json``, :func:`main`): every rank trains its share of every batch under
DistributedDataParallel and the config alone determines the numbers (see :class:`TrainConfig`
and :func:`check_world_size`): SimCLR gathers every rank's embeddings with their gradients, MoCo
shuffles the key batch across ranks and keeps one global queue on every rank, and a 2-rank run
equals a one-process run whose batch norm is split in the same groups, within float rounding.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import functools
import hashlib
import inspect
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from negatives import augment, distributed, filters, losses, runs
from negatives import config as cfg
from negatives.data import Dataset, load_dataset, sample_same_class
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
    """Every hyper-parameter of one training run (mirrored as keyword defaults of the notebooks).

    The config alone determines the numbers; the number of processes that train it (``torchrun
    --nproc-per-node W``) only distributes the work, so that a run on 4 GPUs can be checked on
    one CPU: ``batch_size`` is the global batch (each of ``W`` ranks trains ``batch_size / W``
    rows of it), ``bn_groups`` the global number of batch-norm groups (each rank normalises its
    rows in ``bn_groups / W`` groups) and the negatives of a query are the global batch's
    (SimCLR) or the one global queue (MoCo). A one-process run of a config with ``bn_groups=4``
    is what 4 GPUs of a quarter of the batch each compute, within float rounding.

    ``negative_groups`` (SimCLR) cuts the batch into that many consecutive groups and each
    anchor contrasts only with its own group: the setting of Nozawa & Sato (2021), whose 4 GPUs
    each contrasted their own batch (``negative_groups=4``, so their ``K + 1`` is the per-GPU
    batch, :attr:`negatives_per_query`). On ``W`` ranks with ``negative_groups`` a multiple of
    ``W`` no embedding is sent; in one process it is a mask over the logits.

    ``tau_plus`` and ``beta`` replace the loss's negative term by the debiased estimate of
    Chuang et al. (2020) and its hard-negative reweighting of Robinson et al. (2021)
    (:func:`negatives.losses.debiased_info_nce`); both 0 is the plain InfoNCE / NT-Xent.
    """

    method: str = "simclr"
    arch: str = "cnn-small"
    width: int = 32
    feature_grid: int = 1  # the backbone's features: its last map pooled over a g x g grid
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
    bn_groups: int | None = None  # batch-norm groups of the batch; None: 8 for moco, 1 for simclr
    negative_groups: int = 1  # SimCLR: anchors contrast only within their group of the batch
    tau_plus: float = 0.0  # class prior of the debiased negative term (Chuang et al. 2020); 0: off
    beta: float = 0.0  # hard-negative weights exp(beta s / T) (Robinson et al. 2021); 0: off
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
        for name in ("width", "feature_grid", "proj_hidden", "proj_dim", "epochs"):
            cfg.check_int(name, getattr(self, name), 1)
        if self.arch == "mlp" and self.feature_grid != 1:
            raise ValueError(
                f"feature_grid={self.feature_grid}: arch='mlp' has no feature map to pool; "
                "leave it 1"
            )
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
        cfg.check_float("tau_plus", self.tau_plus, 0.0, 1.0)
        if self.tau_plus >= 1.0:
            raise ValueError(
                f"tau_plus={self.tau_plus} must be in [0, 1): the chance that a negative shares "
                "the anchor's class (1/C for C balanced classes)"
            )
        cfg.check_float("beta", self.beta, 0.0)
        if self.debiased and self.negatives == "no-same-class":
            raise ValueError(
                f"tau_plus={self.tau_plus}, beta={self.beta} with negatives='no-same-class': the "
                "oracle has no same-class negative to correct for; use one or the other"
            )
        if self.bn_groups is not None:
            cfg.check_int("bn_groups", self.bn_groups, 1)
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
        cfg.check_int("negative_groups", self.negative_groups, 1)
        if self.negative_groups != 1:
            if self.method != "simclr":
                raise ValueError(
                    f"negative_groups={self.negative_groups} cuts SimCLR's in-batch negatives into "
                    f"groups; method={self.method!r} contrasts with its queue: leave it 1"
                )
            if self.batch_size % self.negative_groups:
                raise ValueError(
                    f"negative_groups={self.negative_groups} must divide batch_size="
                    f"{self.batch_size} (groups of batch_size / negative_groups instances)"
                )
            if self.batch_size // self.negative_groups < 2:
                raise ValueError(
                    f"negative_groups={self.negative_groups} leaves groups of one instance of "
                    f"batch_size={self.batch_size}: each anchor needs a negative in its group"
                )
        if self.negatives == "random-k":
            if self.num_negatives is None:
                raise ValueError(
                    "num_negatives must be given (an integer >= 1) when negatives='random-k'"
                )
            cfg.check_int("num_negatives", self.num_negatives, 1)
            available = self._candidates
            if self.num_negatives > available:
                simclr = (
                    "batch_size - 1"
                    if self.negative_groups == 1
                    else f"batch_size / negative_groups - 1 with negative_groups={self.negative_groups}"
                )
                raise ValueError(
                    f"num_negatives={self.num_negatives} exceeds the {available} negatives available "
                    f"to method={self.method!r} ({simclr} for simclr, queue_size for moco)"
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
        """The resolved ``bn_groups``: MoCo's default is :data:`MOCO_BN_GROUPS`, SimCLR's 1.

        The batch norm of both encoders computes its statistics per group of ``batch_size /
        bn_groups`` consecutive samples of the (global) batch: one GPU's share of a batch in a
        run across GPUs, emulated on one device (:class:`negatives.models.SplitBatchNorm`). On
        ``W`` processes each normalises its share in ``bn_groups / W`` groups, so the numbers
        do not depend on how many processes compute them (see :func:`check_world_size`).
        """
        if self.bn_groups is not None:
            return self.bn_groups
        return MOCO_BN_GROUPS if self.method == "moco" else 1

    @property
    def _candidates(self) -> int:
        """The negative instances a query has before any regime: SimCLR's other instances of
        its group of the batch, MoCo's queue."""
        if self.method == "simclr":
            return self.batch_size // self.negative_groups - 1
        return self.queue_size

    @property
    def debiased(self) -> bool:
        """Whether the loss is the debiased / reweighted one (``tau_plus`` or ``beta`` set)."""
        return self.tau_plus > 0 or self.beta > 0

    @property
    def negatives_per_query(self) -> int:
        """K: the number of negative instances each query is contrasted with (before bands):
        ``num_negatives`` for ``random-k``; else SimCLR's ``batch_size / negative_groups - 1``
        (Nozawa & Sato's K + 1 is the per-GPU batch) and MoCo's ``queue_size``."""
        if self.negatives == "random-k":
            assert self.num_negatives is not None
            return self.num_negatives
        return self._candidates


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


# The version of the training code's numbers, part of every run's identity: bump it when a
# change to the trainer (losses, masks, augmentations, models, the loop) changes what a config
# trains, so that results of the older code are not reused. 2: the cache that verifies itself;
# 3: the history logs same_class_weight (older results lack it).
TRAINER_VERSION: int = 3


@dataclass(frozen=True)
class Workers:
    """How the workers of an executor compute: what a run's identity takes from the machine
    (:func:`execution`) when the machine is not this process's. ``None``: as resolved here."""

    device: str | None = None
    precision: str | None = None
    cpu_threads: int | None = None
    world_size: int = 1
    train_here: bool = False  # False: a run the workers did not finish is an error, not trained


_WORKERS: ContextVar[Workers | None] = ContextVar("negatives_workers", default=None)


@contextlib.contextmanager
def computed_by(workers: Workers) -> Iterator[None]:
    """Within the block, run ids are those of runs trained by ``workers`` (see
    :mod:`negatives.sweep`: a notebook collects what an executor's workers trained)."""
    token = _WORKERS.set(workers)
    try:
        yield
    finally:
        _WORKERS.reset(token)


def execution(config: TrainConfig, workers: Workers | None = None) -> dict[str, Any]:
    """What ``config`` leaves to the machine but the numbers depend on; part of a run's identity.

    The device and precision that ``auto`` resolves to; on the CPU the number of torch threads
    (reductions split across threads round differently, so 1 and 2 threads give slightly
    different weights); the number of processes of a distributed run (likewise); and
    :data:`TRAINER_VERSION`. ``workers`` (default: the one set by :func:`computed_by`, else this
    process) says what the machine that trains the run resolves them to.
    """
    w = workers if workers is not None else _WORKERS.get()
    device = w.device if w is not None and w.device else cfg.resolve_device(config.device)
    precision = (
        w.precision
        if w is not None and w.precision
        else cfg.resolve_precision(config.precision, device)
    )
    out: dict[str, Any] = {"device": device, "precision": precision, "trainer": TRAINER_VERSION}
    if device == "cpu":
        threads = w.cpu_threads if w is not None and w.cpu_threads else torch.get_num_threads()
        out["cpu_threads"] = threads
    world = w.world_size if w is not None else distributed.world_size()
    if world > 1:
        out["world_size"] = world
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


def _view(images: Tensor, plan: EpochPlan, where: slice | Tensor, which: int) -> Tensor:
    """View ``which`` (0: the query's, 1: the key's or positive) ``(n, C, H, W)`` float of the
    samples at positions ``where`` (a slice or ``(n,)`` indices) of the plan: one of
    :func:`_views`' two, for a rank that needs one view of other rows than its own."""
    if plan.views is None:  # latent-class positives: another sample of the class
        assert plan.partners is not None
        ids = plan.perm[where] if which == 0 else plan.partners[where]
        return augment.to_float(images[ids])
    return augment.apply_view(images[plan.perm[where]], plan.views[which].select(where))


# -- one training step -----------------------------------------------------------------------


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
    ``(B, C, H, W)`` float (the query's and the key's / the positive's).

    In a run across ranks, ``ids`` and ``labels`` are the global batch's ``(B,)`` and ``rows``
    this rank's share of it; ``v1`` and ``v2`` are the views of those rows only ``(b, C, H,
    W)``. MoCo's keys are computed under a shuffle across ranks, of other rows than the rank's:
    ``v2`` is then None and ``key_views(positions)`` makes the second views of any positions
    ``(n,)`` of the batch (from the shared epoch plan: no images are sent between ranks).
    """

    ids: Tensor
    labels: Tensor
    v1: Tensor
    v2: Tensor | None
    rows: slice | None = None
    key_views: Callable[[Tensor], Tensor] | None = None

    @property
    def local_labels(self) -> Tensor:
        """The labels of this rank's rows ``(b,)`` (all of them in one process)."""
        return self.labels if self.rows is None else self.labels[self.rows]


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
    other instances of the batch (of the anchor's group, ``negative_groups``) as negatives,
    kept by the config's regime.

    The regime ranks instance ``j`` as a negative of anchor ``i`` by ``z1_i . z2_j``.

    On a rank's share ``batch.rows`` (``b`` of the ``B`` rows): with ``negative_groups == 1``
    the rank gathers every rank's ``z1``, ``z2`` with their gradients
    (:func:`negatives.distributed.all_gather_with_grad`), so each of its anchors sees the global
    batch's negatives, and its loss is the mean over its own anchors; DistributedDataParallel's
    average of the ranks' gradients is then the gradient of the whole batch's mean loss, as in
    one process. With ``negative_groups`` a multiple of the world size each anchor's group lies
    on its rank: nothing is gathered and the rank contrasts its own rows. Masks are those of
    its rows (columns: the candidates it has), ``random-k`` drawn for the whole batch.
    """
    z1, z2 = encoder(batch.v1), encoder(batch.v2)  # (b, P) each: this rank's rows (or all B)
    n = len(batch.ids)  # B
    if batch.rows is None:  # one process
        sims = (z1 @ z2.T).detach()  # (B, B), the diagonal is each anchor's positive
        valid = ~torch.eye(n, dtype=torch.bool, device=sims.device)  # (B, B)
        if config.negative_groups > 1:
            valid &= filters.group_mask(n, config.negative_groups, device=sims.device)
        mask = _negative_mask(config, sims, valid, batch.labels, batch.labels, mask_gen)
        loss = _simclr_loss(config, z1, z2, mask).mean()
        return Step(loss, sims, valid, mask, batch.labels)
    rows = batch.rows
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
        loss = losses.nt_xent(c1, c2, config.temperature, neg_mask=mask, rows=rows).mean()
    else:  # the rank's own rows are a whole batch of groups
        loss = _simclr_loss(config, c1, c2, mask).mean()
    return Step(loss, sims, valid, mask, labels)


def _simclr_loss(config: TrainConfig, z1: Tensor, z2: Tensor, mask: Tensor) -> Tensor:
    """NT-Xent of ``(B, P)`` views under the keep-mask ``(B, B)``, debiased if configured."""
    if config.debiased:
        return losses.debiased_nt_xent(
            z1, z2, config.temperature, config.tau_plus, config.beta, neg_mask=mask
        )
    return losses.nt_xent(z1, z2, config.temperature, neg_mask=mask)


def _moco_loss(config: TrainConfig, q: Tensor, k: Tensor, keys: Tensor, mask: Tensor) -> Tensor:
    """InfoNCE of queries ``(b, P)`` against their keys and the queue ``(Q, P)``, debiased if
    configured (the embeddings are unit vectors: dot products are cosines)."""
    if config.debiased:
        pos, neg = (q * k).sum(1), q @ keys.T  # (b,), (b, Q)
        return losses.debiased_info_nce(
            pos, neg, config.temperature, config.tau_plus, config.beta, mask
        )
    return losses.info_nce(q, k, keys, config.temperature, mask=mask)


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

    On a rank's share ``batch.rows``: the queries are its rows, the keys are computed under the
    shuffle across ranks (:func:`shuffled_keys_across_ranks`) and the returned ``keys`` are the
    whole batch's ``(B, P)``, so that every rank enqueues the same B keys and holds the same
    global queue: a query is contrasted (and a band ranks it) against the whole global queue.
    """
    q = encoder_q(batch.v1)  # (b, P): this rank's rows (or all B)
    momentum_update(encoder_k.net, encoder_q.net, config.momentum)
    keys = queue.keys  # (Q, P)
    if batch.rows is None:  # one process
        with torch.no_grad():
            k = shuffled_keys(encoder_k, batch.v2, config.batchnorm_groups, shuffle_gen)  # (B, P)
        sims = torch.einsum("bp,qp->bq", q.detach(), keys)  # (B, Q)
        # A key of the query's own instance from an earlier step is not a negative: it matters
        # when the queue holds a large part of a small data set.
        valid = queue.valid[None, :] & (queue.ids[None, :] != batch.ids[:, None])  # (B, Q)
        mask = _negative_mask(config, sims, valid, batch.labels, queue.labels, mask_gen)
        loss = _moco_loss(config, q, k, keys, mask).mean()
        return Step(loss, sims, valid, mask, queue.labels, keys=k)
    assert batch.key_views is not None, "a rank's MoCo batch needs key_views"
    with torch.no_grad():
        k_all = shuffled_keys_across_ranks(encoder_k, batch.key_views, len(batch.ids), shuffle_gen)
    k = k_all[batch.rows]  # (b, P), the keys of this rank's queries
    sims = torch.einsum("bp,qp->bq", q.detach(), keys)  # (b, Q)
    ids = batch.ids[batch.rows]  # (b,)
    valid = queue.valid[None, :] & (queue.ids[None, :] != ids[:, None])  # (b, Q)
    share = None
    if config.negatives == "random-k":  # drawn for the whole batch: its (B, Q) valid mask
        valid_all = queue.valid[None, :] & (queue.ids[None, :] != batch.ids[:, None])
        share = (valid_all, batch.rows, slice(None))
    mask = _negative_mask(config, sims, valid, batch.local_labels, queue.labels, mask_gen, share)
    loss = _moco_loss(config, q, k, keys, mask).mean()
    return Step(loss, sims, valid, mask, queue.labels, keys=k_all)


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
    first included, sees a full queue of the data's keys.

    In a run across ranks each rank computes the keys of its share of every such batch: the
    rows of its ``groups / W`` of the ``groups`` batch-norm groups (``config.batchnorm_groups``)
    one process would split the batch into (the last batch's groups may differ by one in size,
    as ``tensor_split``'s), and every rank enqueues the gathered keys of the whole batch.
    """
    count = min(queue.size, plan.perm.shape[0])
    world, me = distributed.world_size(), distributed.rank()
    for start in range(0, count, batch_size):
        where = slice(start, min(start + batch_size, count))
        ids = plan.perm[where]
        if world == 1:
            _, v2 = _views(images, plan, where)
            queue.enqueue(encoder_k(v2), ids, labels[ids])
            continue
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
    the kept negatives' same-class fraction and count, averaged over queries, the share of the
    softmax's negative weight on same-class negatives (logits ``scale * s``, ``scale = (1 +
    beta) / T``: :func:`negatives.filters.same_class_weight`), and (``ranks``, MoCo) the
    same-class counts per rank bin of its first :data:`RANK_LOG_QUERIES` queries.

    In a run across ranks (``rows``: this rank's rows of every batch) the log is the global
    batch's, the same on every rank: the caller passes the global loss (the mean of the ranks'
    shares' means, which is the batch's mean); the per-query values of a sampled step are
    gathered from every rank before they are averaged as one process averages them; the rank
    bins count the global batch's first queries on whichever ranks hold them; an epoch's
    ``seconds`` is the slowest rank's and ``cpu_seconds`` the sum over ranks (the run's CPU
    time, as one process's counts all its threads).
    """

    def __init__(
        self,
        device: str,
        ranks: bool,
        rows: slice | None = None,
        scale: float = 1.0,
        start: tuple[float, float] | None = None,
    ) -> None:
        self.rows = rows
        self.scale = scale
        # (wall, CPU) clocks the epoch counts from: now, or earlier for the first epoch's set-up
        self.start = start or (time.perf_counter(), time.process_time())
        bins = len(RANK_BIN_EDGES) - 1
        self.loss = torch.zeros((), device=device)
        self.same_class = torch.zeros((), device=device)
        self.same_weight = torch.zeros((), device=device)
        self.used = torch.zeros((), device=device)
        self.rank_same = torch.zeros(bins, device=device) if ranks else None
        self.rank_total = torch.zeros(bins, device=device) if ranks else None
        self.steps = 0
        self.sampled = 0

    @staticmethod
    def new_history(config: TrainConfig) -> dict[str, list[Any]]:
        """An empty history with the keys that :meth:`entry` fills for ``config``."""
        keys = ["epoch", "loss", "same_class_fraction", "same_class_weight", "negatives_used"]
        keys += ["seconds", "cpu_seconds"]
        if config.method == "moco":
            keys.append("same_class_by_rank")
        return {k: [] for k in keys}

    @torch.no_grad()
    def add(self, step: Step, labels: Tensor, sampled: bool, loss: Tensor | None = None) -> None:
        """Add one step; ``labels`` ``(b,)`` of its queries (this rank's). Before the enqueue:
        it reads the queue's labels. ``loss``: the batch's loss to log (default ``step.loss``;
        a rank's caller passes the global one)."""
        self.loss += (step.loss if loss is None else loss).detach()
        self.steps += 1
        if not sampled:  # (B, N) passes: a sample of the steps suffices
            return
        frac = filters.same_class_fraction(labels, step.negative_labels, step.mask)  # (b,)
        weight = filters.same_class_weight(
            labels, step.negative_labels, self.scale * step.similarities, step.mask
        )  # (b,)
        used = step.mask.sum(1).float()  # (b,)
        if self.rows is not None:  # the global batch's queries, in batch order: (B,)
            frac, used = distributed.all_gather(frac), distributed.all_gather(used)
            weight = distributed.all_gather(weight)
        self.same_class += torch.nan_to_num(torch.nanmean(frac), nan=0.0)
        self.same_weight += torch.nan_to_num(torch.nanmean(weight), nan=0.0)
        self.used += used.mean()
        self.sampled += 1
        if self.rank_same is not None and self.rank_total is not None:
            r = slice(0, RANK_LOG_QUERIES)
            if self.rows is not None:  # this rank's rows among the batch's first queries
                r = slice(0, max(0, min(self.rows.stop, RANK_LOG_QUERIES) - self.rows.start))
            same = labels[r, None] == step.negative_labels[None, :]  # (R, Q)
            c, t = _rank_bin_same_class(step.similarities[r], same, step.valid[r])
            if self.rows is not None:  # counts of whole numbers: their float sum is exact
                c, t = distributed.all_reduce(c), distributed.all_reduce(t)
            self.rank_same += c
            self.rank_total += t

    def entry(self, epoch: int) -> dict[str, Any]:
        """The history values of the epoch (numbered from 1); its clocks stop here."""
        seconds = time.perf_counter() - self.start[0]
        cpu_seconds = time.process_time() - self.start[1]
        if self.rows is not None:
            clocks = torch.tensor([seconds, cpu_seconds], dtype=torch.float64)
            clocks = clocks.to(self.loss.device)
            seconds = distributed.all_reduce(clocks[:1], "max").item()
            cpu_seconds = distributed.all_reduce(clocks[1:], "sum").item()
        out: dict[str, Any] = {
            "epoch": epoch,
            "loss": self.loss.item() / self.steps,
            "same_class_fraction": self.same_class.item() / self.sampled,
            "same_class_weight": self.same_weight.item() / self.sampled,
            "negatives_used": self.used.item() / self.sampled,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
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
        if not isinstance(state, dict) or state.get("config") != dataclasses.asdict(config):
            return None
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in state]
        if missing:  # of this config but not resumable: set aside, not a KeyError every re-run
            runs.set_aside(Path(path), f"lacks {', '.join(missing)}")
            return None
        return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls)})

    @staticmethod
    def finished_epochs(path: str | Path, config: TrainConfig) -> int:
        """The epochs a resume from ``path`` starts after (0: none, or not resumable)."""
        state = Checkpoint.load(path, config) if Path(path).exists() else None
        return 0 if state is None else int(state.epoch)


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
        grid=config.feature_grid,
    )


def _build_models(
    config: TrainConfig, data: Dataset, device: str, world: int = 1
) -> tuple[ContrastiveModel, ContrastiveModel | None, Queue | None]:
    """The query encoder, MoCo's key encoder and queue of one of ``world`` ranks: its batch
    norm splits the rank's share of a batch into ``bn_groups / world`` groups."""
    torch.manual_seed(config.seed)  # the same initialisation in every condition of a seed
    model = model_for(config, data.train_images)
    groups = config.batchnorm_groups // world
    if groups > 1:
        split_batchnorm(model, groups)
    model = model.to(device)
    if config.arch != "mlp":  # faster convolutions on CUDA and, for the small CNN, on the CPU too
        model = model.to(memory_format=torch.channels_last)
    if config.method != "moco":
        return model, None, None
    key_model = copy.deepcopy(model)
    for p in key_model.parameters():
        p.requires_grad_(False)
    return model, key_model, Queue(config.queue_size, config.proj_dim, device=device)


def check_world_size(config: TrainConfig, world_size: int) -> None:
    """``ValueError``, naming the field, unless ``config`` can be trained by ``world_size``
    processes with the numbers of one process.

    Each rank trains ``batch_size / W`` rows of every batch and normalises them in
    ``bn_groups / W`` batch-norm groups, so ``bn_groups`` must be a multiple of ``W`` and divide
    ``batch_size`` (then the ranks' groups are the one-process run's groups). With
    ``negative_groups`` a multiple of ``W`` each group lies on one rank and nothing is gathered;
    with 1 every rank gathers the whole batch; anything else would split a group across ranks.
    """
    world = cfg.check_int("world_size", world_size, 1)
    if world == 1:
        return
    groups = config.batchnorm_groups
    given = f"bn_groups={config.bn_groups}" + (
        f" (method={config.method!r}'s default, {groups})" if config.bn_groups is None else ""
    )
    if groups % world:
        raise ValueError(
            f"{given} must be a multiple of the world size {world}: each of the {world} "
            f"processes normalises its share of the batch in bn_groups / {world} batch-norm "
            f"groups (bn_groups={world}: one group per process, the usual per-GPU batch norm)"
        )
    if config.batch_size % groups:
        raise ValueError(
            f"batch_size={config.batch_size} must be a multiple of bn_groups={groups} on "
            f"{world} processes, so that their batch-norm groups are a one-process run's"
        )
    if config.debiased and config.method == "simclr" and config.negative_groups == 1:
        raise ValueError(
            f"tau_plus={config.tau_plus}, beta={config.beta} with method='simclr' on {world} "
            "processes: the debiased NT-Xent of a rank's share of a gathered batch is not "
            "implemented; train it in one process (or with negative_groups a multiple of the "
            "world size)"
        )
    if config.negative_groups != 1 and config.negative_groups % world:
        raise ValueError(
            f"negative_groups={config.negative_groups} must be 1 (every anchor contrasts with "
            f"the global batch, gathered from every process) or a multiple of the world size "
            f"{world} (each group on one process, nothing gathered)"
        )


def _data_parallel(model: nn.Module, device: str) -> nn.Module:
    """``model`` under DistributedDataParallel: gradients averaged over the ranks in backward.

    Its buffers are not synchronised at each forward pass (DDP's default copies rank 0's): the
    batch-norm statistics of each rank's own groups would be overwritten between SimCLR's two
    forward passes. They are averaged once an epoch instead (:func:`_average_batchnorm`).
    """
    no_sync = (
        {"forward_sync_buffers": False}  # torch >= 2.14's name
        if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
        else {"broadcast_buffers": False}
    )
    ids = [torch.cuda.current_device()] if device == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, **no_sync)


def _average_batchnorm(*modules: nn.Module | None) -> None:
    """Average the batch norms' running statistics over the ranks, in place.

    Each rank's running mean and variance follow ``r <- (1 - m) r + m s`` with ``s`` the mean
    of its own groups' statistics, from the same start and with the same ``m`` on every rank;
    the recursion is linear, so the mean over ranks of their ``r`` is, at any time, what one
    process computes from the mean over all groups: averaging once an epoch (before the
    checkpoint) is exact, and makes the ranks' models identical.
    """
    stats = [
        t
        for module in modules
        if module is not None
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
        for t in (m.running_mean, m.running_var)
        if t is not None
    ]
    distributed.average_(stats)


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

    In a process group of ``W`` ranks (``torchrun``; :func:`check_world_size` says which configs
    can) every rank calls this with the same arguments. Every rank draws the same epoch plans
    from the same CPU generators, so no data is sent: rank ``r`` trains rows ``[r B / W, (r +
    1) B / W)`` of every batch, under DistributedDataParallel, with the gathers of
    :func:`simclr_step` and :func:`moco_step`; every rank holds the same global queue. Only
    rank 0 reads and writes ``checkpoint`` (the others receive what it read), and every rank
    returns the whole model and the global history.
    """
    world = distributed.world_size()
    check_world_size(config, world)
    device = cfg.resolve_device(config.device)
    n = _check_data(config, data)
    check_memory(config, data, device)  # before anything is allocated
    # CPU generators: the same config and seed draw the same numbers on any device
    streams = {name: stream_generator(config.seed, name) for name in STREAMS}
    images = data.train_images.to(device)  # uint8 (N, C, H, W), stays on the device
    labels = data.train_labels.to(device)
    model, key_model, queue = _build_models(config, data, device, world)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = n // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    history, done, elapsed = EpochLog.new_history(config), 0, 0.0
    state = None
    if checkpoint is not None and distributed.is_main():
        state = Checkpoint.load(checkpoint, config)
    if world > 1 and checkpoint is not None:  # rank 0's state, whatever the others' disks hold
        state = distributed.broadcast_object(state)
    if state is not None:
        state.restore(model, key_model, optimizer, queue, streams)
        history, done, elapsed = state.history, state.epoch, state.elapsed

    precision = cfg.resolve_precision(config.precision, device)
    how = dict(device=device, bf16=precision == "bf16", channels_last=config.arch != "mlp")
    net = _data_parallel(model, device) if world > 1 else model
    encoder_q = Encoder(torch.compile(net) if config.compile else net, **how)
    encoder_k = Encoder(key_model, **how) if key_model is not None else None
    plan_epoch = functools.partial(_plan_epoch, n, images, data.train_labels.cpu(), config)
    setup = (time.perf_counter(), time.process_time())  # MoCo's queue fill counts as training
    if queue is not None and encoder_k is not None and done == 0:
        first_plan = plan_epoch(streams["data"])
        groups = config.batchnorm_groups
        fill_queue(queue, encoder_k, images, labels, first_plan, config.batch_size, groups=groups)

    share = config.batch_size // world
    rows = (
        slice(distributed.rank() * share, (distributed.rank() + 1) * share) if world > 1 else None
    )
    last = config.epochs if stop_after_epochs is None else min(config.epochs, stop_after_epochs)
    desc = f"{config.method} {config.negatives}"
    shown = progress and distributed.is_main()
    bar = tqdm(range(done, last), desc=desc, disable=not shown, leave=False)
    mask_gen, shuffle_gen = streams["mask"], streams["shuffle"]
    first = done  # this process's first epoch, whose clock started at the set-up
    for epoch in bar:
        scale = (1 + config.beta) / config.temperature  # the softmax's logits per similarity
        start = setup if epoch == first else None
        log = EpochLog(device, ranks=queue is not None, rows=rows, scale=scale, start=start)
        model.train()
        plan = plan_epoch(streams["data"])
        for b in range(steps_per_epoch):
            idx, where = plan.batch(b, config.batch_size)
            if rows is None:
                batch = Batch(idx, labels[idx], *_views(images, plan, where))
            else:
                batch = _rank_batch(images, labels, plan, where, rows, moco=queue is not None)
            t = epoch * steps_per_epoch + b
            for g in optimizer.param_groups:
                g["lr"] = config.lr * _lr_factor(t, total_steps, warmup_steps, config.schedule)
            if queue is None or encoder_k is None:
                step = simclr_step(encoder_q, batch, config, mask_gen)
            else:
                step = moco_step(encoder_q, encoder_k, queue, batch, config, mask_gen, shuffle_gen)
            # the global batch's loss: every rank sees a divergence on any rank, and logs it
            loss = step.loss if rows is None else distributed.all_reduce(step.loss, "mean")
            _check_finite(loss, config, f"epoch {epoch + 1}, step {b + 1}", done, checkpoint)
            log.add(step, batch.local_labels, sampled=b % RANK_LOG_EVERY == 0, loss=loss)
            update(optimizer, step.loss)
            if queue is not None and step.keys is not None:
                queue.enqueue(step.keys, batch.ids, batch.labels)  # after the step, as MoCo
        if world > 1:
            _average_batchnorm(model, key_model)
        for key, value in log.entry(epoch + 1).items():
            history[key].append(value)
        elapsed += history["seconds"][-1]
        done = epoch + 1
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
        if checkpoint is not None and distributed.is_main():  # the ranks' states are equal
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
        extra={"finished": len(history["epoch"]) == config.epochs, "world_size": world},
    )


def _rank_batch(
    images: Tensor, labels: Tensor, plan: EpochPlan, where: slice, rows: slice, moco: bool
) -> Batch:
    """This rank's :class:`Batch` of the batch at plan positions ``where``: the global ids and
    labels ``(B,)``, the views of its ``rows`` ``(b, C, H, W)``; MoCo's second views made on
    demand for the rows of the shuffle across ranks."""
    idx = plan.perm[where]
    mine = slice(where.start + rows.start, where.start + rows.stop)
    if not moco:
        return Batch(idx, labels[idx], *_views(images, plan, mine), rows=rows)

    def key_views(positions: Tensor) -> Tensor:  # batch positions (n,) -> (n, C, H, W)
        return _view(images, plan, positions.to(images.device) + where.start, 1)

    return Batch(idx, labels[idx], _view(images, plan, mine, 0), None, rows, key_views)


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


class RunMissing(RuntimeError):
    """A run that an executor's workers were to train is not in the cache (see
    :mod:`negatives.sweep`)."""


# How often a worker that waits for a run another worker trains looks again.
POLL_SECONDS: float = 2.0


def run(
    config: TrainConfig,
    data: Dataset,
    store: runs.RunStore | None = None,
    *,
    progress: bool = True,
    wait: bool = True,
) -> Run | None:
    """Train ``config`` on ``data`` unless its finished result is cached; resume if interrupted.

    The run cache is the rendezvous of every worker that shares ``store``: a run is trained by
    the one worker that holds its lock (:meth:`negatives.runs.RunStore.lock`); another worker
    waits for it (or, with ``wait=False``, returns None at once), and takes it over from its
    checkpoint if its holder dies. In a distributed run only rank 0 reads and writes the cache.
    Inside :func:`computed_by` with ``train_here=False``, a run that is not cached raises
    :class:`RunMissing` instead of being trained here.
    """
    store = store or runs.RunStore()
    how = execution(config)
    run_id = runs.config_hash(config, data.fingerprint, execution=how)
    workers = _WORKERS.get()
    while True:
        lock = None
        if distributed.is_main():
            result = store.result(run_id)
            if result is None and workers is not None and not workers.train_here:
                raise RunMissing(
                    f"run {run_id} ({config.method}, negatives={config.negatives}, seed="
                    f"{config.seed}) is not finished in {store.root}: the executor's workers "
                    "did not train it (see their logs; `python -m negatives.sweep status` lists "
                    "the plan's runs)"
                )
            if result is None:
                lock = store.lock(run_id)
                if lock is not None:  # finished by another worker between the two looks?
                    result = store.result(run_id)
            decision = "cached" if result is not None else "train" if lock else "busy"
        else:
            result = None
        decision = distributed.broadcast_object(decision if distributed.is_main() else None)
        if decision == "cached":
            result = distributed.broadcast_object(result)
            return Run(run_id=run_id, config=config, result=result, store=store)
        if decision == "train":
            try:
                result = _train_and_save(config, data, store, run_id, how, progress)
            finally:
                if lock is not None:
                    lock.release()
            return Run(run_id=run_id, config=config, result=result, store=store)
        if not wait:
            return None
        time.sleep(POLL_SECONDS)


def _train_and_save(
    config: TrainConfig,
    data: Dataset,
    store: runs.RunStore,
    run_id: str,
    how: dict[str, Any],
    progress: bool,
) -> dict[str, Any]:
    """Train (resuming from the run's checkpoint) and write the run's files; rank 0 writes."""
    run_dir = store.run_dir(run_id)
    main = distributed.is_main()
    checkpoint = run_dir / "checkpoint.pt"
    if main:
        runs.write_json(
            run_dir / "config.json",
            {"config": config, "data": data.fingerprint, "dataset": data.name, "execution": how},
        )
        start = Checkpoint.finished_epochs(checkpoint, config)
        store.log_attempt(run_id, event="start", from_epoch=start, epochs=config.epochs)
    out = train(config, data, checkpoint=checkpoint, progress=progress)
    result = None
    if main:
        model_args = dict(
            arch=config.arch,
            in_channels=data.train_images.shape[1],
            image_size=data.train_images.shape[-1],
            width=config.width,
            proj_hidden=config.proj_hidden,
            proj_dim=config.proj_dim,
            input_dim=data.train_images[0].numel(),
            grid=config.feature_grid,
        )
        model_path = run_dir / "model.pt"
        runs.save_torch(model_path, {k: v.cpu() for k, v in out.model.state_dict().items()})
        payload = {
            "run_id": run_id,
            "config": dataclasses.asdict(config),
            "dataset": data.name,
            "data_fingerprint": data.fingerprint,
            "history": out.history,
            "model_args": model_args,
            "model_sha256": runs.file_sha256(model_path),
            "seconds": out.seconds,
            "images_per_second": out.images_per_second,
            "environment": runs.environment(out.device),
            "execution": how,
        }
        runs.write_json(run_dir / "result.json", payload)
        store.log_attempt(run_id, event="finished", seconds=out.seconds)
        result = store.result(run_id)
        assert result is not None, f"run {run_id}: the result just written does not verify"
    return distributed.broadcast_object(result)


def sweep(
    configs: list[TrainConfig],
    data: Dataset,
    store: runs.RunStore | None = None,
    *,
    desc: str = "runs",
    progress: bool = True,
) -> list[Run]:
    """Run every config (cached ones are reused, an interrupted one resumes), with one bar,
    taking turns with other workers on ``store`` (:func:`take_turns`)."""
    store = store or runs.RunStore()
    attempts = [functools.partial(run, c, data, store, progress=False, wait=False) for c in configs]
    return take_turns(attempts, store, desc=desc, progress=progress)


def take_turns(
    attempts: Sequence[Callable[[], Run | None]],
    store: runs.RunStore,
    *,
    desc: str = "runs",
    progress: bool = True,
) -> list[Run]:
    """Call each attempt (a :func:`run` with ``wait=False``: None while another worker holds the
    run) until every one has returned its run; the runs, in order, with one bar.

    A run that another worker is training is skipped at first and collected when that worker
    finishes it (or taken over if it dies), so that workers sharing one results folder share
    the work instead of waiting in turn. Leftover temporary files are cleaned first.
    """
    store.clean_temporary()
    out: list[Run | None] = [None] * len(attempts)
    bar = tqdm(total=len(attempts), desc=desc, disable=not progress)
    pending = list(range(len(attempts)))
    while pending:
        busy = []
        for i in pending:
            out[i] = attempts[i]()
            if out[i] is None:
                busy.append(i)
            else:
                bar.update(1)
        if busy:
            bar.set_postfix(waiting=f"{len(busy)} runs of other workers")
            time.sleep(POLL_SECONDS)
        pending = busy
    bar.close()
    return [r for r in out if r is not None]


# -- the command line ------------------------------------------------------------------------

CLI_DESCRIPTION = """\
Train one run (or find it in the run cache) from a JSON file: an object with the keys "config"
(TrainConfig's fields) and "data" (negatives.data.load_dataset's arguments), e.g.
{"config": {"method": "moco", "epochs": 200, "batch_size": 256, "bn_groups": 4},
 "data": {"name": "cifar10", "root": "/data/cifar10"}};
other keys are ignored. A sweep plan (JSON lines, `python -m negatives.sweep plan ...`) is
read too: --index chooses its line. Under torchrun every process trains its share of each batch
of the same run (DistributedDataParallel); rank 0 reads and writes the run cache and prints the
run's id and result file. A run that was interrupted resumes from its checkpoint when the same
command is run again."""

CLI_EPILOG = """\
examples:
  python -m negatives.train --config run.json --results results
  torchrun --nproc-per-node 4 -m negatives.train --config run.json --results results
  python -m negatives.sweep plan difficulty --profile full --device cuda --world-size 4 > plan.jsonl
  torchrun --nproc-per-node 4 -m negatives.train --config plan.jsonl --index 17

threads: each process gets os.cpu_count() / (processes on this machine) torch threads unless
OMP_NUM_THREADS is set; torchrun sets OMP_NUM_THREADS=1 itself when it starts more than one
process and it is unset, so for CPU runs give it yourself (OMP_NUM_THREADS=8 torchrun ...).
The thread count of a CPU run and the world size are part of the run's identity."""


@dataclass(frozen=True)
class RunSpec:
    """What the command line trains: the config, :func:`negatives.data.load_dataset`'s
    arguments and the whole JSON object it was read from (a plan entry's ``run_id``,
    ``fingerprint`` and ``execution``, when it is one)."""

    config: TrainConfig
    data: dict[str, Any]
    source: dict[str, Any]


def read_run_spec(path: str | os.PathLike, index: int | None = None) -> RunSpec:
    """The run in ``path``: a JSON object, or line ``index`` (0-based) of a JSON-lines plan.

    ``ValueError`` naming what is wrong: an index out of range (or missing for a plan of more
    than one line), a missing ``config`` or ``data``, a field that TrainConfig does not have.
    """
    text = Path(path).read_text()
    try:
        objects = [json.loads(text)]
    except json.JSONDecodeError:  # JSON lines: one run a line
        objects = [line for line in text.splitlines() if line.strip()]
    if not objects:
        raise ValueError(f"--config {path} holds no run")
    if index is None:
        if len(objects) > 1:
            raise ValueError(
                f"--config {path} is a plan of {len(objects)} runs: choose one with --index "
                f"(0 to {len(objects) - 1})"
            )
        index = 0
    cfg.check_int("index", index, 0, len(objects) - 1)
    obj = objects[index]
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as err:
            raise ValueError(f"line {index} of --config {path} is not JSON: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"--config {path}: a run is a JSON object, got {type(obj).__name__}")
    for key in ("config", "data"):
        if not isinstance(obj.get(key), dict):
            raise ValueError(
                f'--config {path}: a run needs an object "{key}" (keys: "config", TrainConfig\'s '
                f'fields; "data", load_dataset\'s arguments), got {obj.get(key)!r}'
            )
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(obj["config"]) - known)
    if unknown:
        raise ValueError(
            f"--config {path}: config has no field {', '.join(unknown)}; allowed: "
            f"{', '.join(sorted(known))}"
        )
    return RunSpec(TrainConfig(**obj["config"]), dict(obj["data"]), obj)


def _cli_threads() -> int:
    """Give this process its share of the machine's cores unless ``OMP_NUM_THREADS`` says."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(distributed.thread_share(distributed.local_world_size()))
    return torch.get_num_threads()


def _cli_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m negatives.train",
        description=CLI_DESCRIPTION,
        epilog=CLI_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help='the run: a JSON object with "config" and "data", or a JSON-lines sweep plan',
    )
    parser.add_argument(
        "--index",
        type=int,
        default=None,
        metavar="N",
        help="the line (0-based) of a JSON-lines plan to train, as `negatives.sweep run --index`",
    )
    parser.add_argument(
        "--results",
        default=None,
        metavar="DIR",
        help=f"the run cache (default ${runs.RESULTS_ENV} or ./results)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The command line (``python -m negatives.train --help``); returns the exit status."""
    parser = _cli_parser()
    args = parser.parse_args(argv)
    try:
        spec = read_run_spec(args.config, args.index)
    except (ValueError, OSError) as err:
        parser.error(str(err))
    _cli_threads()
    if distributed.launched():
        distributed.init(spec.config.device)
    finished = False
    try:
        if not distributed.is_main():  # rank 0 first: a download is written once
            distributed.barrier()
        data = load_dataset(**spec.data)
        if distributed.is_main():
            distributed.barrier()
        expected = spec.source.get("fingerprint")
        if expected is not None and data.fingerprint != expected:
            raise ValueError(
                f"the data {spec.data} load as {data.fingerprint} here, not as the plan's "
                f"{expected}: the files differ (check the data root on this machine)"
            )
        store = runs.RunStore(args.results)
        run_id = runs.config_hash(spec.config, data.fingerprint, execution=execution(spec.config))
        planned = spec.source.get("run_id")
        if distributed.is_main() and planned is not None and planned != run_id:
            there = spec.source.get("execution")
            print(
                f"warning: the plan names this run {planned} but here it is {run_id}: this "
                f"machine computes it otherwise (here {execution(spec.config)}"
                + (f", in the plan {there}" if there else "")
                + "); a notebook reading the plan will not find it: make the plan for this "
                "machine (sweep plan --device, --precision, --threads, --world-size)",
                file=sys.stderr,
            )
        done = run(spec.config, data, store, progress=not args.quiet)
        assert done is not None  # run() waits for a run another worker holds
        if distributed.is_main():
            print(f"run {done.run_id}: {store.run_dir(done.run_id) / 'result.json'}", flush=True)
        finished = True
    except ValueError as err:
        parser.error(str(err))
    finally:
        distributed.shutdown(wait=finished)
    return 0


if __name__ == "__main__":
    from negatives.train import main as _main  # the package's module, not this __main__ copy

    raise SystemExit(_main())
