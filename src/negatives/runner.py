"""Runs through the run cache: :func:`run` trains a config on a data set, or reuses its finished
run (:class:`Run`), resuming an interrupted one from its checkpoint; :func:`sweep` does so for a
list of configs, and :func:`take_turns` lets several workers share one. A run's identity is its
config, its data and what the machine adds to the numbers (:func:`execution`,
:data:`TRAINER_VERSION`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from negatives import config as cfg
from negatives import distributed, runs
from negatives.checkpoint import Checkpoint
from negatives.data import Dataset
from negatives.models import ContrastiveModel, build_model
from negatives.train import check_data, train
from negatives.trainconfig import TrainConfig

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


def execution(config: TrainConfig, workers: Workers | None = None) -> dict[str, Any]:
    """What ``config`` leaves to the machine but the numbers depend on; part of a run's identity.

    The device and precision that ``auto`` resolves to; on the CPU the number of torch threads
    (reductions split across threads round differently, so 1 and 2 threads give slightly
    different weights); the number of processes of a distributed run (likewise); and
    :data:`TRAINER_VERSION`. ``workers`` (default: this process) says what the machine that trains the run resolves them to.
    """
    w = workers
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
    workers: Workers | None = None,
) -> Run | None:
    """Train ``config`` on ``data`` unless its finished result is cached; resume if interrupted.

    The run cache is the rendezvous of every worker that shares ``store``: a run is trained by
    the one worker that holds its lock (:meth:`negatives.runs.RunStore.lock`); another worker
    waits for it (or, with ``wait=False``, returns None at once), and takes it over from its
    checkpoint if its holder dies. In a distributed run only rank 0 reads and writes the cache.
    ``workers``: the executor's workers that trained (or train) the run, when they are not this
    process: the run's id is theirs (:func:`execution`), and with ``train_here=False`` a run
    that is not cached raises :class:`RunMissing` instead of being trained here.
    """
    cfg.check_instance("config", config, TrainConfig, "negatives.TrainConfig(...)")
    cfg.check_instance("data", data, Dataset, 'negatives.load_dataset("digits"), say')
    cfg.check_instance("store", store, (runs.RunStore, type(None)), "negatives.RunStore(folder)")
    store = store or runs.RunStore()
    how = execution(config, workers)
    run_id = runs.config_hash(config, data.fingerprint, execution=how)
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
    out = train(config, data, checkpoint=checkpoint, progress=progress, log=run_dir / "train.csv")
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
    workers: Workers | None = None,
) -> list[Run]:
    """Run every config (cached ones are reused, an interrupted one resumes), with one bar,
    taking turns with other workers on ``store`` (:func:`take_turns`); ``workers`` as in
    :func:`run`."""
    cfg.check_instance("configs", configs, (list, tuple), "a list of TrainConfig")
    cfg.check_instance("data", data, Dataset, 'negatives.load_dataset("digits"), say')
    for i, c in enumerate(configs):  # every run can train on the data before the first one does
        check_data(cfg.check_instance(f"configs[{i}]", c, TrainConfig), data)
    store = store or runs.RunStore()
    attempts = [
        functools.partial(run, c, data, store, progress=False, wait=False, workers=workers)
        for c in configs
    ]
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
