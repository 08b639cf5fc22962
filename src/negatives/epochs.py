"""One epoch of training, around its steps: the random streams of a seed
(:func:`stream_generator`), the epoch's plan (:class:`EpochPlan`: the order of the images and
both views' augmentation parameters per position, drawn once from the data stream, so that a
sample's views do not depend on the batch), the optimiser and its learning-rate schedule
(:func:`make_optimizer`), and the epoch's log (:class:`EpochLog`: loss, the same-class share of
the kept negatives, MoCo's same-class rate per rank bin of the queue).
"""

from __future__ import annotations

import csv
import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from negatives import augment, distributed, filters
from negatives import config as cfg
from negatives.data import sample_same_class
from negatives.trainconfig import TrainConfig

if TYPE_CHECKING:
    from negatives.steps import Step


STREAMS = ("data", "mask", "shuffle")


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


def learning_rate(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning rate of every step of a run ``step -> lr``: ``config.lr`` times
    :func:`_lr_factor` over the run's ``epochs`` with its ``warmup_epochs``."""
    total, warmup = steps_per_epoch * config.epochs, int(config.warmup_epochs * steps_per_epoch)
    return lambda step: config.lr * _lr_factor(step, total, warmup, config.schedule)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    """Set every parameter group's learning rate to ``lr``; returns it."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


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
    the kept negatives' same-class fraction and count, averaged over queries, (MoCo) the share
    of queries whose own instance has a key in the queue (no negative of theirs), the share of
    the softmax's negative weight on same-class negatives (logits ``scale * s``, ``scale = (1 +
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
        steps_csv: StepsCSV | None = None,
    ) -> None:
        self.rows = rows
        self.scale = scale
        self.steps_csv = steps_csv
        # every step's loss, learning rate and (sampled steps) same-class weight, on the device
        # until the epoch ends: the training log costs no wait on the device per step
        self.per_step: list[tuple[Tensor, float, Tensor | None]] = []
        # (wall, CPU) clocks the epoch counts from: now, or earlier for the first epoch's set-up
        self.start = start or (time.perf_counter(), time.process_time())
        bins = len(RANK_BIN_EDGES) - 1
        self.loss = torch.zeros((), device=device)
        self.same_class = torch.zeros((), device=device)
        self.same_weight = torch.zeros((), device=device)
        self.used = torch.zeros((), device=device)
        self.own_key = torch.zeros((), device=device)
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
            keys += ["same_class_by_rank", "own_key_share"]
        return {k: [] for k in keys}

    @torch.no_grad()
    def add(
        self,
        step: Step,
        labels: Tensor,
        sampled: bool,
        loss: Tensor | None = None,
        lr: float = math.nan,
    ) -> None:
        """Add one step; ``labels`` ``(b,)`` of its queries (this rank's). Before the enqueue:
        it reads the queue's labels. ``loss``: the batch's loss to log (default ``step.loss``;
        a rank's caller passes the global one); ``lr``: the step's learning rate."""
        loss = (step.loss if loss is None else loss).detach()
        self.loss += loss
        self.steps += 1
        if not sampled:  # (B, N) passes: a sample of the steps suffices
            self._keep(loss, lr, None)
            return
        frac = filters.same_class_fraction(labels, step.negative_labels, step.mask)  # (b,)
        weight = filters.same_class_weight(
            labels, step.negative_labels, self.scale * step.similarities, step.mask
        )  # (b,)
        used = step.mask.sum(1).float()  # (b,)
        own = None if step.own_key is None else step.own_key.float()  # (b,)
        if self.rows is not None:  # the global batch's queries, in batch order: (B,)
            frac, used = distributed.all_gather(frac), distributed.all_gather(used)
            weight = distributed.all_gather(weight)
            own = None if own is None else distributed.all_gather(own)
        if own is not None:
            self.own_key += own.mean()
        self.same_class += torch.nan_to_num(torch.nanmean(frac), nan=0.0)
        step_weight = torch.nan_to_num(torch.nanmean(weight), nan=0.0)
        self.same_weight += step_weight
        self._keep(loss, lr, step_weight)
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

    def _keep(self, loss: Tensor, lr: float, weight: Tensor | None) -> None:
        """A step's row of the training log, kept only where one is written (rank 0, a log)."""
        if self.steps_csv is not None:
            self.per_step.append((loss, lr, weight))

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
            out["own_key_share"] = self.own_key.item() / self.sampled
        if self.steps_csv is not None:
            self.steps_csv.write(epoch, self.per_step)
        return out


# The columns of a run's training log, one row per step (``train.csv`` in its run folder).
STEP_COLUMNS: tuple[str, ...] = ("epoch", "step", "loss", "lr", "same_class_weight")


class StepsCSV:
    """A run's training log ``path``: a CSV of every step's loss and learning rate, and on the
    sampled steps (every :data:`RANK_LOG_EVERY`-th) the share of the softmax's negative weight
    on same-class negatives, written at the end of each epoch (:meth:`EpochLog.entry`), so
    that a researcher can plot a run while it trains. It reads the run, changes none of its
    numbers and is not part of its identity. Opened after ``done`` finished epochs (a resumed
    run), it keeps only their rows: an epoch cut short is logged once, when it is trained
    again."""

    def __init__(self, path: str | Path, done: int) -> None:
        self.path = Path(path)
        kept: list[list[str]] = []
        if done > 0 and self.path.is_file():
            with self.path.open(newline="") as f:
                kept = [r for r in list(csv.reader(f))[1:] if r and int(r[0]) <= done]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            csv.writer(f).writerows([list(STEP_COLUMNS), *kept])
        self.step = len(kept)

    def write(self, epoch: int, per_step: list[tuple[Tensor, float, Tensor | None]]) -> None:
        """Append one epoch's steps (``(loss, lr, weight or None)`` as :class:`EpochLog` keeps
        them): one wait on the device for the whole epoch."""
        if not per_step:
            return
        losses = torch.stack([loss for loss, _, _ in per_step]).tolist()
        known = [w for _, _, w in per_step if w is not None]
        values = iter(torch.stack(known).tolist() if known else [])
        with self.path.open("a", newline="") as f:
            out = csv.writer(f)
            for (_, lr, w), loss in zip(per_step, losses, strict=True):
                self.step += 1
                weight = f"{next(values):.6g}" if w is not None else ""
                out.writerow([epoch, self.step, f"{loss:.6g}", f"{lr:.6g}", weight])
