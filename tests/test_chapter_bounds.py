"""Tests for negatives.chapters.bounds: parameters, the cached scan, the tables, the claims.

The bound terms themselves are tested in test_bounds.py, the statistics over seeds in
test_stats.py; the verdict rules here on synthetic tables, one case per verdict.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from negatives import bounds, probes
from negatives import verdicts as vd
from negatives.chapters import bounds as chapter
from negatives.chapters import kscan

# ---------------------------------------------------------------------------------------------
# Parameters


def test_params_from_profile_defaults_and_overrides() -> None:
    p = chapter.Params.from_profile("smoke", num_passes=3, seeds=1, num_negatives=[1, 7])
    assert p.num_passes == 3
    assert p.num_augmentations == chapter.Params.profiles["smoke"].num_augmentations
    assert p.scan.seeds == 1 and p.scan.num_negatives == (1, 7)
    # None means "the profile's value", for the chapter's fields and the K-scan's alike.
    q = chapter.Params.from_profile("smoke", num_passes=None, seeds=None)
    assert q.num_passes == chapter.Params.profiles["smoke"].num_passes
    assert q.scan == kscan.Params.from_profile("smoke")
    table = p.table()
    assert {"num_negatives", "num_passes", "num_augmentations", "results_dir"} <= set(
        table["parameter"]
    )
    # an unset data_root reads "None", not pandas' "nan"
    assert table.set_index("parameter").loc["data_root", "value"] == "None"


def test_params_share_the_kscan_configs() -> None:
    # Chapter 4 embeds the same kscan.Params from the same overrides: the configs must be identical.
    overrides = dict(num_negatives=[3, 7], seeds=2, epochs=1)
    p = chapter.Params.from_profile("smoke", num_passes=4, **overrides)
    assert p.scan.configs() == kscan.Params.from_profile("smoke", **overrides).configs()


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"num_negatives": [3, -1]}, "num_negatives"),
        ({"latent_num_negatives": [0]}, "latent_num_negatives"),
        ({"num_passes": 0}, "num_passes"),
        ({"num_augmentations": 0}, "num_augmentations"),
        ({"num_augmentations": 2.5}, "num_augmentations"),
        ({"eval_seed": -1}, "eval_seed"),
        ({"seeds": 0}, "seeds"),
        ({"modes": ["batch", "queue"]}, "modes"),
        ({"dataset": "mnist"}, "dataset"),
        ({"temperature": -0.5}, "temperature"),
        ({"num_pases": 3}, "num_pases"),
        ({"latent_num_negatives": [7, 1023], "latent_test_size": 500}, "latent_num_negatives"),
        ({"num_negatives": [3, 255], "test_size": 100}, "num_negatives"),
    ],
)
def test_bad_params_name_the_parameter(overrides: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        chapter.Params.from_profile("smoke", **overrides)


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="profile"):
        chapter.Params.from_profile("huge")


# ---------------------------------------------------------------------------------------------
# The cached evaluation of trained runs


def test_scan_bounds_end_to_end_and_cached(tmp_path, one_thread) -> None:
    p = chapter.Params.from_profile(
        "smoke",
        results_dir=str(tmp_path),
        train_size=120,
        test_size=60,
        num_negatives=[3, 7],
        seeds=1,
        epochs=1,
        width=8,
        latent_classes=4,
        latent_dim=6,
        latent_train_size=160,
        latent_test_size=64,
        latent_num_negatives=[3, 15],
        latent_epochs=1,
        num_passes=2,
        num_augmentations=2,
    )
    image = chapter.scan_bounds(p, "image")
    latent = chapter.scan_bounds(p, "latent")
    assert len(image) == len(p.scan.configs()) and len(latent) == len(p.scan.latent_configs())
    rows = pd.concat([image, latent], ignore_index=True)
    assert set(chapter.TERMS) <= set(rows.columns)
    assert {"data", "mode", "K", "seed", "run_id"} <= set(rows.columns)
    assert (rows["info_loss"] > 0).all() and rows["upsilon"].between(0, 1).all()
    assert (rows.loc[rows.data == "latent", "d_f"] == 0).all()
    assert (rows.loc[rows.data == "image", "d_f"] <= 0).all()
    # Evaluations are cached per run: a second pass reads the same numbers back.
    again = chapter.scan_bounds(p, "image")
    pd.testing.assert_frame_equal(image, again)
    assert list(tmp_path.glob("runs/*/eval-bounds-*.json"))
    with pytest.raises(ValueError, match="kind"):
        chapter.scan_bounds(p, "text")


# ---------------------------------------------------------------------------------------------
# Summaries and the υ table


def synthetic_rows(
    acc_slope: float = 2.0,
    noise: float = 0.1,
    seeds: int = 3,
    ks: tuple[int, ...] = (3, 15, 63, 255),
    seed: int = 0,
) -> pd.DataFrame:
    """A scan table with accuracy = 50 + slope log2(K+1) + noise and well-behaved bounds."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        for k in ks:
            x = math.log2(k + 1)
            rows.append(
                {
                    "data": "image",
                    "dataset": "toy",
                    "num_classes": 10,
                    "mode": "batch",
                    "K": k,
                    "seed": s,
                    "centroid_accuracy": 50 + acc_slope * x + noise * rng.standard_normal(),
                    "linear_accuracy": 60 + acc_slope * x + noise * rng.standard_normal(),
                    "info_loss": x,
                    "curl_bound": 0.5 * x,
                    "proposed_bound": 0.4 * x,
                    "sup_loss": 1.0,
                    "curl_sup_upper_bound": 2.0**x + 0.01 * rng.standard_normal(),
                    "proposed_sup_upper_bound_exact_upsilon": 3.0 + 0.01 * rng.standard_normal(),
                    "ash_sup_upper_bound": 50.0 + 0.01 * rng.standard_normal(),
                    "bao_sup_upper_bound": 2.0 + 0.01 * rng.standard_normal(),
                    "bao_sup_lower_bound": -0.5,
                }
            )
    return pd.DataFrame(rows)


def test_upsilon_table_exposes_the_float64_error_at_c100() -> None:
    rows = pd.DataFrame(
        {
            "data": ["latent"] * 2 + ["image"],
            "num_classes": [100, 100, 10],
            "K": [127, 1023, 63],
            "upsilon": [0.0, 1.0, 1.0],
            "upsilon_exact": [0.0, 0.99, 0.99],
        }
    )
    t = chapter.upsilon_table(rows).set_index(["C", "K+1"])
    assert t.loc[(100, 128), "exact (uniform)"] < 1e-15
    assert t.loc[(100, 128), "float64 / exact"] > 1e6  # the published computation is far off
    assert t.loc[(10, 64), "float64 / exact"] == pytest.approx(1.0, rel=1e-9)
    assert t.loc[(100, 1024), "exact (uniform)"] == pytest.approx(
        bounds.coverage_probability(1024, num_classes=100)
    )


def test_paper_comparison_lists_quotes_and_ours() -> None:
    rows = synthetic_rows()
    cmp = chapter.paper_comparison(rows)
    paper = cmp[cmp["source"].str.startswith("paper: CIFAR-10,")]
    assert paper["K+1"].tolist() == [32, 64, 128, 256, 512]
    ours = cmp[cmp["source"].str.startswith("ours")]
    assert ours["K+1"].tolist() == [4, 16, 64, 256]
    assert ours["mean-classifier acc. (%)"].iloc[0] == pytest.approx(
        rows.loc[rows.K == 3, "centroid_accuracy"].mean()
    )


# ---------------------------------------------------------------------------------------------
# Verdict rules


def verdicts(rows: pd.DataFrame) -> pd.DataFrame:
    """The chapter's verdict table of a scan table alone."""
    return chapter.claims({"rows": rows})


def _verdict(table: pd.DataFrame, claim: str, setting: str = "") -> str:
    row = table[(table["claim"] == claim) & table["setting"].str.contains(setting, regex=False)]
    assert len(row) == 1, row
    return row["verdict"].iloc[0]


ACC = "more negatives improve accuracy"
CURL = "the CURL bound explodes"
PROP = "the proposed bound stays informative"
LOWER = "both bounds are below L_Info"


@pytest.mark.parametrize(
    ("slope", "noise", "seeds", "expected"),
    [
        (2.0, 0.1, 3, "reproduced"),
        (-2.0, 0.1, 3, "not reproduced"),
        (0.0, 0.01, 3, "not reproduced"),  # flat: a rise below the minimum counts as none
        (0.5, 20.0, 3, "inconclusive"),
        (2.0, 0.1, 1, "inconclusive"),
    ],
)
def test_accuracy_verdicts(slope: float, noise: float, seeds: int, expected: str) -> None:
    table = verdicts(synthetic_rows(acc_slope=slope, noise=noise, seeds=seeds))
    assert _verdict(table, ACC, "mean classifier") == expected
    assert _verdict(table, ACC, "linear probe") == expected


def test_curl_verdicts() -> None:
    rows = synthetic_rows()
    assert _verdict(verdicts(rows), CURL) == "reproduced"  # grows
    exploded = rows.copy()
    exploded.loc[exploded.K == 255, "curl_sup_upper_bound"] = math.inf
    table = verdicts(exploded)
    assert _verdict(table, CURL) == "reproduced"
    assert table.loc[table.claim == CURL, "estimate"].iloc[0] == math.inf
    shrinking = rows.copy()
    shrinking["curl_sup_upper_bound"] = 10.0 - np.log2(shrinking["K"] + 1) + 0.01 * shrinking.seed
    assert _verdict(verdicts(shrinking), CURL) == "not reproduced"


def test_proposed_verdicts() -> None:
    rows = synthetic_rows()  # CURL 256 at the top, proposed ~3: informative
    assert _verdict(verdicts(rows), PROP) == "reproduced"
    worse = rows.copy()
    worse["proposed_sup_upper_bound_exact_upsilon"] = 1e4 + worse.seed
    assert _verdict(verdicts(worse), PROP) == "not reproduced"
    vacuous = rows.copy()
    vacuous.loc[vacuous.K == 255, "proposed_sup_upper_bound_exact_upsilon"] = math.inf
    assert _verdict(verdicts(vacuous), PROP) == "not reproduced"
    curl_inf = rows.copy()
    curl_inf.loc[curl_inf.K == 255, "curl_sup_upper_bound"] = math.inf
    assert _verdict(verdicts(curl_inf), PROP) == "reproduced"
    some_inf = rows.copy()
    some_inf.loc[(some_inf.K == 255) & (some_inf.seed == 0), "curl_sup_upper_bound"] = math.inf
    assert _verdict(verdicts(some_inf), PROP) == "reproduced"  # [finite > 0, inf]
    close = rows.copy()
    top = close.K == 255
    close.loc[top, "proposed_sup_upper_bound_exact_upsilon"] = close.loc[
        top, "curl_sup_upper_bound"
    ] + np.array([-5.0, 5.0, 0.5])
    assert _verdict(verdicts(close), PROP) == "inconclusive"


def test_lower_bound_sanity_verdicts() -> None:
    rows = synthetic_rows()
    table = verdicts(rows)
    assert _verdict(table, LOWER, "CURL bound") == "reproduced"
    assert _verdict(table, LOWER, "proposed bound") == "reproduced"
    broken = rows.copy()
    broken.loc[0, "proposed_bound"] = broken.loc[0, "info_loss"] + 1.0
    assert _verdict(verdicts(broken), LOWER, "proposed bound") == "not reproduced"


def test_verdicts_per_mode_and_data() -> None:
    a = synthetic_rows(acc_slope=2.0)
    b = synthetic_rows(acc_slope=-2.0).assign(mode="mask")
    c = synthetic_rows(acc_slope=0.0, noise=0.01).assign(
        data="latent", dataset="lat", num_classes=100
    )
    table = verdicts(pd.concat([a, b, c], ignore_index=True))
    assert list(table.columns) == [*vd.COLUMNS, "key", "data", "mode", "metric"]
    acc = table[(table.claim == ACC) & table.setting.str.contains("mean classifier")]
    got = {s.split(", K+1")[0]: v for s, v in zip(acc["setting"], acc["verdict"], strict=True)}
    assert got == {
        "toy (C=10), batch": "reproduced",
        "toy (C=10), mask": "not reproduced",
        "lat (C=100), batch": "not reproduced",
    }


def test_accuracy_verdicts_show_the_test_set_interval() -> None:
    rng = np.random.default_rng(0)
    rows = synthetic_rows(acc_slope=1.0, noise=0.0)
    m = 2000
    # per-image results whose accuracy rises with K: p = 0.6 + 0.02 log2(K+1)
    packs = [
        probes.pack_correct(torch.from_numpy(rng.random(m) < 0.6 + 0.02 * math.log2(k + 1)))
        for k in rows["K"]
    ]
    table = verdicts(rows.assign(linear_correct=packs, num_test=m))
    acc = table[table.claim == ACC].set_index("metric")["test_set"]
    assert acc["linear_accuracy"].startswith("[")  # the test set's own interval
    assert acc["centroid_accuracy"] == ""  # no per-image results for the mean classifier


@pytest.mark.parametrize(
    ("rule", "factor"),
    [
        ("linear", lambda b: b / 256),
        ("sqrt", lambda b: math.sqrt(b / 256)),
        ("none", lambda b: 1.0),
    ],
)
def test_the_learning_rate_follows_the_batch_size_by_the_stated_rule(rule, factor) -> None:
    scan = kscan.Params.from_profile(
        "smoke", num_negatives=[15, 63, 255], lr=2e-3, lr_scaling=rule, seeds=1
    )
    configs = scan.configs()
    for mode, config in configs:
        k = config.negatives_per_query
        batch = k + 1 if mode == "batch" else 256
        assert config.batch_size == batch
        assert config.lr == pytest.approx(2e-3 * factor(batch))
    # the largest K is one run in both modes
    top = [c for _, c in configs if c.negatives_per_query == 255]
    assert len(set(top)) == 1
    with pytest.raises(ValueError, match="lr_scaling"):
        kscan.Params.from_profile("smoke", lr_scaling="cubic")


def test_a_latent_scan_below_c_has_no_float64_trap_to_show() -> None:
    """Every latent K+1 below C (-p latent_num_negatives '[3, 15]' with C = 20) once ended the
    page after every run trained (IndexError): υ is exactly 0 there, nothing to compare."""
    upsilon = pd.DataFrame(
        {"data": "latent", "C": 20, "K+1": [4, 16], "exact (uniform)": [0.0, 0.0],
         "float64 (authors' notebook)": [0.0, 1e-30], "float64 / exact": [math.nan, math.nan]}
    )  # fmt: skip
    assert chapter.worst_float64_upsilon(upsilon) is None


def test_a_verdict_table_without_claims_says_so() -> None:
    html = vd.styled(vd.verdict_table([]), "The claims")._repr_html_()
    assert "touch none of the papers' claims" in html


def test_a_k_larger_than_the_data_is_named_as_written_before_anything_trains() -> None:
    from negatives import sweep

    P = chapter.Params.from_profile("smoke", num_negatives=[3, 100_000])
    with pytest.raises(ValueError, match=r"num_negatives\[1\]=100000: a batch of K \+ 1"):
        sweep.check_plan(P, "bounds", chapter.plan)


EVERY = "the bound for every K is the tightest"
GAP = "the every-K bounds contain L_sup"
EQCO = "with EqCo's rescaling K stops mattering"


def test_every_k_verdict_compares_within_the_earlier_bounds_range() -> None:
    rows = synthetic_rows()  # Bao 2 below CURL (2^x >= 4 where K >= C), N&S 3 and Ash 50
    assert _verdict(verdicts(rows), EVERY) == "reproduced"
    # CURL's number at K = 3 < C = 10 lies below Bao's bound, outside its range: not counted
    small = rows.copy()
    small.loc[small.K == 3, "curl_sup_upper_bound"] = 0.5
    assert _verdict(verdicts(small), EVERY) == "reproduced"
    # Ash et al.'s bound counts at every K: below Bao's at one K refutes the claim
    ash = rows.copy()
    ash.loc[ash.K == 63, "ash_sup_upper_bound"] = 1.0
    table = verdicts(ash)
    assert _verdict(table, EVERY) == "not reproduced"
    assert table.loc[table.claim == EVERY, "estimate"].iloc[0] == pytest.approx(-1.0, abs=0.05)


def test_the_surrogate_gap_check_is_a_check_and_fails_when_l_sup_escapes() -> None:
    rows = synthetic_rows()
    table = verdicts(rows)
    assert _verdict(table, GAP) == "reproduced"
    assert set(table.loc[table.claim.isin([GAP, "both bounds are below L_Info"]), "kind"]) == {
        "check"
    }
    above = rows.copy()
    above.loc[0, "sup_loss"] = 2.5  # above Bao's upper bound in one run
    assert _verdict(verdicts(above), GAP) == "not reproduced"


def _eqco_rows(slope: float, seeds: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame(
        [
            {"data": "image", "dataset": "toy", "num_classes": 10, "mode": "eqco-mask", "K": k,
             "seed": s, "linear_accuracy": 70 + slope * math.log2(k + 1)
             + 0.05 * rng.standard_normal()}
            for s in range(seeds)
            for k in (3, 15, 63, 255)
        ]
    )  # fmt: skip


@pytest.mark.parametrize(("slope", "expected"), [(0.0, "reproduced"), (2.0, "not reproduced")])
def test_eqco_verdict_asks_for_a_flat_slope(slope: float, expected: str) -> None:
    rows = synthetic_rows()
    table = chapter.claims({"rows": rows, "eqco": _eqco_rows(slope)})
    assert _verdict(table, EQCO) == expected


def test_eqco_slopes_pair_the_arms_by_seed() -> None:
    mask = synthetic_rows(acc_slope=1.0, noise=0.0).assign(mode="mask")
    arm = _eqco_rows(0.25)
    table = chapter.eqco_slopes(mask, arm).set_index(["mode", "arm"])
    assert table.loc[("mask", "without"), "mean"] == pytest.approx(1.0)
    assert table.loc[("mask", "with"), "mean"] == pytest.approx(0.25, abs=0.05)
    diff = table.loc[("mask", "difference")]
    assert diff["mean"] == pytest.approx(1.0 - table.loc[("mask", "with"), "mean"])
    assert diff["seeds"] == 3 and diff["low"] < diff["mean"] < diff["high"]
    # an arm whose mode the scan lacks is not compared
    assert chapter.eqco_slopes(mask.assign(mode="batch"), arm).empty


def test_the_eqco_reading_says_when_k_had_no_effect_to_remove() -> None:
    from negatives.chapters.bounds.page import eqco_reading

    flat = synthetic_rows(acc_slope=0.0, noise=0.01).assign(mode="mask", train_seconds=30.0)
    batch = synthetic_rows(acc_slope=1.0, noise=0.01).assign(train_seconds=30.0)
    rows = pd.concat([flat, batch], ignore_index=True)
    arm = _eqco_rows(0.0)
    T = {"rows": rows, "eqco_slopes": chapter.eqco_slopes(rows, arm), "labels": {"image": "toy"}}
    text = eqco_reading(T)
    assert "no effect there for the rescaling to remove" in text
    # the batch mode moves with K and has no arm: the page names the parameter and its cost
    assert "eqco_modes" in text and "9 more runs" in text and "about 4 minutes" in text
    rising = pd.concat([flat.assign(linear_accuracy=batch.linear_accuracy), batch])
    T = {**T, "rows": rising, "eqco_slopes": chapter.eqco_slopes(rising, arm)}
    assert "not shown to be flat" in eqco_reading(T)


def test_eqco_modes_are_checked_against_the_scan() -> None:
    P = chapter.Params.profiles["smoke"]
    assert P.replace(eqco_modes=[]).eqco_modes == ()
    without = [c for c, _ in chapter.plan(P.replace(eqco_modes=()))]
    every = [c for c, _ in chapter.plan(P)]
    assert _n_eqco(P) > 0 and without == every[: len(every) - _n_eqco(P)]
    with pytest.raises(ValueError, match="eqco_modes=\\['mask', 'mask'\\] names a mode twice"):
        P.replace(eqco_modes=["mask", "mask"])
    with pytest.raises(ValueError, match="'batch' is not a way this scan varies K"):
        P.replace(scan=P.scan.replace(modes=("mask",)), eqco_modes=["batch"])
    with pytest.raises(ValueError, match="eqco_modes"):
        P.replace(eqco_modes="mask")


def _n_eqco(P) -> int:
    return len(P.scan.eqco_configs(P.eqco_modes)) + len(P.scan.latent_eqco_configs(P.eqco_modes))
