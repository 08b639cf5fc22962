"""negatives.experiment.paired against a naive loop over seeds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from negatives import probes, stats
from negatives.experiment import paired


def rows(accuracies: dict[int, float], n_test: int, rng: np.random.Generator) -> pd.DataFrame:
    out = []
    for seed, acc in accuracies.items():
        correct = rng.random(n_test) < acc / 100
        out.append({"seed": seed, "linear_accuracy": 100 * correct.mean(), "num_test": n_test,
                    "linear_correct": probes.pack_correct(torch.from_numpy(correct))})  # fmt: skip
    return pd.DataFrame(out)


def test_paired_matches_a_loop_over_the_seeds_both_have() -> None:
    rng = np.random.default_rng(0)
    mine = rows({3: 80.0, 0: 82.0, 1: 79.0, 7: 90.0}, 200, rng)
    ref = rows({0: 84.0, 1: 83.0, 2: 85.0, 3: 84.0}, 200, rng)
    got = paired(mine, ref)
    by = {r.seed: r.linear_accuracy for r in ref.itertuples()}
    diffs = [r.linear_accuracy - by[r.seed] for r in mine.itertuples() if r.seed in by]
    assert got["diff_n"] == len(diffs) == 3 and got["n"] == 4
    mean, low, high = stats.mean_interval(diffs)
    assert (got["diff_mean"], got["diff_low"], got["diff_high"]) == (mean, low, high)
    assert got["mean"] == pytest.approx(mine["linear_accuracy"].mean())
    assert got["se"] == stats.binomial_se(got["mean"], 200)
    seeds = [3, 0, 1]
    _, tlow, thigh = stats.paired_bootstrap(
        probes.correct_matrix(mine.set_index("seed").loc[seeds], "linear_correct"),
        probes.correct_matrix(ref.set_index("seed").loc[seeds], "linear_correct"),
    )
    assert (got["diff_test_low"], got["diff_test_high"]) == (tlow, thigh)
    assert got["diff_test_low"] <= got["diff_mean"] <= got["diff_test_high"]


def test_paired_without_common_seeds_or_per_image_results() -> None:
    rng = np.random.default_rng(1)
    mine, ref = rows({0: 80.0, 1: 81.0}, 50, rng), rows({5: 80.0}, 50, rng)
    got = paired(mine, ref)
    assert got["diff_n"] == 0 and math.isnan(got["diff_mean"]) and math.isnan(got["diff_test_low"])
    plain = paired(mine.drop(columns=["linear_correct"]), ref.drop(columns=["linear_correct"]))
    assert "se" not in plain and "diff_test_low" not in plain
    assert "diff_test_low" not in paired(mine, mine, test_set=False)
    assert paired(mine, mine)["diff_mean"] == 0.0
