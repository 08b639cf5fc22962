"""The contrastive trainer's loop: :func:`train` trains one encoder (SimCLR or MoCo v2) on a
data set held on the device as uint8, epoch by epoch, resuming from a checkpoint.

The loop is made of named parts, each in its own module: the config
(:mod:`negatives.trainconfig`), the steps (:mod:`negatives.steps`), the epoch's plan, optimiser
and log (:mod:`negatives.epochs`), the checkpoint (:mod:`negatives.checkpoint`) and the memory
check (:mod:`negatives.memory`); the cached entry point :func:`negatives.runner.run` and the
command line (:mod:`negatives.launch`, ``python -m negatives.train``) sit above it. Their public
names are importable from here too (``from negatives.train import TrainConfig``).

One run across several processes (``torchrun --nproc-per-node W -m negatives.train --config
run.json``): every rank trains its share of every batch under DistributedDataParallel and the
config alone determines the numbers (:func:`check_world_size`): SimCLR gathers every rank's
embeddings with their gradients, MoCo shuffles the key batch across ranks and keeps one global
queue on every rank, and a 2-rank run equals a one-process run whose batch norm is split in the
same groups, within float rounding.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from negatives import config as cfg
from negatives import distributed, rank_steps, steps
from negatives.checkpoint import Checkpoint
from negatives.data import Dataset
from negatives.epochs import (
    RANK_BIN_EDGES,
    RANK_LOG_EVERY,
    RANK_LOG_QUERIES,
    STREAMS,
    EpochLog,
    EpochPlan,
    StepsCSV,
    _plan_epoch,
    learning_rate,
    make_optimizer,
    set_lr,
    stream_generator,
)
from negatives.memory import MemoryNeed, check_memory, estimate_memory
from negatives.models import ContrastiveModel, split_batchnorm
from negatives.queue import Queue
from negatives.steps import (
    Batch,
    Encoder,
    Step,
    fill_queue,
    moco_step,
    momentum_update,
    shuffled_keys,
    simclr_step,
    update,
)
from negatives.trainconfig import (
    ARCHS,
    METHODS,
    MOCO_BN_GROUPS,
    NEGATIVE_REGIMES,
    OPTIMIZERS,
    POSITIVES,
    SCHEDULES,
    TrainConfig,
    model_for,
)

# The loop, and the public names of the modules it is made of (``from negatives.train import ...``).
__all__ = [
    "TrainingDiverged",
    "TrainResult",
    "check_world_size",
    "train",
    "ARCHS",
    "METHODS",
    "MOCO_BN_GROUPS",
    "NEGATIVE_REGIMES",
    "OPTIMIZERS",
    "POSITIVES",
    "SCHEDULES",
    "TrainConfig",
    "model_for",
    "RANK_BIN_EDGES",
    "RANK_LOG_EVERY",
    "RANK_LOG_QUERIES",
    "STREAMS",
    "EpochLog",
    "EpochPlan",
    "make_optimizer",
    "stream_generator",
    "Batch",
    "Encoder",
    "Step",
    "fill_queue",
    "moco_step",
    "momentum_update",
    "shuffled_keys",
    "simclr_step",
    "update",
    "Checkpoint",
    "MemoryNeed",
    "check_memory",
    "estimate_memory",
]


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


# A cap on one run's optimisation steps: the papers' longest setting (200 ImageNet epochs at
# batch 256) is ~10^6 steps, a week of GPU; beyond 10^7 a value is a typo (`-p epochs 1e9`).
# NEGATIVES_MAX_STEPS raises it for whoever means it.
MAX_STEPS_ENV = "NEGATIVES_MAX_STEPS"
MAX_STEPS: int = 10**7


def step_seconds(config: TrainConfig, data: Dataset, steps: int = 3) -> float:
    """The measured seconds of one training step of ``config`` on ``data``'s images, here: a
    one-epoch run of ``steps`` batches on the first images, timed with its set-up (so a slight
    over-estimate). Nothing is written; the run's own numbers are not touched."""
    steps = cfg.check_int("steps", steps, 1)
    n = min(data.train_images.shape[0], steps * config.batch_size)
    small = dataclasses.replace(
        data, train_images=data.train_images[:n], train_labels=data.train_labels[:n]
    )
    trial = config.replace(epochs=1, warmup_epochs=0.0, compile=False)
    t0 = time.perf_counter()
    train(trial, small, progress=False)
    return (time.perf_counter() - t0) / max(n // config.batch_size, 1)


def check_data(config: TrainConfig, data: Dataset) -> int:
    """The number of training samples, if ``config`` can train on ``data`` (checked for every
    config of a sweep before its first run trains: :func:`negatives.runner.sweep`). A MoCo
    queue larger than the data trains (a query's own older keys are not its negatives) but is
    not the papers' setting: :func:`negatives.sweep.check_plan` warns of it on the page."""
    n = data.train_images.shape[0]
    if n < config.batch_size:
        raise ValueError(
            f"batch_size={config.batch_size} is larger than the {n} training samples of "
            f"{data.name!r} (a chapter's train_size, or its K + 1)"
        )
    cap = int(float(os.environ.get(MAX_STEPS_ENV, MAX_STEPS)))
    steps = config.epochs * (n // config.batch_size)
    if steps > cap:
        raise ValueError(
            f"epochs={config.epochs} x {n // config.batch_size} steps per epoch (batch_size="
            f"{config.batch_size}, {n} samples) = {steps:.3g} optimisation steps, over the cap "
            f"of {cap:.0e} (weeks on any machine); set {MAX_STEPS_ENV} to train that long"
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
    log: str | Path | None = None,
) -> TrainResult:
    """Train one encoder; resume from ``checkpoint`` when it holds an unfinished run.

    ``stop_after_epochs`` stops early as an interruption would (the tests of resumption);
    ``log``: a CSV of every step's loss and learning rate (:class:`negatives.epochs.StepsCSV`).

    In a process group of ``W`` ranks (``torchrun``; :func:`check_world_size` says which configs
    can) every rank calls this with the same arguments and trains its share of every batch
    (:mod:`negatives.rank_steps`). Only rank 0 reads and writes ``checkpoint`` (the others
    receive what it read), and every rank returns the whole model and the global history.
    """
    cfg.check_instance("config", config, TrainConfig, "negatives.TrainConfig(...)")
    cfg.check_instance("data", data, Dataset, 'negatives.load_dataset("digits"), say')
    world = distributed.world_size()
    check_world_size(config, world)
    device = cfg.resolve_device(config.device)
    n = check_data(config, data)
    check_memory(config, data, device)  # before anything is allocated
    # CPU generators: the same config and seed draw the same numbers on any device
    streams = {name: stream_generator(config.seed, name) for name in STREAMS}
    images = data.train_images.to(device)  # uint8 (N, C, H, W), stays on the device
    labels = data.train_labels.to(device)
    model, key_model, queue = _build_models(config, data, device, world)
    optimizer = make_optimizer(model, config)
    steps_per_epoch = n // config.batch_size
    lr_at = learning_rate(config, steps_per_epoch)  # step -> lr
    history, done, elapsed = _resume(
        checkpoint, config, model, key_model, optimizer, queue, streams
    )
    precision = cfg.resolve_precision(config.precision, device)
    encoder_q, encoder_k = _encoders(config, model, key_model, device, precision, world)
    # one process's steps, or a rank's share of every batch: chosen once, the same signatures
    kit = steps if world == 1 else rank_steps
    plan_epoch = functools.partial(_plan_epoch, n, images, data.train_labels.cpu(), config)
    setup = (time.perf_counter(), time.process_time())  # MoCo's queue fill counts as training
    if queue is not None and encoder_k is not None and done == 0:
        kit.fill_queue(queue, encoder_k, images, labels, plan_epoch(streams["data"]),
                       config.batch_size, groups=config.batchnorm_groups)  # fmt: skip

    rows = None if world == 1 else rank_steps.rank_rows(config.batch_size)
    last = config.epochs if stop_after_epochs is None else min(config.epochs, stop_after_epochs)
    bar = tqdm(range(done, last), desc=f"{config.method} {config.negatives}", leave=False,
               disable=not (progress and distributed.is_main()))  # fmt: skip
    mask_gen, shuffle_gen = streams["mask"], streams["shuffle"]
    first = done  # this process's first epoch, whose clock started at the set-up
    scale = (1 + config.beta) / config.temperature  # the softmax's logits per similarity
    steps_csv = StepsCSV(log, done) if log is not None and distributed.is_main() else None
    for epoch in bar:
        start = setup if epoch == first else None
        epoch_log = EpochLog(device, queue is not None, rows, scale, start, steps_csv)
        model.train()
        plan = plan_epoch(streams["data"])
        for b in range(steps_per_epoch):
            _, where = plan.batch(b, config.batch_size)
            batch = kit.batch(images, labels, plan, where, moco=queue is not None)
            lr = set_lr(optimizer, lr_at(epoch * steps_per_epoch + b))
            if queue is None or encoder_k is None:
                step = kit.simclr_step(encoder_q, batch, config, mask_gen)
            else:
                step = kit.moco_step(encoder_q, encoder_k, queue, batch, config, mask_gen,
                                     shuffle_gen)  # fmt: skip
            # the global batch's loss: every rank sees a divergence on any rank, and logs it
            loss = step.loss if world == 1 else distributed.all_reduce(step.loss, "mean")
            _check_finite(loss, config, f"epoch {epoch + 1}, step {b + 1}", done, checkpoint)
            epoch_log.add(step, batch.local_labels, b % RANK_LOG_EVERY == 0, loss, lr)
            update(optimizer, step.loss)
            if queue is not None and step.keys is not None:
                queue.enqueue(step.keys, batch.ids, batch.labels)  # after the step, as MoCo
        if world > 1:
            _average_batchnorm(model, key_model)
        for key, value in epoch_log.entry(epoch + 1).items():
            history.setdefault(key, []).append(value)  # a key older checkpoints lack
        elapsed += history["seconds"][-1]
        done = epoch + 1
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
        if checkpoint is not None and distributed.is_main():  # the ranks' states are equal
            Checkpoint.capture(config, model, key_model, optimizer, queue, streams, history, done,
                               elapsed).save(checkpoint)  # fmt: skip
    bar.close()
    seen = 2 * steps_per_epoch * config.batch_size * len(history["epoch"])  # images
    extra = {"finished": len(history["epoch"]) == config.epochs, "world_size": world}
    return TrainResult(model.eval(), history, config, device, elapsed,
                       seen / elapsed if elapsed > 0 else math.nan,
                       key_model.eval() if key_model is not None else None, precision, extra)  # fmt: skip


def _encoders(
    config: TrainConfig,
    model: nn.Module,
    key_model: nn.Module | None,
    device: str,
    precision: str,
    world: int,
) -> tuple[Encoder, Encoder | None]:
    """The query encoder (under DistributedDataParallel across ranks, compiled if configured)
    and MoCo's key encoder, as the steps run them (:class:`negatives.steps.Encoder`)."""
    how = dict(device=device, bf16=precision == "bf16", channels_last=config.arch != "mlp")
    net = _data_parallel(model, device) if world > 1 else model
    encoder_q = Encoder(torch.compile(net) if config.compile else net, **how)
    return encoder_q, Encoder(key_model, **how) if key_model is not None else None


def _resume(
    checkpoint: str | Path | None,
    config: TrainConfig,
    model: nn.Module,
    key_model: nn.Module | None,
    optimizer: torch.optim.Optimizer,
    queue: Queue | None,
    streams: dict[str, torch.Generator],
) -> tuple[dict[str, list[Any]], int, float]:
    """The history, finished epochs and seconds to continue from: a new run's, or the state of
    ``checkpoint`` restored into the run's objects. Rank 0 reads it and sends it to the others,
    whatever their disks hold."""
    state = None
    if checkpoint is not None and distributed.is_main():
        state = Checkpoint.load(checkpoint, config)
    if distributed.world_size() > 1 and checkpoint is not None:
        state = distributed.broadcast_object(state)
    if state is None:
        return EpochLog.new_history(config), 0, 0.0
    state.restore(model, key_model, optimizer, queue, streams)
    return state.history, state.epoch, state.elapsed


if __name__ == "__main__":  # python -m negatives.train, torchrun ... -m negatives.train
    from negatives.launch import main  # the package's modules, not this __main__ copy

    raise SystemExit(main())
