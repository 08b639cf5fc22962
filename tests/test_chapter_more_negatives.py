"""Tests for negatives.chapters.more_negatives: parameters, the K-scan summaries and the verdict
rules (finite-sample and population) on synthetic tables, each checked against a direct
computation (per-seed loops, scipy's t quantile) and with one case per verdict.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from negatives import probes
from negatives.chapters import bounds, kscan
from negatives.chapters import more_negatives as mn

# ---------------------------------------------------------------------------------------------
# Parameters


def test_params_defaults_and_shared_kscan() -> None:
    p = mn.Params.from_profile("smoke")
    assert p.scan == kscan.Params.from_profile("smoke")
    assert p.accuracy_margin == 1.0
    # Chapter 3 with the same overrides builds the same K-scan, hence the same run ids: the
    # scan's parameters have chapter 3's names here too.
    overrides = dict(seeds=1, epochs=1, results_dir="/tmp/x")
    q = mn.Params.from_profile(
        "smoke", num_negatives=[3, 7], population_num_negatives=[1, 2], **overrides
    )
    b = bounds.Params.from_profile("smoke", num_negatives=[3, 7], **overrides)
    assert q.scan == b.scan
    assert q.scan.configs() == b.scan.configs()
    assert q.scan.latent_configs() == b.scan.latent_configs()
    assert q.population_num_negatives == (1, 2)  # the population scan's K values are separate
    assert q.scan.results_dir == "/tmp/x"


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        (dict(seeds=0), "seeds"),
        (dict(modes=["nope"]), "modes"),
        (dict(latent_modes=[]), "latent_modes"),
        (dict(num_negatives=[0, 3]), "num_negatives"),
        (dict(latent_num_negatives=[-1]), "latent_num_negatives"),
        (dict(dataset="imagenet"), "dataset"),
        (dict(accuracy_margin=-0.5), "accuracy_margin"),
        (dict(num_classes=[1, 3]), "num_classes"),
        (dict(population_num_negatives=[0]), "population_num_negatives"),
        (dict(dim=1, num_classes=[3]), "dim"),
        (dict(bogus=3), "bogus"),
    ],
)
def test_params_bad_values_name_the_parameter(overrides: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        mn.Params.from_profile("smoke", **overrides)


def test_params_unknown_profile() -> None:
    with pytest.raises(ValueError, match="profile"):
        mn.Params.from_profile("huge")


# ---------------------------------------------------------------------------------------------
# Synthetic K-scan tables


def scan_table(acc: dict[tuple[str, int], list[float]], data: str = "latent") -> pd.DataFrame:
    """Rows like kscan_accuracy's: acc[(mode, K)] is the accuracy (fraction) per seed; the
    probes report percentages, so the table holds 100 x acc."""
    rows = []
    for (mode, k), values in acc.items():
        for seed, a in enumerate(values):
            rows.append(
                {
                    "data": data,
                    "dataset": "toy",
                    "num_classes": 5,
                    "mode": mode,
                    "K": k,
                    "seed": seed,
                    "linear_accuracy": 100 * a,
                    "mean_accuracy": 100 * (a - 0.05),
                }
            )
    return pd.DataFrame(rows)


def t_interval(x: list[float]) -> tuple[float, float, float]:
    x = np.asarray(x, dtype=float)
    half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean(), x.mean() - half, x.mean() + half


def test_accuracy_summary_matches_direct_interval() -> None:
    rng = np.random.default_rng(0)
    acc = {("mask", k): list(0.6 + 0.05 * rng.standard_normal(4)) for k in (3, 15, 63)}
    rows = scan_table(acc)
    s = mn.accuracy_summary(rows)
    assert len(s) == 3 * 2
    for (_mode, k), values in acc.items():
        r = s[(s["K"] == k) & (s["metric"] == "linear_accuracy")].iloc[0]
        mean, low, high = t_interval([100 * v for v in values])
        assert r["n"] == 4 and r["K+1"] == k + 1
        assert r["mean"] == pytest.approx(mean) and r["low"] == pytest.approx(low)
        assert r["high"] == pytest.approx(high)
    with pytest.raises(ValueError, match="metric"):
        mn.accuracy_summary(rows, ["nope"])


def test_k_comparison_pairs_by_seed_and_picks_best_smaller_k() -> None:
    # A seed effect shared by every K: pairing removes it, an unpaired test would not.
    seed_effect = [0.0, 0.2, -0.15, 0.1]
    acc = {
        ("mask", 3): [0.50 + e for e in seed_effect],
        ("mask", 15): [
            0.70 + e + d for e, d in zip(seed_effect, [0.0, 0.002, -0.002, 0.0], strict=True)
        ],
        ("mask", 63): [
            0.68 + e + d for e, d in zip(seed_effect, [0.001, 0.0, 0.0, -0.001], strict=True)
        ],
    }
    rows = scan_table(acc)
    c = mn.k_comparison(rows, "linear_accuracy", margin=5.0).iloc[0]
    assert (c["K_min"], c["K_best"], c["K_max"]) == (3, 15, 63)
    # slow reference: per-seed differences in a loop
    d = [100 * (acc[("mask", 63)][s] - acc[("mask", 15)][s]) for s in range(4)]
    mean, low, high = t_interval(d)
    assert c["best_mean"] == pytest.approx(mean) and c["best_low"] == pytest.approx(low)
    assert c["best_high"] == pytest.approx(high)
    d_min = [100 * (acc[("mask", 63)][s] - acc[("mask", 3)][s]) for s in range(4)]
    assert c["min_mean"] == pytest.approx(np.mean(d_min))
    # a 2-point drop, tightly estimated: within a 5-point margin, beyond a 1-point margin
    assert c["verdict"] == "reproduced"
    assert mn.k_comparison(rows, "linear_accuracy", margin=1.0).iloc[0]["verdict"] == (
        "not reproduced"
    )
    # rising from the smallest K is a departure from the flat population optimum
    found = mn.departures(mn.k_comparison(rows, "linear_accuracy", margin=1.0), 1.0)
    assert any("smallest K=3" in f for f in found)
    assert any("falls from K=15 to K=63" in f for f in found)


def test_k_comparison_inconclusive_cases() -> None:
    noisy = {("batch", 3): [0.5, 0.9, 0.4], ("batch", 31): [0.9, 0.3, 0.6]}
    c = mn.k_comparison(scan_table(noisy), margin=1.0).iloc[0]
    assert c["best_low"] < -1.0 < c["best_high"] and c["verdict"] == "inconclusive"
    one_seed = {("batch", 3): [0.5], ("batch", 31): [0.9]}
    c = mn.k_comparison(scan_table(one_seed), margin=1.0).iloc[0]
    assert math.isnan(c["best_low"]) and c["verdict"] == "inconclusive"
    # a single K gives no comparison
    assert len(mn.k_comparison(scan_table({("batch", 3): [0.5, 0.6]}))) == 0
    with pytest.raises(ValueError, match="margin"):
        mn.k_comparison(scan_table(noisy), margin=-1.0)


def chapter_tables(
    scan_rows: pd.DataFrame | None = None,
    population: pd.DataFrame | None = None,
    margin: float = 1.0,
    metrics: tuple[str, ...] = tuple(mn.METRICS),
) -> dict:
    """The tables of mn.run that mn.claims reads, from synthetic scans."""
    population = population_table(True) if population is None else population
    T = {"main": population, "variants": population.iloc[:0], "skew": None}
    if scan_rows is None:
        return {**T, "comparisons": pd.DataFrame(), "scan_labels": {}}
    comparisons = [mn.k_comparison(scan_rows, m, margin) for m in metrics]
    labels = {kind: kscan.data_label(scan_rows, kind) for kind in set(scan_rows["data"])}
    return {**T, "comparisons": pd.concat(comparisons, ignore_index=True), "scan_labels": labels}


def test_claims_one_finite_sample_row_per_data_mode_metric() -> None:
    flat = [0.8, 0.81, 0.79]
    rows = pd.concat(
        [
            scan_table({("mask", 7): flat, ("mask", 31): flat}, "latent"),
            scan_table(
                {
                    ("batch", 3): flat,
                    ("batch", 15): flat,
                    ("mask", 3): flat,
                    ("mask", 15): [a - 0.1 for a in flat],
                },
                "image",
            ),
        ],
        ignore_index=True,
    )
    verdicts = mn.claims(chapter_tables(rows, margin=1.0))
    table = verdicts[verdicts["key"] == "no degradation"]
    assert len(table) == 3 * len(mn.METRICS)
    assert set(table["claim"]) == {"accuracy does not degrade with K"}
    assert set(table["metric"]) == set(mn.METRICS)
    # identical accuracies: difference exactly 0 with a zero-width interval -> reproduced
    latent = table[table["data"] == "latent"]
    assert len(latent) == len(mn.METRICS) and set(latent["verdict"]) == {"reproduced"}
    assert latent["setting"].str.contains("K = 31 against K = 7").all()
    masked = table[(table["data"] == "image") & (table["mode"] == "mask")]
    assert len(masked) == len(mn.METRICS) and set(masked["verdict"]) == {"not reproduced"}
    assert masked["rule"].str.contains("−1").all()  # the region is above -accuracy_margin


def test_k_comparison_reports_the_test_sets_own_interval() -> None:
    rng = np.random.default_rng(0)
    rows = scan_table({("mask", 3): [0.8, 0.8], ("mask", 15): [0.8, 0.8]})
    packs = [probes.pack_correct(torch.from_numpy(rng.random(500) < 0.8)) for _ in range(4)]
    rows = rows.assign(linear_correct=packs, num_test=500)
    c = mn.k_comparison(rows, "linear_accuracy").iloc[0]
    assert c["best_test_low"] < 0 < c["best_test_high"]  # independent vectors: about 0
    verdicts = mn.claims(chapter_tables(rows, metrics=("linear_accuracy",)))
    assert verdicts[verdicts["key"] == "no degradation"]["test_set"].iloc[0].startswith("[")


# ---------------------------------------------------------------------------------------------
# Population verdicts and the verdict table


def population_table(flat: bool) -> pd.DataFrame:
    rows = []
    for prior in ("uniform", "zipf"):
        for c in (2, 5):
            for k in (1, 16, 256):
                sup = 0.3 if (flat or prior == "zipf") else 0.3 + 0.01 * math.log2(k)
                rows.append(
                    {
                        "C": c,
                        "K": k,
                        "prior": prior,
                        "scale": 1.0,
                        "constraint": "sphere",
                        "simplex distance": 0.0 if prior == "uniform" else 0.3,
                        "supervised loss": sup,
                        "accuracy": 1.0,
                        "log10 CURL bound": 0.5 * math.log2(k),
                        "restarts": 2,
                        "restart spread": 1e-12,
                    }
                )
    return pd.DataFrame(rows)


def test_population_claims_on_synthetic_scans() -> None:
    table = mn.claims(chapter_tables())
    assert list(table["key"]) == list(mn.POPULATION_CLAIMS)
    assert set(table["verdict"]) == {"reproduced"}
    assert (table["low"] == table["high"]).all()  # exact computations: the point is the interval
    degrading = mn.claims(chapter_tables(population=population_table(False))).set_index("key")
    assert degrading.loc["flat", "verdict"] == "not reproduced"
    assert degrading.loc["zipf", "verdict"] == "reproduced"  # the Zipf rows stay flat
    one_start = mn.claims(chapter_tables(population=population_table(True).assign(restarts=1)))
    assert one_start.set_index("key").loc["tractable", "verdict"] == "inconclusive"


def test_a_scan_of_one_k_compares_nothing_and_keeps_its_columns() -> None:
    """-p num_negatives '[15]' -p latent_num_negatives '[15]' once ended the page after every
    run trained (KeyError 'data'): a single K gives an empty comparison that pages can select."""
    rows = pd.DataFrame(
        {"data": "image", "mode": "batch", "K": 15, "seed": [0, 1], "linear_accuracy": [80.0, 81]}
    )
    comp = mn.k_comparison(rows)
    assert comp.empty and {"data", "verdict", "best_test_low"} <= set(comp.columns)
    assert comp[comp["data"] == "image"].empty and mn.departures(comp) == []
