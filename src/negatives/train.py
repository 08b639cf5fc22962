"""The contrastive trainer: SimCLR (in-batch negatives) and MoCo v2 (a queue of keys).

One frozen config whose fields are the notebooks' parameters (:class:`TrainConfig`), one loop
(:func:`train`) and one cached entry point (:func:`run`). The data set lives on the device as a
uint8 tensor; batches are ``randperm`` indices; views are made in batch on the device.

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
import hashlib
import math
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


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    # No weight decay on norms and biases, as in the usual SimCLR / MoCo recipes.
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


def _views(images: Tensor, idx: Tensor, plan: EpochPlan, where: slice) -> tuple[Tensor, Tensor]:
    """The two views of the batch ``idx`` (positions ``where`` of the epoch's plan)."""
    x = images[idx]
    if plan.views is None:  # latent-class positives: another sample of the class
        assert plan.partners is not None
        return augment.to_float(x), augment.to_float(images[plan.partners[where]])
    return tuple(augment.apply_view(x, v.select(where)) for v in plan.views)  # type: ignore[return-value]


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
    # CPU generators: the same config and seed draw the same numbers on any device
    gen = stream_generator(config.seed, "data")  # order, views, positives, queue fill
    mask_gen = stream_generator(config.seed, "mask")  # random-k subsets
    shuffle_gen = stream_generator(config.seed, "shuffle")  # MoCo's key shuffle

    images = data.train_images.to(device)  # uint8 (N, C, H, W), stays on the device
    labels = data.train_labels.to(device)
    labels_cpu = data.train_labels.cpu()  # for the plans drawn on the CPU
    n = images.shape[0]
    if n < config.batch_size:
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {n} training samples of {data.name!r}"
        )
    if config.positives == "views" and images.shape[-1] == 1:
        raise ValueError(
            f"positives='views' needs images; {data.name!r} holds vectors: use 'latent-class'"
        )
    model, key_model, queue = _build_models(config, data, device)
    groups = config.batchnorm_groups

    optimizer = _make_optimizer(model, config)
    steps_per_epoch = n // config.batch_size
    total_steps = steps_per_epoch * config.epochs
    warmup_steps = int(config.warmup_epochs * steps_per_epoch)
    history: dict[str, list[Any]] = {
        "epoch": [],
        "loss": [],
        "same_class_fraction": [],
        "negatives_used": [],
        "seconds": [],
        "cpu_seconds": [],
    }
    if config.method == "moco":
        history["same_class_by_rank"] = []
    start_epoch = 0
    elapsed = 0.0
    streams = {"data": gen, "mask": mask_gen, "shuffle": shuffle_gen}

    state = runs.load_torch(checkpoint) if checkpoint is not None else None
    if state is not None and state.get("config") == dataclasses.asdict(config):
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if key_model is not None:
            key_model.load_state_dict(state["key_model"])
        if queue is not None:
            queue.load_state_dict(state["queue"])
        for name, g in streams.items():
            g.set_state(state["generators"][name].to(g.get_state().device))
        torch.set_rng_state(state["torch_rng"])
        history = state["history"]
        start_epoch = state["epoch"]
        elapsed = state["elapsed"]

    forward = torch.compile(model) if config.compile else model
    precision = cfg.resolve_precision(config.precision, device)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def embed(net: nn.Module, x: Tensor) -> Tensor:
        if config.arch != "mlp":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            _, z = net(x)
        return F.normalize(z.float(), dim=1)

    if queue is not None and key_model is not None and start_epoch == 0:
        # Fill the queue with keys of random samples before the first step, so every step sees
        # a full queue of real keys (MoCo starts from random vectors instead).
        with torch.no_grad():
            plan = _plan_epoch(n, images, labels_cpu, config, gen)
            fill = plan.perm[: config.queue_size]
            for start in range(0, len(fill), config.batch_size):
                where = slice(start, start + config.batch_size)
                chunk = fill[where]
                _, v2 = _views(images, chunk, plan, where)
                queue.enqueue(embed(key_model, v2), chunk, labels[chunk])

    step = start_epoch * steps_per_epoch
    epochs = range(start_epoch, config.epochs)
    bar = tqdm(
        epochs, desc=f"{config.method} {config.negatives}", disable=not progress, leave=False
    )
    last_epoch = (
        config.epochs if stop_after_epochs is None else min(config.epochs, stop_after_epochs)
    )
    nbins = len(RANK_BIN_EDGES) - 1
    for epoch in bar:
        if epoch >= last_epoch:
            break
        t0, c0 = time.perf_counter(), time.process_time()
        model.train()
        loss_sum = torch.zeros((), device=device)
        same_sum = torch.zeros((), device=device)
        used_sum = torch.zeros((), device=device)
        rank_same = torch.zeros(nbins, device=device)
        rank_total = torch.zeros(nbins, device=device)
        logged = 0
        plan = _plan_epoch(n, images, labels_cpu, config, gen)
        for b in range(steps_per_epoch):
            idx, where = plan.batch(b, config.batch_size)
            y = labels[idx]
            v1, v2 = _views(images, idx, plan, where)
            for g in optimizer.param_groups:
                g["lr"] = config.lr * _lr_factor(step, total_steps, warmup_steps, config.schedule)
            if config.method == "simclr":
                z1, z2 = embed(forward, v1), embed(forward, v2)  # (B, P) each
                # Difficulty of instance j for anchor i: z1_i . z2_j (detached); diagonal = positive.
                sims = (z1 @ z2.T).detach()  # (B, B)
                valid = ~torch.eye(len(idx), dtype=torch.bool, device=device)
                mask = _negative_mask(config, sims, valid, y, y, mask_gen)
                loss = losses.nt_xent(z1, z2, config.temperature, neg_mask=mask).mean()
                neg_labels = y
            else:
                assert queue is not None and key_model is not None
                q = embed(forward, v1)  # (B, P)
                with torch.no_grad():
                    for pk, pq in zip(key_model.parameters(), model.parameters(), strict=True):
                        pk.mul_(config.momentum).add_(pq.detach(), alpha=1 - config.momentum)
                    k = shuffled_keys(lambda x: embed(key_model, x), v2, groups, shuffle_gen)
                keys = queue.keys  # (Q, P)
                sims = torch.einsum("bp,qp->bq", q.detach(), keys)  # (B, Q)
                # A key of the query's own instance from an earlier step is not a negative: it
                # matters when the queue holds a large part of a small data set.
                valid = queue.valid[None, :] & (queue.ids[None, :] != idx[:, None])  # (B, Q)
                mask = _negative_mask(config, sims, valid, y, queue.labels, mask_gen)
                loss = losses.info_nce(q, k, keys, config.temperature, mask=mask).mean()
                neg_labels = queue.labels
                if b % RANK_LOG_EVERY == 0:
                    with torch.no_grad():
                        r = slice(0, RANK_LOG_QUERIES)
                        same = y[r, None] == queue.labels[None, :]  # (R, Q)
                        c, t = _rank_bin_same_class(sims[r], same, valid[r])
                        rank_same += c
                        rank_total += t
            if not torch.isfinite(loss):
                where_ = f"epoch {epoch + 1}, step {b + 1}"
                kept = (
                    f"; the last good checkpoint (epoch {start_epoch}) is kept at {checkpoint}"
                    if checkpoint
                    else ""
                )
                raise TrainingDiverged(
                    f"loss became {loss.item()} at {where_} (lr={config.lr}, temperature="
                    f"{config.temperature}){kept}. Lower lr or raise temperature."
                )
            with torch.no_grad():  # before enqueue, which overwrites the queue's labels
                loss_sum += loss.detach()
                if b % RANK_LOG_EVERY == 0:  # (B, Q) passes: a sample of the steps suffices
                    frac = filters.same_class_fraction(y, neg_labels, mask)
                    same_sum += torch.nan_to_num(torch.nanmean(frac), nan=0.0)
                    used_sum += mask.sum(1).float().mean()
                    logged += 1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if queue is not None:
                queue.enqueue(k, idx, y)
            step += 1
        seconds = time.perf_counter() - t0
        elapsed += seconds
        history["epoch"].append(epoch + 1)
        history["loss"].append(loss_sum.item() / steps_per_epoch)
        history["same_class_fraction"].append(same_sum.item() / logged)
        history["negatives_used"].append(used_sum.item() / logged)
        history["seconds"].append(seconds)
        history["cpu_seconds"].append(time.process_time() - c0)
        if config.method == "moco":
            history["same_class_by_rank"].append((rank_same / rank_total.clamp_min(1)).tolist())
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
        start_epoch = epoch + 1
        if checkpoint is not None:
            runs.save_torch(
                checkpoint,
                {
                    "config": dataclasses.asdict(config),
                    "model": model.state_dict(),
                    "key_model": key_model.state_dict() if key_model is not None else None,
                    "optimizer": optimizer.state_dict(),
                    "queue": queue.state_dict() if queue is not None else None,
                    "generators": {name: g.get_state() for name, g in streams.items()},
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "epoch": start_epoch,
                    "elapsed": elapsed,
                },
            )
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
    data_fingerprint: str

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
    return Run(
        run_id=run_id, config=config, result=result, store=store, data_fingerprint=data.fingerprint
    )


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
