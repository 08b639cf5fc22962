from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from negatives import hardness
from negatives import verdicts as vd
from negatives.chapters import difficulty as D
from negatives.runs import RunStore
from negatives.train import RANK_BIN_EDGES

# -- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(profile="huge"), "profile"),
        (dict(main_conditions=[["all", -0.1]]), "main_conditions"),
        (dict(main_conditions=[]), "main_conditions"),
        (dict(main_conditions=[["all", 0.2], ["all", 0.2]]), "main_conditions"),
        (dict(main_conditions="hot"), "main_conditions"),
        (dict(main_conditions=[["hardest 5%", 0.2]]), "main_conditions"),
        (dict(main_conditions=[["best", 0.2]]), "main_conditions"),
        (dict(main_conditions=[["all"]]), "main_conditions"),
        (dict(main_conditions=[["all", 0.2, 0]]), r"main_conditions\[0\]\[2\]"),
        (dict(main_conditions=[["all", 0.2, 2], ["hardest 5%", 0.2, 3]]), "at least as many"),
        (dict(extra_seeds=-1), "extra_seeds"),
        (dict(probe_train_size=0), "probe_train_size"),
        (dict(bn_groups=0), "bn_groups"),
        (dict(fine_bands=[[0.5, 0.1]]), "fine_bands"),
        (dict(fine_bands=[[0.0, 1.5]]), "fine_bands"),
        (dict(fine_bands=[[0.1]]), "fine_bands"),
        (dict(seeds=0), "seeds"),
        (dict(fine_temperature=0.5), "fine_temperature"),
        (dict(dataset="latent-class"), "dataset"),
        (dict(dataset="mnist"), "dataset"),
        (dict(lr=-1.0), "lr"),
        (dict(train_size=300), "consistency_keys"),
        (dict(consistency_top_fraction=1.0), "consistency_top_fraction"),
        (dict(epoch=3), "unknown parameter"),
    ],
)
def test_bad_parameters_name_the_parameter(kwargs, name) -> None:
    profile = kwargs.pop("profile", "smoke")
    with pytest.raises(ValueError, match=name):
        D.Params.from_profile(profile, **kwargs)


def test_none_means_profile_default_and_fine_temperature_defaults_to_highest() -> None:
    P = D.Params.from_profile("smoke", epochs=None, main_conditions=[["all", 0.5], ["all", 0.1]])
    assert P.epochs == D.Params.profiles["smoke"].epochs
    assert P.temperatures == (0.5, 0.1)
    assert P.fine_temperature == 0.5
    # a list given as text, as papermill -p passes it
    Q = D.Params.from_profile("smoke", main_conditions='[["all", 0.2]]')
    assert Q.main_conditions == (("all", 0.2, Q.seeds),)
    assert D.Params.from_profile("smoke", results_dir=None).results_dir == "results"


def test_a_condition_can_have_its_own_seeds() -> None:
    P = D.Params.from_profile(
        "smoke",
        seeds=2,
        main_conditions=[["all", 0.2, 4], ["hardest 5%", 0.2, 4], ["easiest 95%", 0.2]],
    )
    main = [c for c in P.conditions() if c["group"] == "main"]
    seeds = {name: sorted(c["seed"] for c in main if c["condition"] == name) for name in
             ("all", "hardest 5%", "easiest 95%")}  # fmt: skip
    assert seeds == {"all": [0, 1, 2, 3], "hardest 5%": [0, 1, 2, 3], "easiest 95%": [0, 1]}
    # the book's design: more seeds where the claims at T = 0.2 need them
    book = D.Params.from_profile("book")
    assert {(c, t): n for c, t, n in book.main_conditions}[("hardest 5%", 0.2)] > book.seeds


def test_conditions_counts_and_regimes() -> None:
    P = D.Params.from_profile("smoke", seeds=3)
    assert P.temperatures == (0.07, 0.2)
    conds = P.conditions()
    n_fine = len(P.fine_bands)
    assert len(conds) == 3 * (4 * 2 + n_fine + 1 + 1)
    groups = pd.Series([c["group"] for c in conds]).value_counts()
    assert groups["main"] == 3 * 4 * 2 and groups["fine"] == 3 * n_fine
    assert groups["oracle"] == 3 and groups["rescaled"] == 3
    for c in conds:
        cfg = c["config"]
        assert (
            cfg.method == "moco" and cfg.temperature == c["temperature"] and cfg.seed == c["seed"]
        )
        if c["condition"] == "all":
            assert cfg.negatives == "all" and c["band"] == (0.0, 1.0)
        elif c["group"] == "oracle":
            assert cfg.negatives == "no-same-class" and c["band"] is None
        else:
            assert cfg.negatives == "band"
            assert (cfg.band_low, cfg.band_high) == c["band"]
        if c["group"] != "main":
            assert c["temperature"] == P.fine_temperature
    hard = [c for c in conds if c["condition"] == "hardest 5%"]
    assert {(c["config"].band_low, c["config"].band_high) for c in hard} == {(0.0, 0.05)}
    rescaled = [c for c in conds if c["group"] == "rescaled"]
    assert all(c["config"].band_low == pytest.approx(1 / 10) for c in rescaled)
    # every (group, condition, temperature, seed) is one distinct run, except that a fine band
    # equal to a main band would share its run: none does here
    assert len({c["config"] for c in conds}) == len(conds)
    # fewer seeds for our own analyses, and none at all
    fewer = D.Params.from_profile("smoke", seeds=3, extra_seeds=1).conditions()
    assert len(fewer) == 3 * 4 * 2 + (n_fine + 2)
    assert len(D.Params.from_profile("smoke", extra_seeds=0).conditions()) == 2 * 8
    # a reduced design: the 0.1% conditions only at the low temperature
    some = D.Params.from_profile(
        "smoke",
        main_conditions=[
            ["all", 0.2],
            ["hardest 5%", 0.2],
            ["all", 0.07],
            ["all but hardest 0.1%", 0.07],
        ],
        extra_seeds=0,
        seeds=1,
    )
    assert [(c["condition"], c["temperature"]) for c in some.conditions()] == [
        ("all", 0.2), ("hardest 5%", 0.2), ("all", 0.07), ("all but hardest 0.1%", 0.07)
    ]  # fmt: skip


# -- summary and verdicts --------------------------------------------------------------------


def _runs_table(values: dict[tuple[str, float], list[float]]) -> pd.DataFrame:
    rows = []
    for (cond, t), accs in values.items():
        band = D.MAIN_BANDS[cond]
        for seed, a in enumerate(accs):
            rows.append(
                {
                    "group": "main",
                    "condition": cond,
                    "band_low": band[0],
                    "band_high": band[1],
                    "temperature": t,
                    "seed": seed,
                    "linear_accuracy": a,
                }
            )
    return pd.DataFrame(rows)


def test_summary_pairs_differences_by_seed() -> None:
    df = _runs_table({("all", 0.2): [80.0, 81.0, 83.0], ("hardest 5%", 0.2): [79.0, 81.5, 80.0]})
    s = D.summarize_conditions(df).set_index("condition")
    diffs = np.array([79.0 - 80.0, 81.5 - 81.0, 80.0 - 83.0])
    half = scipy_stats.t.ppf(0.975, 2) * diffs.std(ddof=1) / math.sqrt(3)
    row = s.loc["hardest 5%"]
    assert row["diff_mean"] == pytest.approx(diffs.mean())
    assert row["diff_low"] == pytest.approx(diffs.mean() - half)
    assert row["diff_high"] == pytest.approx(diffs.mean() + half)
    assert row["mean"] == pytest.approx(np.mean([79.0, 81.5, 80.0]))
    # the paired interval is narrower than the unpaired spread would suggest here
    assert s.loc["all", "diff_mean"] == 0.0 and s.loc["all", "n"] == 3


def _summary(rows: list[tuple[str, float, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "group": "main",
                "condition": c,
                "temperature": t,
                "diff_mean": m,
                "diff_low": lo,
                "diff_high": hi,
            }
            for c, t, m, lo, hi in rows
        ]
    )


def test_verdicts_on_synthetic_summaries() -> None:
    summary = _summary(
        [
            ("all", 0.07, 0.0, 0.0, 0.0),
            ("hardest 5%", 0.07, -0.2, -0.5, 0.1),  # interval above -0.7: reproduced
            ("easiest 95%", 0.07, -0.1, -0.4, 0.2),  # interval above -0.7: claim fails
            ("all but hardest 0.1%", 0.07, -0.5, -1.4, 0.4),  # straddles -0.7: inconclusive
            ("all", 0.2, 0.0, 0.0, 0.0),
            ("hardest 5%", 0.2, -3.0, -4.0, -2.0),  # clearly below: not reproduced
            ("easiest 95%", 0.2, -5.0, -6.0, -4.0),  # reproduced
            ("all but hardest 0.1%", 0.2, 0.1, math.nan, math.nan),  # one seed: inconclusive
        ]
    )
    same = pd.DataFrame(
        [{"temperature": 0.2, "excess_mean": 0.2, "excess_low": 0.1, "excess_high": 0.3}]
    )
    cons = pd.DataFrame(
        [
            {
                "temperature": 0.2,
                "variance_ratio_mean": 1.01,
                "variance_ratio_low": 0.9,
                "variance_ratio_high": 1.1,
            }
        ]
    )
    v = D.claims({"summary": summary, "same_class": same, "consistency_summary": cons})
    got = {(r["claim"], r["setting"]): r["verdict"] for _, r in v.iterrows()}
    assert got[("hardest 5% are sufficient", "T = 0.07")] == vd.REPRODUCED
    assert got[("hardest 5% are sufficient", "T = 0.2")] == vd.NOT_REPRODUCED
    assert got[("easiest 95% are insufficient", "T = 0.07")] == vd.NOT_REPRODUCED
    assert got[("easiest 95% are insufficient", "T = 0.2")] == vd.REPRODUCED
    assert got[("hardest 0.1% are unnecessary", "T = 0.07")] == vd.INCONCLUSIVE
    assert got[("hardest 0.1% are unnecessary", "T = 0.2")] == vd.INCONCLUSIVE
    # "sometimes detrimental" (removing them helps, Δ > 0) is judged at every temperature: the
    # latest wording names no setting
    helps = v[v["claim"] == "hardest 0.1% are sometimes detrimental"]
    assert list(helps["setting"]) == ["T = 0.07", "T = 0.2"]
    assert (helps["verdict"] == vd.INCONCLUSIVE).all()
    assert helps["rule"].iloc[0] == "reproduced if the interval is > 0 pts"
    assert got[("hard negatives are more often same-class", "T = 0.2")] == vd.REPRODUCED
    assert got[("some negatives are consistently hard", "T = 0.2")] == vd.INCONCLUSIVE
    assert list(v.columns) == [*vd.COLUMNS, "key", "temperature", *D.SHARE_COLUMNS]
    assert (v["key"] == v["claim"]).all()
    # without the baselines' gain, no share; the rows that are no Δ never have one
    assert v["share"].isna().all() and set(v["share_ours"]) <= {"n/a", ""}
    # a larger margin turns the hardest-5% case at T = 0.2 around
    v9 = D.claims({"summary": summary}, margin=5.0)
    row = v9[(v9["claim"] == "hardest 5% are sufficient") & (v9["setting"] == "T = 0.2")]
    assert row["verdict"].iloc[0] == vd.REPRODUCED
    assert "within 5 points" in row["statement"].iloc[0]  # the statement names the margin read
    # a condition that was not trained gives no row
    fewer = D.claims({"summary": summary[summary["condition"] != "easiest 95%"]})
    assert not fewer["claim"].str.startswith("easiest").any()


def test_share_of_the_gain_over_a_random_encoder_by_hand() -> None:
    """1 + Δ / G, G = all negatives' mean accuracy − the random encoder's at that temperature;
    the intervals are Δ's, mapped with G held at its mean."""
    from negatives.stats import share_of_gain

    assert share_of_gain(-3.0, 30.0) == pytest.approx(0.9)
    assert math.isnan(share_of_gain(1.0, 0.0)) and math.isnan(share_of_gain(1.0, -5.0))
    assert math.isnan(share_of_gain(1.0, math.nan)) and math.isnan(share_of_gain(math.nan, 2.0))
    got = share_of_gain(np.array([-3.0, 0.0, 1.5]), np.array([30.0, 30.0, -1.0]))
    np.testing.assert_allclose(got, [0.9, 1.0, math.nan])

    rows = [  # condition, T, mean accuracy, Δ, Δ over seeds, Δ over the test set
        ("all", 0.2, 80.0, 0.0, (0.0, 0.0), (0.0, 0.0)),
        ("hardest 5%", 0.2, 77.0, -3.0, (-6.0, 0.0), (-4.5, -1.5)),
        ("all", 0.07, 60.0, 0.0, (0.0, 0.0), (0.0, 0.0)),
        ("all but hardest 0.1%", 0.07, 61.0, 1.0, (-1.0, 3.0), (0.0, 2.0)),
        ("all", 0.5, 40.0, 0.0, (0.0, 0.0), (0.0, 0.0)),  # below the random encoder
        ("hardest 5%", 0.5, 41.0, 1.0, (0.0, 2.0), (0.5, 1.5)),
    ]
    summary = pd.DataFrame(
        [{"group": "main", "condition": c, "temperature": t, "n": 3, "mean": m, "diff_mean": d,
          "diff_low": lo, "diff_high": hi, "diff_test_low": tl, "diff_test_high": th}
         for c, t, m, d, (lo, hi), (tl, th) in rows]
    )  # fmt: skip
    s = D.add_shares(summary, random_accuracy=50.0).set_index(["condition", "temperature"])
    hard = s.loc[("hardest 5%", 0.2)]  # G = 80 - 50 = 30
    assert hard["gain"] == pytest.approx(30.0)
    assert (hard["share"], hard["share_low"], hard["share_high"]) == pytest.approx(
        (1 - 3 / 30, 1 - 6 / 30, 1.0)
    )
    assert (hard["share_test_low"], hard["share_test_high"]) == pytest.approx((0.85, 0.95))
    no01 = s.loc[("all but hardest 0.1%", 0.07)]  # G = 60 - 50 = 10
    assert (no01["share"], no01["share_low"], no01["share_high"]) == pytest.approx((1.1, 0.9, 1.3))
    assert s.loc[("all", 0.07), "share"] == 1.0
    assert s.loc[("hardest 5%", 0.5), "gain"] == -10.0 and math.isnan(
        s.loc[("hardest 5%", 0.5), "share"]
    )
    # (acc_condition − acc_random) / (acc_all − acc_random), the same number
    assert hard["share"] == pytest.approx((77.0 - 50.0) / (80.0 - 50.0))

    # the verdict rows carry it: the row's decisive interval (seeds and test set) mapped
    v = D.claims({"summary": s.reset_index()}).set_index(["claim", "setting"])
    row = v.loc[("hardest 5% are sufficient", "T = 0.2")]
    both_low = -3.0 - math.hypot(-3.0 + 6.0, -3.0 + 4.5)
    both_high = -3.0 + math.hypot(0.0 + 3.0, -1.5 + 3.0)
    assert (row["low"], row["high"]) == pytest.approx((both_low, both_high))
    assert row["gain"] == 30.0 and row["share"] == pytest.approx(0.9)
    assert (row["share_low"], row["share_high"]) == pytest.approx(
        (1 + both_low / 30, 1 + both_high / 30)
    )
    assert row["share_ours"] == "90.0% [80.0%, 100.0%]"
    assert row["share_both"] == D.format_share(0.9, 1 + both_low / 30, 1 + both_high / 30)
    assert D.format_share(0.9, 1 + both_low / 30, 1 + both_high / 30) == "90.0% [78.8%, 101.2%]"
    assert v.loc[("hardest 5% are sufficient", "T = 0.5"), "share_ours"] == "n/a"
    for name in ("hardest 0.1% are unnecessary", *D.SOMETIMES_CLAIMS):  # one Δ, one share
        assert v.loc[(name, "T = 0.07"), "share_ours"] == "110.0% [90.0%, 130.0%]"
    assert D.format_share(-0.012) == "−1.2% (no interval)" and D.format_share(math.nan) == "n/a"
    assert D.format_share(1.0, 1.0, 1.0) == "100.0%"


def test_a_sometimes_claim_holds_where_one_setting_reproduces_it() -> None:
    def table(*verdicts: str) -> pd.DataFrame:
        return pd.DataFrame(
            {"claim": ["c"] * len(verdicts) + ["d"], "verdict": [*verdicts, vd.REPRODUCED]}
        )

    R, N, U = vd.REPRODUCED, vd.NOT_REPRODUCED, vd.INCONCLUSIVE
    assert D.at_least_one(table(N, R), "c") == R
    assert D.at_least_one(table(U, R), "c") == R
    assert D.at_least_one(table(N, N), "c") == N
    assert D.at_least_one(table(N, U), "c") == U
    assert D.at_least_one(table(), "c") == U  # no setting tested
    claims = D.paper_claims(0.7)
    assert D.SOMETIMES_CLAIMS == ("hardest 0.1% are sometimes detrimental",)
    assert '"sometimes detrimental"' in claims[D.SOMETIMES_CLAIMS[0]].statement
    assert claims[D.SOMETIMES_CLAIMS[0]].region == vd.above(0.0)
    # "unnecessary" is the abstract's without "sometimes": judged in every setting
    assert claims["hardest 0.1% are unnecessary"].region == vd.above(-0.7)
    assert '"were unnecessary"' in claims["hardest 0.1% are unnecessary"].statement
    assert "nearly full accuracy" in claims["hardest 5% are sufficient"].statement
    # the margin that reads "nearly full" is named in the statement; no temperature is
    assert "within 0.7 points" in claims["hardest 5% are sufficient"].statement
    assert not any("0.07" in c.statement for c in claims.values())


# -- a tiny end-to-end run ---------------------------------------------------------------------


def test_run_conditions_end_to_end(tmp_path, one_thread) -> None:
    P = D.Params.from_profile(
        "smoke",
        train_size=256,
        test_size=100,
        epochs=1,
        batch_size=64,
        queue_size=128,
        width=8,
        main_conditions=[[c, 0.2] for c in D.MAIN_BANDS],
        seeds=1,
        fine_bands=[],
        consistency_keys=50,
        consistency_queries=100,
        device="cpu",
        results_dir=str(tmp_path),
    )
    store = RunStore(tmp_path)
    data = P.load_data()
    runs_, df = D.run_conditions(P, store, data, probe_data=data, progress=False)
    assert len(runs_) == len(df) == 4 + 1 + 1
    assert df["linear_accuracy"].between(0, 100).all()
    oracle = df[df["group"] == "oracle"]
    assert (oracle["same_class_kept"] == 0).all()
    hard = df[df["condition"] == "hardest 5%"]
    assert hard["negatives_used"].iloc[0] <= math.ceil(0.05 * 128)
    assert (df["num_test"] == 100).all() and df["linear_correct"].map(type).eq(str).all()
    summary = D.summarize_conditions(df)
    assert len(summary) == 6
    assert summary["se"].between(0, 10).all()
    ref = summary.set_index("condition").loc["all"]
    assert ref["diff_test_low"] == ref["diff_test_high"] == 0.0  # all vs itself
    rank = hardness.same_class_by_rank(runs_, df, group="main", condition=D.REFERENCE)
    assert len(rank) == len(RANK_BIN_EDGES) - 1  # one run, one epoch
    cons = D.run_consistency(P, runs_, df, data)
    assert len(cons) == 1 and len(cons["counts"].iloc[0]) == 50
    v = D.claims(
        {
            "summary": summary,
            "same_class": hardness.same_class_summary(rank, hardness.base_rate(data.train_labels)),
            "consistency_summary": hardness.consistency_summary(cons),
        }
    )
    assert (v["verdict"] == vd.INCONCLUSIVE).all()  # one seed gives no interval
    # the second call reuses every cached run and evaluation
    _, df2 = D.run_conditions(P, store, data, probe_data=data, progress=False)
    pd.testing.assert_frame_equal(df, df2)
    base = D.run_baselines(P, data, store)
    assert len(base) == 2 and base["linear_accuracy"].between(0, 100).all()


def test_sizes_only_the_data_tell_are_refused_before_anything_trains(tmp_path, caplog) -> None:
    """negatives.sweep.check_plan, the first thing a chapter's run() does: the probes' images
    against the classes, the consistency test's keys and queries against the training images,
    each named; a queue larger than the data is warned of, on the page, once."""
    from negatives import sweep

    def refused(**overrides: object) -> str:
        P = D.Params.from_profile("smoke", results_dir=str(tmp_path), **overrides)
        with pytest.raises(ValueError) as err:
            D.run(P, progress=False)
        assert not list(tmp_path.rglob("result.json"))  # nothing trained
        return str(err.value)

    with caplog.at_level("WARNING", logger="negatives"):
        planned = sweep.check_plan(
            D.Params.from_profile(
                "smoke", train_size=300, consistency_keys=100, consistency_queries=50
            ),
            "difficulty",
            D.plan,
        )
    warned = [r.getMessage() for r in caplog.records if "queue_size=512" in r.getMessage()]
    assert len(planned) > 1 and len(warned) == 1 and "171% of the 300 training" in warned[0]
    assert "probe_train_size=5: the probes' 5 training images hold 5 of the 10" in refused(
        probe_train_size=5
    )
    assert "consistency_keys + consistency_queries = 5400 exceeds the 1437" in refused(
        consistency_keys=5000
    )
    assert len(sweep.check_plan(D.Params.from_profile("smoke"), "difficulty", D.plan)) > 0


def test_training_over_the_time_limit_is_refused_with_its_estimate(tmp_path, monkeypatch) -> None:
    """The runs a chapter would train here are timed before the first trains (a few steps of
    each kind): over NEGATIVES_MAX_HOURS the chapter stops, saying how long it would take."""
    from negatives import sweep
    from negatives.runs import RunStore

    P = D.Params.from_profile("smoke", results_dir=str(tmp_path))
    count, seconds = sweep.estimate_training(D.plan(P), RunStore(tmp_path))
    assert count == len(D.plan(P)) and 0 < seconds < 3600
    monkeypatch.setenv(sweep.MAX_HOURS_ENV, "1e-6")
    with pytest.raises(ValueError, match=rf"ask for {count} runs not yet in .* hours of training"):
        D.run(P, progress=False)
    assert not list(tmp_path.rglob("result.json"))
