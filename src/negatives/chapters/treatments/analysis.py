"""Chapter 5's computations: train and probe every bench, the paired summary, the collision
rates, all of it in :func:`run`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from negatives import probes
from negatives.bounds import collision_probability
from negatives.chapters.treatments.claims import add_shares, book_verdicts, claims, synthesis
from negatives.chapters.treatments.design import (
    CHAPTER,
    DATA_KINDS,
    REFERENCE,
    Params,
    bench_label,
    parse_treatment,
    plan,
    shared_runs,
)
from negatives.data import Dataset
from negatives.experiment import paired, train_and_probe
from negatives.runner import Run, Workers
from negatives.runs import RunStore
from negatives.sweep import execute


def run_bench(
    P: Params,
    store: RunStore,
    data: dict[str, Dataset],
    probe_data: dict[str, Dataset],
    workers: Workers | None = None,
) -> tuple[list[Run], pd.DataFrame]:
    """Train (or reuse) every run of :meth:`Params.runs` and probe it (cached with the run).

    One row per run: ``bench`` (its label), ``method, kind, K, treatment, seed, run_id,
    train_seconds``, the probes' accuracies (%) and per-image results, and from the last epoch
    ``loss``, ``negatives_used``, ``same_class_kept`` (share of kept negatives of the anchor's
    class) and ``same_class_weight`` (share of the softmax's negative weight on them);
    ``shared``: whether chapter 2 or 3 trains the same run.
    """
    shared = shared_runs(P)
    runs_: list[Run] = []
    tables = []
    for kind in DATA_KINDS:  # one progress bar per data set (sweep trains on one)
        mine = [r for r in P.runs() if r["kind"] == kind]
        if not mine:
            continue
        labelled = [
            ({"bench": bench_label(r["bench"], _data_name(data[kind])), "method": r["bench"][0],
              "kind": kind, "K": r["bench"][2], "num_classes": data[kind].num_classes,
              "treatment": r["treatment"], "shared": r["config"] in shared}, r["config"])
            for r in mine
        ]  # fmt: skip
        got, table = train_and_probe(
            labelled, data[kind], store, probe_data=probe_data[kind], desc=f"{kind} bench",
            workers=workers,
        )  # fmt: skip
        runs_ += got
        tables.append(table)
    return runs_, pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _data_name(data: Dataset) -> str:
    return f"{data.name} (C={data.num_classes})"


def summarize(per_run: pd.DataFrame, metric: str = "linear_accuracy") -> pd.DataFrame:
    """Per ``(bench, treatment)``: ``metric`` against ``"all"`` on the same bench, paired by
    seed (:func:`negatives.experiment.paired`: the mean and interval over seeds, ``diff_*`` over
    seeds, ``diff_test_low/high`` over the test images, the binomial standard error ``se``),
    and the seed means of ``negatives_used``, ``same_class_kept``, ``same_class_weight`` and
    ``own_key_share`` (as fractions)."""
    rows = []
    for (bench, name), g in per_run.groupby(["bench", "treatment"], sort=False):
        ref = per_run[(per_run["bench"] == bench) & (per_run["treatment"] == REFERENCE)]
        first = g.iloc[0]
        rows.append(
            {"bench": bench, "label": parse_treatment("treatment", name).label,
             "method": first["method"], "kind": first["kind"], "K": int(first["K"]),
             "num_classes": int(first["num_classes"]), "treatment": name,
             **paired(g, ref, metric),
             **{c: float(g[c].mean()) if c in g else math.nan for c in
                ("negatives_used", "same_class_kept", "same_class_weight", "own_key_share")}}
        )  # fmt: skip
    return pd.DataFrame(rows)


def random_baselines(
    P: Params, data: dict[str, Dataset], probe_data: dict[str, Dataset], store: RunStore
) -> dict[str, float]:
    """Per bench (its label, as :func:`run_bench` writes it): the linear probe (%) of a
    randomly initialised (seed 0) encoder of the bench's architecture on its probe data, what
    the gain of self-supervision is measured from (:func:`negatives.probes.random_baseline`,
    the random encoder of :func:`negatives.probes.baselines`, cached under the same key)."""
    out: dict[str, float] = {}
    for bench in P.benches:
        kind = bench[1]
        if kind not in probe_data:
            continue
        found = probes.random_baseline(P.base_config(bench), probe_data[kind], store)
        out[bench_label(bench, _data_name(data[kind]))] = float(found["linear_accuracy"])
    return out


def collisions(P: Params) -> pd.DataFrame:
    """Per bench: τ_K, the chance that one of K negatives shares the anchor's class (uniform
    classes, :func:`negatives.bounds.collision_probability`), and the expected same-class
    share of the negatives, 1/C."""
    rows = []
    for method, kind, k in P.benches:
        c = P.num_classes(kind)
        rows.append(
            {"method": method, "kind": kind, "K": k, "num_classes": c,
             "tau_K": collision_probability(k, c), "base_rate": 1 / c}
        )  # fmt: skip
    return pd.DataFrame(rows)


def run(P: Params, store: RunStore | None = None, *, root: str | Path = ".") -> dict[str, Any]:
    """Every computation of the chapter, in the notebook's order, as a dict of tables:
    ``per_run`` (:func:`run_bench`), ``baselines`` (raw pixels and a random encoder of the first
    image bench, or None), ``random`` (:func:`random_baselines`), ``summary`` (with
    :func:`add_shares`' share of the gain over the random encoder), ``collisions``,
    ``verdicts``, ``synthesis`` and ``book_verdicts`` (read from the executed chapters under
    ``root``)."""
    store = store or RunStore(P.results_dir)
    workers = execute(P, CHAPTER, plan, store)
    kinds = {kind for _, kind, _ in P.benches}
    data: dict[str, Dataset] = {}
    probe_data: dict[str, Dataset] = {}
    if "image" in kinds:
        data["image"] = P.load_data()
        same = P.probe_train_size == P.train_size  # the probes' data are the training data
        probe_data["image"] = data["image"] if same else P.load_probe_data()
    if "latent" in kinds:
        data["latent"] = probe_data["latent"] = P.load_latent_data()
    runs_, per_run = run_bench(P, store, data, probe_data, workers)
    # what the image benches' encoders are measured against (chapter 2's, from the cache)
    image = [b for b in P.benches if b[1] == "image"]
    baselines = (
        probes.baselines(P.base_config(image[0]), probe_data["image"], store) if image else None
    )
    T: dict[str, Any] = {"data": data, "runs": runs_, "per_run": per_run, "baselines": baselines}
    T["random"] = random_baselines(P, data, probe_data, store)
    T["summary"] = add_shares(summarize(per_run), T["random"])
    T["collisions"] = collisions(P)
    T["verdicts"] = claims(T, P.margin)
    T["synthesis"] = synthesis(T["summary"])
    T["book_verdicts"] = book_verdicts(root, T["verdicts"])
    return T


def mechanism(summary: pd.DataFrame) -> pd.DataFrame:
    """Per bench: Pearson's r between the same-class share of the negative weight and the
    paired accuracy difference, over its treatments (the reference at 0); descriptive, with
    as few points as treatments, and NaN with fewer than 4 (three points say almost nothing)."""
    rows = []
    for bench, g in summary.groupby("bench", sort=False):
        x, y = g["same_class_weight"].to_numpy(), g["diff_mean"].to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        r = (
            float(np.corrcoef(x[ok], y[ok])[0, 1])
            if ok.sum() >= 4 and x[ok].std() > 0
            else math.nan
        )
        rows.append({"bench": bench, "r": r, "n": int(ok.sum())})
    return pd.DataFrame(rows)
