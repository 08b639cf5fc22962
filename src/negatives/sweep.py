"""A chapter's sweep as data, and the executors that train it: here, on workers, on SLURM.

A training chapter's ``plan(P)`` lists the runs its parameters imply, each with the data it
trains on. :func:`chapter_plan` turns that into :class:`Entry` records (the run's config, the
arguments that load its data, the data's fingerprint, the execution that names it and its run
id), written one JSON object a line::

    python -m negatives.sweep plan difficulty --profile full -p seeds 5 > plan.jsonl
    python -m negatives.sweep run plan.jsonl --index 17          # one run (a job array task)
    python -m negatives.sweep run plan.jsonl --shard 3/16        # every 16th run from the 4th
    python -m negatives.sweep run plan.jsonl                     # any run not taken yet
    python -m negatives.sweep status plan.jsonl                  # finished / training / missing

so that any scheduler (a SLURM job array, a Kubernetes indexed job, plain ssh) can drive it.
Workers meet in the run cache (:mod:`negatives.runs`): a run is trained by the one worker that
holds its lock, a dead worker's run is resumed from its checkpoint by the next, and a finished
run is never trained again; so shards may overlap and workers may be restarted at will.

A notebook does the same through its ``executor`` parameter (:class:`Executor`): ``local``
trains in the notebook's process (the default); ``submitit-local`` starts ``workers`` worker
processes on this machine with submitit's local executor; ``slurm`` submits them as a SLURM job
array with submitit (the launcher of FAIR's self-supervised code bases: MoCo v3, DINO, VICReg).
The notebook submits the runs that are not in the cache, shows their progress, waits (or, with
``wait=False``, stops with :class:`RunsPending` and collects when re-executed) and renders from
the cache as before. Workers that share a machine share its cores: each gets
``cpu_count // workers`` threads (and one GPU each where there are enough).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from negatives import config as cfg
from negatives import runner, runs
from negatives.checkpoint import Checkpoint
from negatives.data import Dataset, load_dataset
from negatives.distributed import thread_share
from negatives.runner import Workers
from negatives.trainconfig import TrainConfig

log = logging.getLogger(__name__)

TRAINING_CHAPTERS: tuple[str, ...] = ("difficulty", "bounds", "more_negatives", "treatments")
# Options of the executor parameter that are ours, not submitit's: what the workers compute on.
OWN_OPTIONS: tuple[str, ...] = ("device", "precision", "cpu_threads")
# submitit's local executor kills a job after timeout_min (default 2 minutes); a worker runs a
# whole sweep, so the default here is a week.
LOCAL_TIMEOUT_MIN: int = 7 * 24 * 60
# How often a waiting notebook looks at the cache: a local worker's run takes seconds, a cluster's
# minutes (and each look reads every missing run's result file on a shared file system).
POLL_SECONDS: dict[str, float] = {"submitit-local": 1.0, "slurm": 10.0}


class RunsPending(RuntimeError):
    """Runs were submitted (or are still training) and ``wait=False``: re-execute to collect."""


@dataclass(frozen=True)
class Entry:
    """One run of a plan: what a worker anywhere needs to train it, and the id it is stored by.

    ``data`` holds the :func:`negatives.data.load_dataset` arguments (``Dataset.spec``);
    ``fingerprint`` is the data's content hash, which the worker checks after loading, and
    ``execution`` what :func:`negatives.runner.execution` must resolve to on the worker.
    """

    chapter: str
    index: int
    run_id: str
    config: TrainConfig
    data: dict[str, Any]
    fingerprint: str
    execution: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "config": dataclasses.asdict(self.config)}

    @classmethod
    def from_json(cls, obj: Any) -> Entry:
        """The entry of a plan line; ``ValueError`` naming what is wrong: not an object, a
        missing field, a config field TrainConfig does not have, or a ``run_id`` that its
        config, data and execution do not give (an edited line would train under another id)."""
        if not isinstance(obj, dict):
            raise ValueError(f"a plan entry is a JSON object, not {type(obj).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - set(obj))
        if missing:
            raise ValueError(f"a plan entry lacks {', '.join(missing)}: {sorted(obj)}")
        known = {f.name for f in dataclasses.fields(TrainConfig)}
        if not isinstance(obj["config"], dict) or set(obj["config"]) - known:
            unknown = sorted(set(obj["config"]) - known) if isinstance(obj["config"], dict) else []
            raise ValueError(
                f"config: not TrainConfig's fields ({', '.join(unknown) or 'not an object'})"
            )
        entry = cls(**{**{k: obj[k] for k in fields}, "config": TrainConfig(**obj["config"])})
        expected = runs.config_hash(entry.config, entry.fingerprint, execution=entry.execution)
        if entry.run_id != expected:
            raise ValueError(
                f"run_id {entry.run_id} is not the id of its config, data and execution "
                f"({expected}): the line was edited; make the plan again with `sweep plan`"
            )
        return entry

    def label(self) -> str:
        c = self.config
        band = f" [{c.band_low:g}, {c.band_high:g})" if c.negatives == "band" else ""
        return (
            f"{c.method} {c.negatives}{band} K={c.negatives_per_query} T={c.temperature:g} "
            f"seed {c.seed} on {self.data.get('name')}"
        )


def chapter_module(chapter: str) -> Any:
    """The training chapter a command line names (``sweep plan difficulty``)."""
    cfg.check_choice("chapter", chapter, TRAINING_CHAPTERS)
    # imported here: the chapters import this module for execute()
    from negatives.chapters import bounds, difficulty, more_negatives, treatments

    modules = {"difficulty": difficulty, "bounds": bounds, "more_negatives": more_negatives,
               "treatments": treatments}  # fmt: skip
    return modules[chapter]


def entries(
    chapter: str, planned: Sequence[tuple[TrainConfig, Dataset]], workers: Workers | None = None
) -> list[Entry]:
    """The plan's entries, each run once, with the run ids that ``workers`` would train; a run
    that ``workers.world_size`` processes could not train is refused here, not by the workers."""
    from negatives.train import check_world_size  # the trainer imports this module's users

    out: list[Entry] = []
    seen: set[str] = set()
    for config, data in planned:
        if not data.spec:
            raise ValueError(
                f"data set {data.name!r} was not made by load_dataset: a worker cannot load it"
            )
        if workers is not None:
            try:
                check_world_size(config, workers.world_size)
            except ValueError as err:
                raise ValueError(f"--world-size {workers.world_size}: {err}") from None
        how = runner.execution(config, workers)
        run_id = runs.config_hash(config, data.fingerprint, execution=how)
        if run_id in seen:
            continue
        seen.add(run_id)
        out.append(Entry(chapter, len(out), run_id, config, data.spec, data.fingerprint, how))
    return out


def chapter_plan(chapter: str, P: Any, workers: Workers | None = None) -> list[Entry]:
    """The entries of chapter ``chapter`` with parameters ``P`` (its ``Params``)."""
    return entries(chapter, chapter_module(chapter).plan(P), workers)


def write_plan(plan: Sequence[Entry], path: str | os.PathLike | None = None) -> str:
    """The plan as JSON lines; written atomically to ``path`` when given."""
    text = "".join(json.dumps(e.to_json(), sort_keys=True) + "\n" for e in plan)
    if path is not None:
        runs._atomic_write_bytes(Path(path), text.encode())
    return text


def read_plan(path: str | os.PathLike) -> list[Entry]:
    """The entries of a plan file (JSON lines, as ``sweep plan`` writes them); ``ValueError``
    naming the file, and the line where one is wrong (:meth:`Entry.from_json`)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a plan file" if path.is_dir() else "does not exist"
        raise ValueError(f"plan {path} {what} (a plan is the JSON lines of `sweep plan`)")
    out: list[Entry] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Entry.from_json(json.loads(line)))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{number}: not JSON ({err.msg}, column {err.colno})") from None
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}:{number}: {err}") from None
    if not out:
        raise ValueError(f"plan {path} holds no run")
    return out


def plan_digest(plan: Sequence[Entry]) -> str:
    return hashlib.sha256("".join(e.run_id for e in plan).encode()).hexdigest()[:12]


# -- a worker -----------------------------------------------------------------------------------


def set_threads(threads: int) -> None:
    """Give this process ``threads`` CPU threads (torch's intra-op pool; OpenMP for children)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


class _DataCache:
    """Data sets of a worker, loaded once each and checked against the plan's fingerprint."""

    def __init__(self) -> None:
        self.loaded: dict[str, Dataset] = {}

    def get(self, entry: Entry) -> Dataset:
        if entry.fingerprint not in self.loaded:
            data = load_dataset(**entry.data)
            if data.fingerprint != entry.fingerprint:
                raise ValueError(
                    f"the data {entry.data} load as {data.fingerprint} on this worker, not as "
                    f"{entry.fingerprint} where the plan was made: the files differ (check the "
                    "data root on this machine)"
                )
            self.loaded[entry.fingerprint] = data
        return self.loaded[entry.fingerprint]


def run_entry(
    entry: Entry, store: runs.RunStore, data: _DataCache | None = None, *, wait: bool = True
) -> runner.Run | None:
    """Train (or find) one entry in ``store``; None when another worker holds it and not
    ``wait``. Refuses, by name, a worker whose arithmetic is not the plan's."""
    threads = entry.execution.get("cpu_threads")
    if threads is not None and torch.get_num_threads() != threads:
        set_threads(int(threads))
    here = runner.execution(entry.config)
    if here != entry.execution:
        diff = {k: (entry.execution.get(k), here.get(k)) for k in {*here, *entry.execution}}
        diff = {k: v for k, v in diff.items() if v[0] != v[1]}
        raise ValueError(
            f"this worker computes run {entry.run_id} differently from the plan "
            f"(plan, here): {diff}; make the plan for these workers (sweep plan --device, "
            "--precision, --threads) or run it where it was planned"
        )
    data = data or _DataCache()
    return runner.run(entry.config, data.get(entry), store, progress=False, wait=wait)


def work(
    plan: Sequence[Entry],
    results_dir: str | os.PathLike,
    *,
    threads: int | None = None,
    progress: bool = True,
    desc: str = "runs",
) -> dict[str, int]:
    """A worker: train every entry of ``plan`` that no other worker has (skipping, then
    collecting, those another worker trains), until all are finished. Returns counts."""
    if threads is not None:
        set_threads(threads)
    store, data = runs.RunStore(results_dir), _DataCache()
    attempts = [functools.partial(run_entry, e, store, data, wait=False) for e in plan]
    return {"finished": len(runner.take_turns(attempts, store, desc=desc, progress=progress))}


def worker_job(plan_path: str, results_dir: str, threads: int | None) -> dict[str, int]:
    """What one submitit job runs: :func:`work` over the whole plan file."""
    return work(read_plan(plan_path), results_dir, threads=threads, progress=False)


def _checkpointable_worker() -> Any:
    """``worker_job`` as a submitit ``Checkpointable``: a job preempted or out of time is
    requeued with the same arguments, and its runs resume from their checkpoints."""
    import submitit

    class Worker(submitit.helpers.Checkpointable):
        def __call__(self, plan_path: str, results_dir: str, threads: int | None) -> Any:
            return worker_job(plan_path, results_dir, threads)

    return Worker()


# -- the executor of a notebook -----------------------------------------------------------------


@dataclass(frozen=True)
class Executor:
    """Who trains a chapter's missing runs: ``kind`` is a chapter's ``executor`` parameter."""

    kind: str = "local"
    workers: int | None = None
    wait: bool = True
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_params(cls, P: Any) -> Executor:
        """The executor of a chapter's parameters (chapters 3 and 4: of their embedded scan)."""
        src = P if hasattr(P, "executor") else P.scan
        return cls(src.executor, src.workers, src.wait, dict(src.executor_options or {}))

    @property
    def num_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return 1 if self.kind == "local" else 2

    def machine(self) -> Workers | None:
        """How the workers compute (their share of threads, their device): what their run ids
        are made of. None for ``local``: this process."""
        if self.kind == "local":
            return None
        if self.kind == "submitit-local":
            threads = self.options.get("cpu_threads", thread_share(self.num_workers))
            return Workers(
                device=self.options.get("device"),
                precision=self.options.get("precision"),
                cpu_threads=threads,
            )
        gpus = int(self.options.get("gpus_per_node", 0) or 0)
        device = self.options.get("device", "cuda" if gpus else "cpu")
        precision = self.options.get("precision", "bf16" if device == "cuda" else None)
        threads = self.options.get("cpu_threads", self.options.get("cpus_per_task"))
        return Workers(device=device, precision=precision, cpu_threads=threads)

    def folder(self, store: runs.RunStore) -> Path:
        return store.root / "sweeps"

    def record_path(self, plan: Sequence[Entry], store: runs.RunStore) -> Path:
        """Where the last submission of ``plan`` (the chapter's whole plan) is recorded."""
        return self.folder(store) / f"{plan[0].chapter}-{plan_digest(plan)}.submitted.json"

    def live_jobs(self, plan: Sequence[Entry], store: runs.RunStore) -> list[str]:
        """The jobs of the last submission of ``plan`` that have not ended (queued or running),
        so that a notebook re-executed to collect does not submit the same runs again."""
        record = runs.read_json(self.record_path(plan, store))
        if record is None or record.get("kind") != self.kind:
            return []
        if self.kind == "submitit-local":  # the job id is the worker's controller pid
            return [j for j in record["jobs"] if runs._pid_alive(int(j))]
        import submitit

        folder = self.folder(store) / "jobs"
        return [j for j in record["jobs"] if not submitit.SlurmJob(folder, j).done()]

    def submit(
        self, plan: Sequence[Entry], store: runs.RunStore, whole: Sequence[Entry] | None = None
    ) -> list[Any]:
        """Write the plan under ``<results>/sweeps/`` and start the workers on it."""
        import submitit

        folder = self.folder(store)
        plan_path = (folder / f"{plan[0].chapter}-{plan_digest(plan)}.jsonl").resolve()
        write_plan(plan, plan_path)
        machine = self.machine()
        assert machine is not None
        threads = machine.cpu_threads
        extra = {k: v for k, v in self.options.items() if k not in OWN_OPTIONS}
        jobs: list[Any] = []
        n = self.num_workers
        if self.kind == "submitit-local":
            gpus = torch.cuda.device_count()
            for i in range(n):
                ex = submitit.LocalExecutor(folder=folder / "jobs")
                params: dict[str, Any] = {"timeout_min": LOCAL_TIMEOUT_MIN, **extra}
                if gpus >= n:  # one GPU per worker
                    params.update(gpus_per_node=1, visible_gpus=(i,))
                ex.update_parameters(**params)
                jobs.append(
                    ex.submit(_checkpointable_worker(), str(plan_path), str(store.root), threads)
                )
        else:
            ex = submitit.AutoExecutor(folder=folder / "jobs", cluster="slurm")
            ex.update_parameters(**{"slurm_array_parallelism": n, **extra})
            jobs = ex.map_array(
                _checkpointable_worker(),
                [str(plan_path)] * n,
                [str(store.root.resolve())] * n,
                [threads] * n,
            )
        record = {
            "kind": self.kind,
            "plan": str(plan_path),
            "jobs": [str(j.job_id) for j in jobs],
            "submitted": time.time(),
        }
        runs.write_json(self.record_path(whole or plan, store), record)
        return jobs

    def ensure(
        self, plan: Sequence[Entry], store: runs.RunStore, *, progress: bool = True
    ) -> list[Any]:
        """Every entry of ``plan`` finished in ``store``: submit the missing ones, then wait
        (or raise :class:`RunsPending` when not ``wait``). Returns the submitted jobs; local
        workers have exited when it returns."""
        missing = [e for e in plan if store.result(e.run_id) is None]
        if not missing:
            return []
        training = [e for e in missing if store.is_locked(e.run_id)]
        jobs: list[Any] = []
        live = self.live_jobs(plan, store)
        if live:
            log.info(
                "%d of %d runs left to the jobs %s submitted earlier",
                len(missing),
                len(plan),
                ", ".join(live),
            )
        elif len(training) < len(missing):  # some missing run has no worker: start workers
            jobs = self.submit(missing, store, plan)
            log.info(
                "%d of %d runs submitted to %s (%d workers, jobs %s; logs in %s)",
                len(missing),
                len(plan),
                self.kind,
                self.num_workers,
                ", ".join(str(j.job_id) for j in jobs),
                self.folder(store) / "jobs",
            )
        if not self.wait:
            raise RunsPending(
                f"{len(missing)} of {len(plan)} runs are training ({self.kind}); re-execute the "
                "notebook with the same parameters to collect them when they finish "
                "(python -m negatives.sweep status lists them)"
            )
        self._wait(plan, missing, store, jobs, progress)
        if self.kind == "submitit-local":  # they exit at their next look at the plan
            for job in jobs:
                job.wait()
        return jobs

    def _wait(
        self,
        plan: Sequence[Entry],
        missing: Sequence[Entry],
        store: runs.RunStore,
        jobs: Sequence[Any],
        progress: bool,
    ) -> None:
        bar = tqdm(
            total=len(plan),
            initial=len(plan) - len(missing),
            desc=f"runs ({self.kind})",
            disable=not progress,
        )
        left = list(missing)
        while left:
            time.sleep(POLL_SECONDS[self.kind])
            still = [e for e in left if store.result(e.run_id) is None]
            bar.update(len(left) - len(still))
            left = still
            if not left or any(store.is_locked(e.run_id) for e in left):
                continue
            ended = all(j.done() for j in jobs) if jobs else not self.live_jobs(plan, store)
            if ended:
                why = _job_error(jobs) if jobs else "see the job logs"
                raise RuntimeError(
                    f"the {self.kind} workers ended with {len(left)} runs unfinished, e.g. "
                    f"{left[0].run_id} ({left[0].label()}): {why}; re-execute to submit them "
                    "again"
                )
        bar.close()


def _job_error(jobs: Sequence[Any]) -> str:
    """The end of the first failed job's error log, for the exception that reports it."""
    for job in jobs:
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 - the job's own failure, reported as text
            return str(err)[-2000:]
    return "every job ended without an error (see the job logs)"


def execute(
    P: Any,
    chapter: str,
    plan: Callable[[Any], Sequence[tuple[TrainConfig, Dataset]]],
    store: runs.RunStore,
    *,
    progress: bool = True,
) -> Workers | None:
    """Have a chapter's runs trained as its execution parameters say, before it reads them.

    With a ``local`` executor nothing happens here and ``None`` is returned: the chapter trains
    each run as it reaches it. Otherwise the executor's workers first train ``plan(P)`` (the
    chapter's plan function; ``chapter`` names the plan's entries), and the returned
    :class:`Workers` are what the chapter hands to :func:`negatives.runner.sweep`, so that it
    reads the runs under the ids they were trained with."""
    ex = Executor.from_params(P)
    planned = check_plan(P, chapter, plan, store if ex.kind == "local" else None)
    machine = ex.machine()
    if machine is not None:
        ex.ensure(entries(chapter, planned, machine), store, progress=progress)
    return machine


# The training a chapter may start here without being asked twice; NEGATIVES_MAX_HOURS raises it.
MAX_HOURS_ENV = "NEGATIVES_MAX_HOURS"
MAX_HOURS: float = 24.0


def estimate_training(
    planned: Sequence[tuple[TrainConfig, Dataset]], store: runs.RunStore
) -> tuple[int, float]:
    """How many runs of ``planned`` are not in ``store`` and the seconds they would take here:
    each run's steps times the measured seconds of one step of its kind
    (:func:`negatives.train.step_seconds`, once per architecture, batch, method and regime)."""
    from negatives.train import step_seconds

    cost: dict[Any, float] = {}
    seen: set[str] = set()
    count, seconds = 0, 0.0
    for config, data in planned:
        run_id = runs.config_hash(config, data.fingerprint, execution=runner.execution(config))
        if run_id in seen or store.result(run_id) is not None:
            continue  # a plan may list a run twice (chapter 3's scans share their largest K)
        seen.add(run_id)
        # what a step costs: not the seed, epochs, schedule, learning rate or temperature
        plain = config.replace(seed=0, epochs=1, warmup_epochs=0.0, lr=1.0, temperature=1.0)
        key = (plain, data.fingerprint)
        if key not in cost:
            cost[key] = step_seconds(config, data)
        count += 1
        seconds += config.epochs * (data.train_images.shape[0] // config.batch_size) * cost[key]
    return count, seconds


def check_plan(
    P: Any,
    chapter: str,
    plan: Callable[[Any], Sequence[tuple[TrainConfig, Dataset]]],
    store: runs.RunStore | None = None,
) -> list[tuple[TrainConfig, Dataset]]:
    """The validation pass before anything trains: the whole plan resolved, every run's config
    against its data (:func:`negatives.train.check_data`: the batch and MoCo's queue against
    the training samples), the probes' data loaded, and the chapter's own checks of sizes that
    only the data tell (its ``check(P, planned)``, where it has one). A parameter that would
    fail after hours of training fails here, named. With ``store`` (a chapter that trains in
    this process), the runs not yet cached are timed (:func:`estimate_training`): refused above
    ``NEGATIVES_MAX_HOURS`` (default 24) with the estimate, otherwise said when over a minute."""
    from negatives.chapters.params import ImageData
    from negatives.train import check_data

    planned = list(plan(P))
    own = getattr(chapter_module(chapter), "check", None)
    if own is not None:  # first: it names the parameters as the user wrote them
        own(P, planned)
    warned = set()
    for config, data in planned:
        n = check_data(config, data)
        if (
            config.method == "moco"
            and config.queue_size > n
            and (config.queue_size, n) not in warned
        ):
            warned.add((config.queue_size, n))
            log.warning(
                "queue_size=%d is %.0f%% of the %d training samples of %r: the queue holds the "
                "keys of the same images more than once (each from an older encoder), which no "
                "paper's setting does; a smaller queue_size or a larger train_size avoids it",
                config.queue_size, 100 * config.queue_size / n, n, data.name,
            )  # fmt: skip
    for params in (P, getattr(P, "scan", None)):
        if isinstance(params, ImageData):
            probe = params.load_probe_data()
            held = len(set(probe.train_labels.tolist()))
            if held < len(probe.classes):
                raise ValueError(
                    f"probe_train_size={params.probe_train_size}: the probes' {probe.train_labels.numel()}"
                    f" training images hold {held} of the {len(probe.classes)} classes; give at "
                    f"least {len(probe.classes)} (one of each class)"
                )
    if store is not None:
        count, seconds = estimate_training(planned, store)
        limit = float(os.environ.get(MAX_HOURS_ENV, MAX_HOURS))
        if seconds > limit * 3600:
            raise ValueError(
                f"{chapter}: these parameters ask for {count} runs not yet in {store.root}, about "
                f"{seconds / 3600:,.1f} hours of training here (steps timed on this machine), "
                f"over the limit of {limit:g} h: fewer seeds, epochs or conditions, an executor "
                f"that trains elsewhere (executor='slurm'), or {MAX_HOURS_ENV}=<hours> to go on"
            )
        if seconds > 60:
            log.info("%d runs to train here, about %.0f minutes", count, seconds / 60)
    return planned


# -- the command line ---------------------------------------------------------------------------


def _status(plan: Sequence[Entry], store: runs.RunStore) -> list[dict[str, Any]]:
    rows = []
    for e in plan:
        if store.result(e.run_id) is not None:
            state = "finished"
        elif store.is_locked(e.run_id):
            holder = runs.RunLock(store.run_dir(e.run_id) / "lock").holder() or {}
            state = f"training ({holder.get('host')}:{holder.get('pid')})"
        else:
            epochs = Checkpoint.finished_epochs(store.run_dir(e.run_id) / "checkpoint.pt", e.config)
            state = f"interrupted after {epochs} epochs" if epochs else "missing"
        rows.append({"index": e.index, "run_id": e.run_id, "state": state, "run": e.label()})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m negatives.sweep",
        description="A chapter's training runs as a plan file, and workers that train it.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("plan", help="print (or write) a chapter's plan as JSON lines")
    p.add_argument("chapter", choices=TRAINING_CHAPTERS)
    p.add_argument("--profile", default="book", choices=cfg.PROFILES)
    cfg.add_param_option(p)
    p.add_argument("--device", help="what the workers' device='auto' resolves to (cpu, cuda)")
    p.add_argument("--precision", help="what the workers' precision='auto' resolves to")
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads of each worker (CPU workers; "
        "default: this process's): give each worker its share of a machine's cores",
    )
    p.add_argument(
        "--world-size",
        type=int,
        default=1,
        help="processes of each run (torchrun --nproc-per-node), default 1",
    )
    p.add_argument("-o", "--output", help="write the plan here instead of printing it")
    r = sub.add_parser("run", help="train entries of a plan into a results folder")
    r.add_argument("plan")
    r.add_argument(
        "--results", default=None, help="results folder (default $NEGATIVES_RESULTS or ./results)"
    )
    which = r.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, help="only this entry (0-based)")
    which.add_argument("--shard", help="K/N: entries K, K+N, K+2N, ... (0-based K)")
    s = sub.add_parser("status", help="which runs of a plan are finished, training or missing")
    s.add_argument("plan")
    s.add_argument("--results", default=None)
    args = parser.parse_args(argv)
    # the library's notices (a run set aside, a stale lock, jobs submitted), with their source
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    try:
        return _main(parser, args)
    except ValueError as err:  # a bad parameter: its message names it
        parser.error(str(err))


def _main(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "plan":
        module = chapter_module(args.chapter)
        P = module.Params.from_profile(args.profile, **cfg.parse_params(args.param))
        machine = Workers(
            device=args.device,
            precision=args.precision,
            cpu_threads=args.threads,
            world_size=args.world_size,
        )
        plan = chapter_plan(args.chapter, P, machine)
        text = write_plan(plan, args.output)
        if args.output is None:
            sys.stdout.write(text)
        else:
            print(f"{len(plan)} runs written to {args.output}", file=sys.stderr)
        return 0

    plan = read_plan(args.plan)
    store = runs.RunStore(args.results)
    if args.command == "status":
        rows = _status(plan, store)
        for row in rows:
            print(f"{row['index']:>4}  {row['run_id']}  {row['state']:<32}  {row['run']}")
        finished = sum(row["state"] == "finished" for row in rows)
        print(f"{finished} of {len(rows)} runs finished in {store.root}")
        return 0
    if args.index is not None:
        if not 0 <= args.index < len(plan):
            parser.error(f"--index {args.index}: the plan has entries 0 to {len(plan) - 1}")
        chosen = [plan[args.index]]
    elif args.shard is not None:
        try:
            k, n = (int(x) for x in args.shard.split("/"))
            if not (n >= 1 and 0 <= k < n):
                raise ValueError
        except ValueError:
            parser.error(f"--shard {args.shard!r} must be K/N with 0 <= K < N, e.g. 3/16")
        chosen = list(plan[k::n])
    else:
        chosen = list(plan)
    counts = work(chosen, store.root, desc=f"{len(chosen)} runs")
    print(f"{counts['finished']} of {len(chosen)} runs finished in {store.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
