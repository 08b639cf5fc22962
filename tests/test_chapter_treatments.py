"""Chapter 5 (negatives.chapters.treatments): the bench of negative treatments."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from negatives import probes
from negatives import verdicts as vd
from negatives.chapters import difficulty, kscan
from negatives.chapters import treatments as tr
from negatives.runs import RunStore


@pytest.mark.parametrize(
    "name, fields",
    [
        ("all", {"negatives": "all", "tau_plus": 0.0, "beta": 0.0}),
        ("hardest 5%", {"negatives": "band", "band_low": 0.0, "band_high": 0.05}),
        ("all but hardest 0.1%", {"negatives": "band", "band_low": 0.001, "band_high": 1.0}),
        ("no same-class", {"negatives": "no-same-class", "tau_plus": 0.0}),
        ("debiased tau+=1/C", {"negatives": "all", "tau_plus": 0.1, "beta": 0.0}),
        ("debiased tau+=2/C", {"tau_plus": 0.2}),
        ("debiased tau+=0.05", {"tau_plus": 0.05}),
        ("hard beta=1", {"tau_plus": 0.1, "beta": 1.0}),
        ("hard beta=0.5 tau+=0.5/C", {"tau_plus": 0.05, "beta": 0.5}),
        ("  hard   beta=2 ", {"tau_plus": 0.1, "beta": 2.0}),  # spaces normalised
    ],
)
def test_treatments_are_regimes_of_the_config(name: str, fields: dict) -> None:
    base = tr.Params.profiles["smoke"].base_config(("moco", "image", 512))
    config = tr.parse_treatment("t", name).apply(base, num_classes=10)
    for key, value in fields.items():
        assert getattr(config, key) == pytest.approx(value), key
    # nothing else changes: the treatments of a bench differ only in their regime
    regime = ("negatives", "band_low", "band_high", "tau_plus", "beta")
    assert config.replace(**{k: getattr(base, k) for k in regime}) == base


@pytest.mark.parametrize(
    "name, match",
    [
        ("hardest", "is not a treatment"),
        ("hardest 0%", "strictly between 0 and 100"),
        ("all but hardest 100%", "strictly between 0 and 100"),
        ("debiased tau+=1.5", r"tau\+ must be in \[0, 1\)"),
        ("debiased tau+=0", r"tau\+ must be > 0"),
        ("hard beta=0", "beta must be > 0"),
        ("oracle", "is not a treatment"),
    ],
)
def test_bad_treatments_name_the_parameter(name: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        tr.Params.from_profile("smoke", treatments=["all", name])
    assert "treatments[1]" in str(err.value)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"treatments": ["hard beta=1"]}, "must include 'all'"),
        ({"image_treatments": ["all", "all"]}, "lists a treatment twice"),
        ({"benches": [["moco", "image"]]}, r"benches\[0\].*triple"),
        ({"benches": [["byol", "image", 8]]}, r"benches\[0\]\[0\]"),
        ({"benches": [["moco", "text", 8]]}, r"benches\[0\]\[1\]"),
        ({"benches": [["simclr", "latent", 15], ["simclr", "latent", 20]]}, "must divide"),
        ({"benches": [["simclr", "latent", 15], ["simclr", "latent", 15]]}, "twice"),
        ({"seeds": 1}, "seeds=1 must be >= 2"),
        ({"latent_classes": 1}, "latent_classes"),
        ({"dataset": "latent-class"}, "dataset"),
        ({"margin": -1}, "margin"),
        ({"executor": "ray"}, "executor"),
        # a prior of 1 once resolved with C = 20: named with the treatment and the data's C
        (
            {"treatments": ["all", "debiased tau+=20/C"]},
            r"treatments: 'debiased tau\+=20/C' on latent data \(C = 20, latent_classes\): "
            r"tau_plus=1.0 must be in \[0, 1\)",
        ),
        ({"latent_classes": 2}, r"treatments: 'debiased tau\+=2/C'.*C = 2, latent_classes"),
        ({"image_treatments": ["all", "hardest 5%", "hardest 5.0%"]}, "twice: 'hardest 5%'"),
        ({"seeds": 10**6}, "seeds=1000000 must be <= 1000"),
        ({"seeds": 2.5}, "seeds=2.5 must be an integer"),
    ],
)
def test_params_bad_values_name_the_parameter(overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tr.Params.from_profile("smoke", **overrides)


def test_text_parameters_as_papermill_passes_them() -> None:
    P = tr.Params.from_profile(
        "smoke", benches='[["simclr", "latent", 7]]', treatments="all,hard beta=1", seeds="3"
    )
    assert P.benches == (("simclr", "latent", 7),)
    assert P.treatments == ("all", "hard beta=1") and P.seeds == 3


def test_simclr_benches_share_a_batch_and_k_is_a_negative_group() -> None:
    P = tr.Params.from_profile(
        "smoke", benches=[["simclr", "latent", 15], ["simclr", "latent", 63]]
    )
    small, large = (P.base_config(b) for b in P.benches)
    assert small.batch_size == large.batch_size == 64  # the largest K + 1
    assert (small.negative_groups, large.negative_groups) == (4, 1)
    assert (small.negatives_per_query, large.negatives_per_query) == (15, 63)
    assert small.replace(negative_groups=1) == large  # only K changes


def test_the_book_bench_reuses_chapter_2s_runs() -> None:
    # the image bench's reference and bands are chapter 2's runs of the same profile, so a book
    # build trains them once; a drift of either recipe would retrain them (and fail here)
    P = tr.Params.profiles["book"]
    ch2 = set(difficulty.Params.profiles["book"].plan())
    image = [r for r in P.runs() if r["kind"] == "image"]
    mine = {r["config"] for r in image if r["treatment"] in difficulty.MAIN_BANDS}
    shared = mine & ch2
    assert tr.shared_runs(P) == shared
    # chapter 2's 8 seeds of all negatives and of the hardest 5%, 5 of all but the hardest 0.1%
    assert len(shared) == 8 + 8 + 5
    # a claim judged on chapter 2's runs is judged on all of them: every seed chapter 2 trains
    # of a shared treatment (8 of all negatives and the hardest 5%, 5 of all but the hardest
    # 0.1%), so the two chapters decide it on the same runs; its own treatments get P.seeds (8)
    seeds = {}
    for r in image:
        seeds.setdefault(r["treatment"], []).append(r["seed"])
    ch2_seeds = {
        name: n
        for name, t, n in difficulty.Params.profiles["book"].main_conditions
        if t == P.moco_temperature
    }
    for name, got in seeds.items():
        expected = ch2_seeds.get(name, P.seeds)
        assert got == list(range(max(expected, P.seeds))), name
    assert seeds["hardest 5%"] == list(range(8)) and seeds["no same-class"] == list(range(8))
    # with fewer seeds of its own, a shared treatment still takes all of chapter 2's
    few: dict[str, list[int]] = {}
    for r in P.replace(seeds=3).runs():
        if r["kind"] == "image":
            few.setdefault(r["treatment"], []).append(r["seed"])
    assert few["hardest 5%"] == list(range(8)) and few["all but hardest 0.1%"] == list(range(5))
    assert few["no same-class"] == list(range(3))
    new = {r["config"] for r in P.runs()} - shared
    assert len(new) == len(P.runs()) - len(shared)  # every other run is this chapter's own
    assert not new & ch2
    # the latent data are chapter 3's
    assert (
        P.load_latent_data().fingerprint
        == kscan.Params.profiles["book"].load_latent_data().fingerprint
    )


def _per_run() -> pd.DataFrame:
    """A synthetic run table: 2 benches x 3 treatments x 3 seeds, 20 test images."""
    rng = np.random.default_rng(0)
    rows = []
    for bench in ("A", "B"):
        for t in ("all", "no same-class", "hard beta=1"):
            for seed in range(3):
                correct = rng.random(20) < 0.7
                rows.append(
                    {"bench": bench, "method": "simclr", "kind": "latent", "K": 15,
                     "num_classes": 5, "treatment": t, "seed": seed, "run_id": f"{bench}{t}{seed}",
                     "train_seconds": 1.0, "shared": False,
                     "linear_accuracy": 100 * correct.mean(), "num_test": 20,
                     "linear_correct": probes.pack_correct(__import__("torch").from_numpy(correct)),
                     "negatives_used": 15.0, "same_class_kept": 0.2 if t != "no same-class" else 0.0,
                     "same_class_weight": 0.3 if t != "no same-class" else 0.0}
                )  # fmt: skip
    return pd.DataFrame(rows)


def test_summary_pairs_by_seed_and_claims_follow_the_rule() -> None:
    per_run = _per_run()
    s = tr.summarize(per_run)
    assert len(s) == 6
    for bench in ("A", "B"):
        ref = per_run[(per_run["bench"] == bench) & (per_run["treatment"] == "all")]
        mine = per_run[(per_run["bench"] == bench) & (per_run["treatment"] == "hard beta=1")]
        diffs = mine["linear_accuracy"].to_numpy() - ref["linear_accuracy"].to_numpy()
        row = s[(s["bench"] == bench) & (s["treatment"] == "hard beta=1")].iloc[0]
        assert row["diff_mean"] == pytest.approx(diffs.mean())
        half = 4.302652729911275 * diffs.std(ddof=1) / math.sqrt(3)  # t(2) interval
        assert row["diff_high"] - row["diff_mean"] == pytest.approx(half)
        assert row["diff_test_low"] <= row["diff_mean"] <= row["diff_test_high"]
        ref_row = s[(s["bench"] == bench) & (s["treatment"] == "all")].iloc[0]
        assert ref_row["diff_mean"] == 0.0
    verdicts = tr.claims({"summary": s})
    # one row per judged treatment and bench (the reference is not judged)
    assert sorted(verdicts["claim"]) == sorted(
        ["removing same-class negatives helps", "hard-negative weights help"] * 2
    )
    for r in verdicts.itertuples():
        assert r.verdict == vd.decide(r.low, r.high, vd.above(0.0))
    syn = tr.synthesis(s)
    for r in syn.itertuples():
        g = s[(s["bench"] == r.bench) & (s["treatment"] != "all")]
        assert len(r.better) + len(r.worse) + len(r.unclear) == len(g)


def test_share_of_the_gain_over_a_random_encoder_per_bench_by_hand() -> None:
    """1 + Δ / G per bench, G = the bench's mean accuracy with all negatives − its random
    encoder's; Δ's intervals mapped with G held at its mean; none without a random encoder."""
    s = tr.add_shares(tr.summarize(_per_run()), {"A": 40.0})
    assert "share" not in tr.summarize(_per_run())  # summarize stays as it was
    a = s[s["bench"] == "A"].set_index("treatment")
    gain = a.loc["all", "mean"] - 40.0
    assert (a["gain"] == gain).all() and gain > 0
    for t in ("all", "no same-class", "hard beta=1"):
        r = a.loc[t]
        assert r["share"] == pytest.approx(1 + r["diff_mean"] / gain)
        assert r["share"] == pytest.approx((r["mean"] - 40.0) / gain)  # the same number
        for end in ("low", "high", "test_low", "test_high"):
            assert r[f"share_{end}"] == pytest.approx(1 + r[f"diff_{end}"] / gain)
    assert a.loc["all", "share"] == 1.0
    b = s[s["bench"] == "B"]
    assert b["gain"].isna().all() and b["share"].isna().all()
    # the verdict rows: the share of Δ and of the decisive interval (seeds and test set)
    v = tr.claims({"summary": s})
    for r in v.itertuples():
        if r.bench == "A":
            assert r.gain == gain
            assert (r.share, r.share_low, r.share_high) == pytest.approx(
                (1 + r.estimate / gain, 1 + r.low / gain, 1 + r.high / gain)
            )
            row = a.loc[r.treatment]
            assert r.share_ours == difficulty.format_share(
                r.share, row["share_low"], row["share_high"]
            )
        else:
            assert math.isnan(r.share) and r.share_ours == "n/a"
    # a claim of chapter 2 quoted here is the same claim, in the latest version's wording
    claims = tr.paper_claims(0.7)
    assert claims["hardest"] == difficulty.paper_claims(0.7)["hardest 5% are sufficient"]
    assert claims["all but"].name == "hardest 0.1% are unnecessary"
    assert {name for name, _ in tr.QUOTED.values()} >= set(difficulty.SOMETIMES_CLAIMS)


def test_book_verdicts_exclude_this_chapters_earlier_page(tmp_path) -> None:
    own = vd.verdict_table(
        [vd.judge(tr.paper_claims(0.7)["oracle"], 1.0, 0.5, 1.5, setting="x", seeds=3)]
    )
    table = tr.book_verdicts(tmp_path, own)  # no executed chapter there
    assert list(table["chapter"]) == ["this chapter"] and table["verdict"].iloc[0] == vd.REPRODUCED
    assert "not available" in tr.quote(table, "removing same-class negatives helps", "chapter 2")


@pytest.mark.slow
def test_the_chapter_end_to_end(tmp_path) -> None:
    # a tiny bench through the trainer, the cache and the tables
    P = tr.Params.from_profile(
        "smoke",
        benches=[["simclr", "latent", 7], ["simclr", "latent", 15]],
        treatments=["all", "no same-class", "hard beta=1"],
        latent_classes=5,
        latent_epochs=1,
        results_dir=str(tmp_path),
    )
    T = tr.run(P, root=tmp_path)
    per_run, summary = T["per_run"], T["summary"]
    assert len(per_run) == 2 * 3 * P.latent_seeds and not per_run["shared"].any()
    oracle = per_run[per_run["treatment"] == "no same-class"]
    assert (oracle["same_class_kept"] == 0).all() and (oracle["same_class_weight"] == 0).all()
    rest = per_run[per_run["treatment"] != "no same-class"]
    assert ((rest["same_class_weight"] > 0) & (rest["same_class_weight"] < 1)).all()
    assert (rest["negatives_used"] == rest["K"]).all()  # the debiased loss keeps every negative
    assert (oracle["negatives_used"] < oracle["K"]).all()
    assert len(summary) == 6 and len(T["verdicts"]) == 4
    numbers = tr.numbers(P, T)
    assert numbers["treatments_num_runs"] == len(per_run)
    assert numbers["treatments_new_runs"] == len(per_run)
    assert "not available" in numbers["treatments_quote_hard5"]
    # every run is reused on a second pass: nothing trains, the same tables come back
    again = tr.run(P, RunStore(tmp_path), root=tmp_path)
    pd.testing.assert_frame_equal(again["summary"], summary)
