"""The experiment layer under the chapters: train (or reuse) a list of runs and probe each.

Every training chapter does the same with its plan: hand its configs to the run cache
(:func:`negatives.runner.sweep`, one progress bar), probe each encoder once
(:func:`negatives.probes.evaluate_run`, cached with the run) and keep one row per run. A chapter
labels its runs (its condition, its K, its treatment); :func:`train_and_probe` adds what every
row has, and :func:`paired` compares one condition's rows with its reference's, seed by seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from negatives import config as cfg
from negatives import probes, stats
from negatives.data import Dataset
from negatives.queue import own_key_shares
from negatives.runner import Run, Workers, sweep
from negatives.runs import RunStore
from negatives.trainconfig import TrainConfig


def train_and_probe(
    labelled: Sequence[tuple[dict[str, Any], TrainConfig]],
    data: Dataset,
    store: RunStore,
    *,
    probe_data: Dataset | None = None,
    desc: str = "runs",
    progress: bool = True,
    workers: Workers | None = None,
) -> tuple[list[Run], pd.DataFrame]:
    """Train (or reuse) every config of ``labelled`` on ``data`` and probe every encoder.

    ``labelled``: ``(labels, config)`` pairs; each row starts with its labels, then ``seed``,
    ``run_id``, ``train_seconds``, the probes' accuracies and per-image results
    (:func:`negatives.probes.evaluate_run`: fitted on ``probe_data``'s training images, default
    ``data``'s, scored on its test images), and from the last epoch of training ``loss``,
    ``negatives_used`` (kept negatives per query), ``same_class_kept`` (the share of them of the
    anchor's class), ``same_class_weight`` (their share of the softmax's negative weight) and
    ``own_key_share`` (MoCo: the share of queries whose own instance has an older key in the
    queue, which is no negative of theirs; 0 for SimCLR, whose anchor is never a negative).
    ``workers``: the executor's workers that trained the runs (:func:`negatives.sweep.execute`;
    None: this process trains them). Returns the runs and the rows, in ``labelled``'s order.
    """
    probe_data = data if probe_data is None else probe_data
    configs = [config for _, config in labelled]
    runs_ = sweep(configs, data, store, desc=desc, progress=progress, workers=workers)
    device = cfg.resolve_device(configs[0].device) if configs else "cpu"  # features on a GPU
    rows = []
    for (labels, config), r in zip(labelled, runs_, strict=True):
        hist = r.history
        rows.append(
            {
                **labels,
                "seed": config.seed,
                "run_id": r.run_id,
                "train_seconds": r.result["seconds"],
                **probes.evaluate_run(r, probe_data, device=device),
                "loss": hist["loss"][-1],
                "negatives_used": hist["negatives_used"][-1],
                "same_class_kept": hist["same_class_fraction"][-1],
                "same_class_weight": hist.get("same_class_weight", [math.nan])[-1],
                "own_key_share": _own_key_share(config, data, hist),
            }
        )
    return runs_, pd.DataFrame(rows)


def paired(
    mine: pd.DataFrame,
    ref: pd.DataFrame,
    metric: str = "linear_accuracy",
    *,
    confidence: float = 0.95,
    test_set: bool = True,
) -> dict[str, float]:
    """One condition against its reference, paired by seed (rows of :func:`train_and_probe`).

    ``n, mean, low, high``: ``metric`` over ``mine``'s seeds (Student-t,
    :func:`negatives.stats.mean_interval`); ``diff_n, diff_mean, diff_low, diff_high``: the
    difference ``mine - ref`` over the seeds both have, in ``mine``'s order (one seed: no
    interval). Where the rows carry the probe's per-image results (``<probe>_correct``,
    ``num_test``), the test set's own uncertainty too: ``se``, the binomial standard error of one
    accuracy, and (with ``test_set``) ``diff_test_low/high``, the 95% interval of the mean
    difference from resampling the test images (:func:`negatives.stats.paired_bootstrap`).
    """
    mean, low, high = stats.mean_interval(mine[metric].tolist(), confidence)
    by, ref_by = mine.set_index("seed"), ref.set_index("seed")
    seeds = [s for s in mine["seed"] if s in ref_by.index]
    diffs = [float(by.loc[s, metric] - ref_by.loc[s, metric]) for s in seeds]
    dmean, dlow, dhigh = stats.mean_interval(diffs, confidence)
    out = {"n": len(mine), "mean": mean, "low": low, "high": high, "diff_n": len(seeds),
           "diff_mean": dmean, "diff_low": dlow, "diff_high": dhigh}  # fmt: skip
    column = f"{metric.removesuffix('_accuracy')}_correct"
    if column in mine.columns and "num_test" in mine.columns:
        out["se"] = stats.binomial_se(mean, int(mine["num_test"].iloc[0]))
        tlow = thigh = math.nan
        if test_set and seeds:
            _, tlow, thigh = stats.paired_bootstrap(
                probes.correct_matrix(by.loc[seeds], column),
                probes.correct_matrix(ref_by.loc[seeds], column),
            )
        if test_set:
            out.update(diff_test_low=tlow, diff_test_high=thigh)
    return out


def _own_key_share(config: TrainConfig, data: Dataset, hist: dict[str, Any]) -> float:
    """The last epoch's ``own_key_share``: logged in training, or replayed from the data order
    for a run cached before the trainer logged it (:func:`negatives.queue.own_key_shares`)."""
    if config.method != "moco":
        return 0.0
    if "own_key_share" in hist:
        return float(hist["own_key_share"][-1])
    return own_key_shares(config, data)[-1]
