"""Chapter 2's computations: train and probe every condition, the paired summary, the
baselines, the hardness analyses, all of it in :func:`run`; :func:`main` from the shell.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import pandas as pd

from negatives import config as cfg
from negatives import probes
from negatives.chapters.difficulty.claims import add_shares, claims
from negatives.chapters.difficulty.design import Params, plan
from negatives.data import Dataset
from negatives.experiment import paired, train_and_probe
from negatives.hardness import (
    base_rate,
    consistency_of_runs,
    consistency_summary,
    same_class_by_rank,
    same_class_summary,
)
from negatives.regimes import REFERENCE
from negatives.runner import Run, Workers
from negatives.runs import RunStore
from negatives.sweep import execute


def run_conditions(
    P: Params,
    store: RunStore | None = None,
    data: Dataset | None = None,
    *,
    probe_data: Dataset | None = None,
    progress: bool = True,
    workers: Workers | None = None,
) -> tuple[list[Run], pd.DataFrame]:
    """Train (or reuse from the cache) every condition of :meth:`Params.conditions`.

    One progress bar for all runs (:func:`negatives.runner.sweep`); each run's probes on frozen
    backbone features (:func:`negatives.probes.evaluate_model`, fitted on ``probe_data``'s
    training images, scored on its test images) are cached with the run.

    Returns the runs and one row per run: ``group, condition, band_low, band_high, temperature,
    seed, run_id, train_seconds``, the probes' ``linear_accuracy, linear_loss, mean_accuracy,
    knn_accuracy`` (%), ``num_test`` and ``linear_correct`` / ``knn_correct`` / ``mean_correct``
    (which test images each got right, packed: :func:`negatives.probes.unpack_correct`), and
    from the last epoch of training ``loss``, ``negatives_used`` (kept negatives per query) and
    ``same_class_kept`` (fraction of the kept negatives that share the query's class).
    """
    store = store or RunStore(P.results_dir)
    data = data if data is not None else P.load_data()
    probe_data = probe_data if probe_data is not None else P.load_probe_data()
    labelled = []
    for cond in P.conditions():
        band = cond["band"]
        labels = {
            "group": cond["group"],
            "condition": cond["condition"],
            "band_low": math.nan if band is None else band[0],
            "band_high": math.nan if band is None else band[1],
            "temperature": cond["temperature"],
        }
        labelled.append((labels, cond["config"]))
    return train_and_probe(
        labelled, data, store, probe_data=probe_data, desc="difficulty runs", progress=progress,
        workers=workers,
    )  # fmt: skip


def run_baselines(P: Params, probe_data: Dataset, store: RunStore | None = None) -> pd.DataFrame:
    """The probes on raw pixels and on a randomly initialised encoder of the chapter's
    architecture (:func:`negatives.probes.baselines`, cached). One row per baseline."""
    found = probes.baselines(P.base_config(), probe_data, store or RunStore(P.results_dir))
    return pd.DataFrame([{"baseline": name, **m} for name, m in found.items()])


def random_accuracy(baselines: pd.DataFrame) -> float:
    """The random encoder's linear-probe accuracy (%) among :func:`run_baselines`' rows
    (indexed by ``baseline``): what the gain of self-supervision is measured from."""
    random = [name for name in baselines.index if str(name).startswith("random")]
    if len(random) != 1:
        raise ValueError(f"baselines: expected one random encoder, got {list(baselines.index)}")
    return float(baselines.loc[random[0], "linear_accuracy"])


def summarize_conditions(df: pd.DataFrame, metric: str = "linear_accuracy") -> pd.DataFrame:
    """Per ``(group, condition, temperature)``: ``metric`` against "all negatives" (group
    ``main``) at the same temperature, paired by seed (:func:`negatives.experiment.paired`:
    ``n, mean, low, high, diff_*``, and where ``df`` has the probes' per-image results ``se``
    and ``diff_test_low/high``), with ``band_low, band_high`` and the seed means of
    ``knn_accuracy``, ``mean_accuracy``, ``negatives_used`` and ``same_class_kept`` where ``df``
    has them. A condition without a reference at its temperature gets NaN differences.
    """
    ref = df[(df["group"] == "main") & (df["condition"] == REFERENCE)]
    extra = [
        c for c in ("knn_accuracy", "mean_accuracy", "negatives_used", "same_class_kept") if c in df
    ]
    rows = []
    for (group, cond, t), g in df.groupby(["group", "condition", "temperature"], sort=False):
        rows.append(
            {"group": group, "condition": cond, "band_low": g["band_low"].iloc[0],
             "band_high": g["band_high"].iloc[0], "temperature": t,
             **paired(g, ref[ref["temperature"] == t], metric),
             **{c: float(g[c].mean()) for c in extra}}
        )  # fmt: skip
    return pd.DataFrame(rows)


def run_consistency(
    P: Params, runs_: list[Run], per_run: pd.DataFrame, data: Dataset
) -> pd.DataFrame:
    """:func:`negatives.hardness.consistency_of_runs` on every "all negatives" run (group
    ``main``): one row per run with ``temperature, seed`` and the statistics."""
    ref = per_run[(per_run["group"] == "main") & (per_run["condition"] == REFERENCE)]
    by_id = {r.run_id: r for r in runs_}
    return consistency_of_runs(
        [({"temperature": r.temperature, "seed": r.seed}, by_id[r.run_id]) for r in ref.itertuples()],
        data, num_keys=P.consistency_keys, num_queries=P.consistency_queries,
        top_fraction=P.consistency_top_fraction, device=cfg.resolve_device(P.device),
    )  # fmt: skip


def run(P: Params, store: RunStore | None = None, *, progress: bool = True) -> dict[str, Any]:
    """Every computation of the chapter, in the notebook's order, as a dict of tables.

    ``data`` / ``probe_data`` (the data sets), ``runs`` and ``per_run`` (:func:`run_conditions`),
    ``summary`` (with :func:`add_shares`' share of the gain over the random encoder),
    ``baselines``, ``base_rate``, ``rank`` (:func:`same_class_by_rank`), ``same_class``,
    ``consistency``, ``consistency_summary`` and ``verdicts``.
    """
    store = store or RunStore(P.results_dir)
    workers = execute(P, "difficulty", plan, store)
    data, probe_data = P.load_data(), P.load_probe_data()
    runs_, per_run = run_conditions(
        P, store, data, probe_data=probe_data, progress=progress, workers=workers
    )
    T: dict[str, Any] = {
        "data": data,
        "probe_data": probe_data,
        "runs": runs_,
        "per_run": per_run,
    }
    T["baselines"] = run_baselines(P, probe_data, store).set_index("baseline")
    # with the share of the gain over the random encoder that each condition keeps
    T["summary"] = add_shares(summarize_conditions(per_run), random_accuracy(T["baselines"]))
    T["base_rate"] = base_rate(data.train_labels)
    T["rank"] = same_class_by_rank(runs_, per_run, group="main", condition=REFERENCE)
    T["same_class"] = same_class_summary(T["rank"], T["base_rate"])
    T["consistency"] = run_consistency(P, runs_, per_run, data)
    T["consistency_summary"] = consistency_summary(T["consistency"])
    T["verdicts"] = claims(T)
    return T


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """``python -m negatives.chapters.difficulty --profile book -p device cuda``: the
    chapter's computations without the notebook (as on a GPU machine with no Jupyter); prints
    the verdict table and, with ``--json``, writes it and the summary."""
    p = argparse.ArgumentParser(
        prog="python -m negatives.chapters.difficulty", description=main.__doc__
    )
    p.add_argument("--profile", default="book", choices=cfg.PROFILES)
    cfg.add_param_option(p)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    P = Params.from_profile(args.profile, **cfg.parse_params(args.param))
    t0 = time.perf_counter()
    out = run(P)
    seconds = time.perf_counter() - t0
    table = out["verdicts"]
    print(table[["claim", "setting", "ours", "test_set", "verdict"]].to_string(index=False))
    unique = out["per_run"].drop_duplicates("run_id")
    print(
        f"\n{len(unique)} runs, {unique['train_seconds'].sum():.0f} s of training; "
        f"the chapter took {seconds:.0f} s"
    )
    if args.json:
        summary = out["summary"].drop(columns=[], errors="ignore")
        payload = {
            "profile": args.profile,
            "seconds": seconds,
            "train_seconds": float(unique["train_seconds"].sum()),
            "runs": len(unique),
            "verdicts": table.to_dict(orient="records"),
            "summary": summary.to_dict(orient="records"),
        }
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1, default=str)
    return out
