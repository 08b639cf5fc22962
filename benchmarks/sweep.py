"""Wall time of a chapter's sweep with 1 worker against 2 (submitit's local executor).

The runs of a plan are independent, so parallel workers should share a machine's cores, not
fight over them: each worker gets ``cpu_count // workers`` threads (:func:`negatives.sweep.
thread_share`). This trains one chapter's smoke plan from an empty results folder

* in this process (``executor="local"``, every core),
* with 1 submitit worker (every core), and
* with 2 submitit workers (half the cores each), and, with ``--oversubscribe``,
  2 workers that both use every core (what the executor avoids),

and prints the wall time of each and the speed-up of 2 workers over 1. Every process waits
for OpenMP work passively (``OMP_WAIT_POLICY=PASSIVE``, as ``import negatives`` sets for the
notebooks), which keeps oversubscribed cores usable but makes the tiny steps of a smoke run
with 2 threads about twice as slow as with spinning threads; 1 thread per worker needs no wait.

    python benchmarks/sweep.py                        # difficulty's smoke plan, about 3 minutes
    python benchmarks/sweep.py --chapter bounds --profile smoke

Writes ``benchmarks/results/sweep-<chapter>-<profile>.json``.
"""

# ruff: noqa: E402
from __future__ import annotations

import os

# Every process of this benchmark waits for OpenMP work passively, as the notebooks do (`import
# negatives` sets it before torch): the workers inherit it, so every row runs under one policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from negatives import runs, sweep
from negatives.runner import Workers

RESULTS = Path(__file__).resolve().parent / "results"


def _time(plan_for, kind: str, workers: int, threads: int, root: Path) -> dict:
    store = runs.RunStore(root)
    machine = Workers(cpu_threads=threads)
    plan = plan_for(machine)
    t0 = time.perf_counter()
    if kind == "local":
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            sweep.work(plan, root, progress=False)
        finally:
            torch.set_num_threads(before)
    else:
        ex = sweep.Executor("submitit-local", workers, True, {"cpu_threads": threads})
        ex.ensure(plan, store, progress=False)
    seconds = time.perf_counter() - t0
    trained = sum(r["seconds"] for r in (store.result(e.run_id) for e in plan) if r is not None)
    return {
        "executor": kind,
        "workers": workers,
        "threads_per_worker": threads,
        "runs": len(plan),
        "wall_seconds": seconds,
        "training_seconds_summed": trained,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--chapter", default="difficulty", choices=sweep.TRAINING_CHAPTERS)
    p.add_argument("--profile", default="smoke")
    p.add_argument(
        "--oversubscribe", action="store_true", help="also time 2 workers that each use every core"
    )
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    module = sweep.chapter_module(args.chapter)
    P = module.Params.from_profile(args.profile)
    planned = module.plan(P)  # data loaded once, for every setting

    def plan_for(machine: Workers) -> list[sweep.Entry]:
        return sweep.entries(args.chapter, planned, machine)

    cpus = os.cpu_count() or 1
    settings = [
        ("local", 1, cpus),
        ("submitit-local", 1, cpus),
        ("submitit-local", 2, sweep.thread_share(2)),
    ]
    if args.oversubscribe:
        settings.append(("submitit-local", 2, cpus))
    rows = []
    for kind, workers, threads in settings:
        with tempfile.TemporaryDirectory() as root:
            rows.append(_time(plan_for, kind, workers, threads, Path(root)))
        r = rows[-1]
        print(f"  {kind:<15} {workers} worker(s) x {threads} thread(s): {r['wall_seconds']:7.1f} s")
    one = next(r for r in rows if r["executor"] == "submitit-local" and r["workers"] == 1)
    two = rows[2]  # 2 workers, each its share of the cores
    print()
    print(f"{args.chapter} ({args.profile}): {one['runs']} runs on {cpus} cores")
    print(f"{'executor':<16}{'workers':>8}{'threads':>9}{'wall (s)':>10}{'train (s, summed)':>19}")
    for r in rows:
        print(
            f"{r['executor']:<16}{r['workers']:>8}{r['threads_per_worker']:>9}"
            f"{r['wall_seconds']:>10.1f}{r['training_seconds_summed']:>19.1f}"
        )
    speedup = one["wall_seconds"] / two["wall_seconds"]
    print(f"2 workers of {two['threads_per_worker']} thread(s) against 1 of {cpus}: x{speedup:.2f}")
    out = {
        "chapter": args.chapter,
        "profile": args.profile,
        "cpus": cpus,
        "torch": torch.__version__,
        "rows": rows,
        "speedup_2_over_1": speedup,
        "environment": runs.environment("cpu"),
    }
    path = Path(args.json) if args.json else RESULTS / f"sweep-{args.chapter}-{args.profile}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"written to {path}")
    return out


if __name__ == "__main__":
    main()
