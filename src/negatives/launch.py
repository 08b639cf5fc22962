"""The command line of one run (``python -m negatives.train --config run.json``, and under
``torchrun`` one process per rank): a run spec (:class:`RunSpec`: a config and its data, or a
line of a chapter's plan) trained through the run cache."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from negatives import config as cfg
from negatives import distributed, runs
from negatives.data import load_dataset
from negatives.runner import execution, run
from negatives.trainconfig import TrainConfig

log = logging.getLogger(__name__)

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
    # the library's notices (a run set aside, a stale lock, jobs submitted), with their source
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
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
            log.warning(
                "the plan names this run %s but here it is %s: this machine computes it "
                "otherwise (here %s%s); a notebook reading the plan will not find it: make the "
                "plan for this machine (sweep plan --device, --precision, --threads, --world-size)",
                planned,
                run_id,
                execution(spec.config),
                f", in the plan {there}" if there else "",
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
