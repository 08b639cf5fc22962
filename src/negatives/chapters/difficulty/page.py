"""Chapter 2's page: every number it quotes (:func:`numbers`) and the runs behind each figure."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from negatives import verdicts as vd
from negatives.chapters.difficulty.claims import SOMETIMES_CLAIMS, at_least_one, format_share
from negatives.chapters.difficulty.design import ALL_MAIN, MARGIN, Params
from negatives.epochs import RANK_LOG_EVERY, RANK_LOG_QUERIES
from negatives.filters import band_fraction_kept
from negatives.hardness import FRACTIONS
from negatives.regimes import REFERENCE


def numbers(P: Params, T: dict[str, Any]) -> dict[str, Any]:
    """Every number the page quotes, by its glue name."""
    out: dict[str, Any] = {}
    put = out.__setitem__
    data, probe_data, per_run, summary = T["data"], T["probe_data"], T["per_run"], T["summary"]
    baselines, base, rank, same = T["baselines"], T["base_rate"], T["rank"], T["same_class"]
    consistency, cons_summary = T["consistency"], T["consistency_summary"]
    verdict_table = T["verdicts"]
    T_LOW, T_HIGH = min(P.temperatures), max(P.temperatures)
    main = summary[summary["group"] == "main"].set_index(["condition", "temperature"])
    NOT_RUN = "not trained in this run"
    NO_GAIN = "n/a (no gain over the random encoder)"

    def delta_text(condition, t):
        if (condition, t) not in main.index:
            return NOT_RUN
        r = main.loc[(condition, t)]
        return vd.format_interval(r["diff_mean"], r["diff_low"], r["diff_high"])

    def test_text(condition, t):
        if (condition, t) not in main.index or "diff_test_low" not in main.columns:
            return NOT_RUN
        r = main.loc[(condition, t)]
        return vd.format_interval(
            r["diff_mean"], r["diff_test_low"], r["diff_test_high"], with_estimate=False
        )

    def share_text(condition, t):
        # the share of the gain over the random encoder kept, its interval over seeds mapped
        if (condition, t) not in main.index or "share" not in main.columns:
            return NOT_RUN
        r = main.loc[(condition, t)]
        if not r["gain"] > 0:  # the share of nothing
            return NO_GAIN
        return format_share(r["share"], r["share_low"], r["share_high"])

    n_train, n_test = data.train_images.shape[0], probe_data.test_images.shape[0]
    steps = P.epochs * (n_train // P.batch_size)
    put("difficulty_dataset", data.name)
    put("difficulty_train_size", int(n_train))
    put("difficulty_probe_train_size", int(probe_data.train_images.shape[0]))
    put("difficulty_test_size", int(n_test))
    put("difficulty_classes", int(data.num_classes))
    put("difficulty_rank_log_queries", RANK_LOG_QUERIES)
    put("difficulty_rank_log_every", RANK_LOG_EVERY)
    put("difficulty_arch", P.arch)
    put("difficulty_width", P.width)
    put("difficulty_grid", P.feature_grid)
    put("difficulty_min_scale", P.min_scale)
    put("difficulty_epochs", P.epochs)
    put("difficulty_steps", int(steps))
    put("difficulty_key_lag", 100 * P.momentum**steps)
    put("difficulty_batch", P.batch_size)
    groups = P.base_config().batchnorm_groups
    put("difficulty_bn_groups", groups)
    put("difficulty_bn_group_size", P.batch_size // groups)
    put("difficulty_queue", P.queue_size)
    put("difficulty_queue_share", 100 * P.queue_size / n_train)
    by_count: dict[int, list[str]] = {}
    for c, t, n in P.main_conditions:
        by_count.setdefault(n, []).append(f"{c} at T = {t:g}")
    put(
        "difficulty_seeds",
        " and ".join(
            f"{n} seeds ({', '.join(v)})" for n, v in sorted(by_count.items(), reverse=True)
        )
        if len(by_count) > 1
        else f"{next(iter(by_count))} seeds",
    )
    put("difficulty_seeds_range", "–".join(str(n) for n in sorted({min(by_count), max(by_count)})))
    put("difficulty_extra_seeds", P.seeds if P.extra_seeds is None else P.extra_seeds)
    extra_n = P.seeds if P.extra_seeds is None else P.extra_seeds
    put(
        "difficulty_extra_text",
        f"{extra_n} seeds each"
        if extra_n
        else "not trained (extra_seeds = 0: they decide no claim)",
    )
    put("difficulty_temperatures", ", ".join(f"{t:g}" for t in P.temperatures))
    put("difficulty_fine_t", P.fine_temperature)
    put("difficulty_num_runs", len(per_run))
    put("difficulty_unique_runs", per_run["run_id"].nunique())
    unique = per_run.drop_duplicates("run_id")
    put("difficulty_train_minutes", float(unique["train_seconds"].sum() / 60))
    q = P.queue_size
    put("difficulty_hard5_count", round(band_fraction_kept(0.0, 0.05, q) * q))
    put("difficulty_removed01", round(band_fraction_kept(0.0, 0.001, q) * q))
    put("difficulty_low_t", T_LOW)
    put("difficulty_high_t", T_HIGH)
    for role, t in (("low", T_LOW), ("high", T_HIGH)):
        put(f"difficulty_all_{role}", float(main.loc[("all", t), "mean"]))
        for key, cond in (
            ("hard5", "hardest 5%"),
            ("easy95", "easiest 95%"),
            ("no01", "all but hardest 0.1%"),
        ):
            put(f"difficulty_{key}_{role}", delta_text(cond, t))
            put(f"difficulty_{key}_{role}_test", test_text(cond, t))
            put(f"difficulty_{key}_{role}_share", share_text(cond, t))
        put(
            f"difficulty_gain_{role}",
            float(main.loc[("all", t), "gain"]) if "gain" in main.columns else math.nan,
        )
    put("difficulty_pixels", float(baselines["linear_accuracy"].iloc[0]))
    put("difficulty_random", float(baselines["linear_accuracy"].iloc[1]))
    all_high = float(main.loc[("all", T_HIGH), "mean"])
    put("difficulty_gain_pixels", all_high - float(baselines["linear_accuracy"].iloc[0]))
    put("difficulty_gain_random", all_high - float(baselines["linear_accuracy"].iloc[1]))
    put("difficulty_se", float(summary["se"].mean()))
    widths = (main["diff_high"] - main["diff_low"]).drop(index="all", level=0) / 2
    put("difficulty_max_half_width", float(widths.max()))
    test_widths = (main["diff_test_high"] - main["diff_test_low"]).drop(index="all", level=0) / 2
    put("difficulty_max_test_half_width", float(test_widths.max()))
    put("difficulty_margin", MARGIN)

    # what the paper's design has that this run does not
    trained = {(c, t) for c, t, _ in P.main_conditions}
    missing = [f"{c} at T = {t:g}" for c, t in ALL_MAIN if (c, t) not in trained]
    put(
        "difficulty_cut",
        "every condition of the paper is trained at both temperatures"
        if not missing
        else "not trained: "
        + "; ".join(missing)
        + f" (their claims are not about the temperature; {len(missing) * P.seeds} more runs)",
    )
    put("difficulty_momentum", P.momentum)

    # same-class analysis (at the highest temperature)
    same_t = same.set_index("temperature").loc[T_HIGH]
    put("difficulty_base_rate", 100 * base)
    put("difficulty_hard_rate", 100 * float(same_t["hard_rate"]))
    put("difficulty_rest_rate", 100 * float(same_t["rest_rate"]))
    put("difficulty_hard_ratio", float(same_t["ratio"]))
    first_bin = rank[
        (rank["temperature"] == T_HIGH)
        & (rank["epoch"] == rank["epoch"].max())
        & (rank["bin"] == 0)
    ]
    put("difficulty_bin0_rate", 100 * float(first_bin["rate"].mean()))
    hard5_high = ("hardest 5%", T_HIGH) in main.index
    put(
        "difficulty_hard5_kept_same",
        100 * float(main.loc[("hardest 5%", T_HIGH), "same_class_kept"])
        if hard5_high
        else math.nan,
    )
    others = summary[summary["group"].isin(["oracle", "rescaled"])].set_index("group")
    for g in ("oracle", "rescaled"):
        if g in others.index:
            r = others.loc[g]
            text = vd.format_interval(r["diff_mean"], r["diff_low"], r["diff_high"])
        else:
            text = NOT_RUN
        put(f"difficulty_{g}", text)
    put("difficulty_rescaled_low", 100 / P.num_classes)

    # consistency (at the highest temperature)
    cons_t = cons_summary.set_index("temperature").loc[T_HIGH]
    example = consistency[consistency["temperature"] == T_HIGH].iloc[0]
    put("difficulty_cons_keys", P.consistency_keys)
    put("difficulty_cons_queries", P.consistency_queries)
    put("difficulty_cons_top", int(example["top_count"]))
    put("difficulty_cons_expected", float(example["expected"]))
    put(
        "difficulty_cons_ratio",
        vd.format_interval(
            cons_t["variance_ratio_mean"],
            cons_t["variance_ratio_low"],
            cons_t["variance_ratio_high"],
        ),
    )
    for k in FRACTIONS:
        put(f"difficulty_cons_{k}", 100 * float(cons_t[k]))

    # verdicts
    out.update(vd.count_numbers("difficulty", verdict_table))
    # a "sometimes" claim over its settings: it holds where at least one setting reproduces it
    for name, key in zip(SOMETIMES_CLAIMS, ("detrimental",), strict=True):
        rows = verdict_table[verdict_table["claim"] == name]
        put(
            f"difficulty_sometimes_{key}",
            f"{at_least_one(verdict_table, name)} over the settings tested ("
            + "; ".join(f"{r.setting}: {r.verdict}" for r in rows.itertuples())
            + ")"
            if len(rows)
            else NOT_RUN,
        )
    # what would decide each inconclusive claim: seeds at the same mean and spread over seeds
    run_minutes = float(unique["train_seconds"].mean()) / 60
    needs = []
    for r in verdict_table[verdict_table["verdict"] == vd.INCONCLUSIVE].itertuples():
        if r.to_decide is None or r.to_decide != r.to_decide:
            why = r.undecided or "more than 1,000 seeds"
            needs.append(f"{r.claim} at {r.setting}: no number of seeds ({why})")
            continue
        more = int(r.to_decide) - int(r.seeds)
        minutes = round(2 * more * run_minutes)
        took = "under a minute" if minutes < 1 else f"about {minutes} minute" + "s" * (minutes > 1)
        needs.append(
            f"{r.claim} at {r.setting}: about {int(r.to_decide)} seeds ({more} more for the condition "
            f"and for its reference: {2 * more} runs, {took} of training on this machine)"
        )
    put("difficulty_to_decide", "; ".join(needs) if needs else "none is inconclusive in this run")
    out["difficulty_verdicts"] = vd.records(T["verdicts"])  # for the summary on the first page
    out["difficulty_rerun"] = P.papermill_command("difficulty")
    out["difficulty_figure_runs"] = json.dumps(figure_runs(P, T))
    return out


def figure_runs(P: Params, T: dict[str, Any]) -> dict[str, list[str]]:
    """The run ids behind each figure of the page, by the figure's name (the reproducibility
    page lists them: a figure traces to its runs in the cache)."""
    per_run = T["per_run"]
    main = per_run[per_run["group"] == "main"]
    ref = main[main["condition"] == REFERENCE]
    at_fine = per_run[
        (per_run["temperature"] == P.fine_temperature)
        & per_run["group"].isin(["main", "fine", "rescaled"])
    ]
    consistency = T["consistency"]
    shown = consistency[consistency["temperature"] == max(P.temperatures)].head(1)
    one = ref[ref["temperature"].isin(shown["temperature"]) & ref["seed"].isin(shown["seed"])]

    def ids(df: pd.DataFrame) -> list[str]:
        return sorted(set(df["run_id"]))

    return {
        "fig-difficulty-main": ids(main),
        "fig-difficulty-bands": ids(at_fine),
        "fig-difficulty-same-class": ids(ref),
        "fig-difficulty-consistency": ids(one),
    }
