"""Chapter 3's page: every number it quotes (:func:`numbers`) and the runs behind each figure."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from negatives import stats
from negatives import verdicts as vd
from negatives.chapters import kscan
from negatives.chapters.bounds.analysis import worst_float64_upsilon
from negatives.chapters.bounds.design import MIN_ACCURACY_SLOPE, Params


def numbers(P: Params, T: dict[str, Any]) -> dict[str, Any]:
    """Every number the page quotes, by its glue name."""
    rows, summary, upsilon, verdict_rows = T["rows"], T["summary"], T["upsilon"], T["verdicts"]
    kinds, label = T["kinds"], T["labels"]
    modes = kscan.MODE_NAMES
    out: dict[str, Any] = {
        "bounds_runs": len(rows),
        "bounds_seeds": int(rows["seed"].nunique()),
        "bounds_t": float(P.scan.temperature),
        "bounds_passes": P.num_passes,
        "bounds_augmentations": P.num_augmentations,
        "bounds_min_slope": MIN_ACCURACY_SLOPE,
        "bounds_lr_scaling": P.scan.lr_scaling,
    }
    for kind in kinds:
        g = rows[rows["data"] == kind]
        out[f"bounds_{kind}_label"] = label[kind]
        out[f"bounds_{kind}_k1_range"] = f"{g.K.min() + 1} to {g.K.max() + 1}"
        out[f"bounds_{kind}_modes"] = " and ".join(modes[m] for m in sorted(set(g["mode"])))
    out["bounds_latent_c"] = int(rows.loc[rows["data"] == "latent", "num_classes"].iloc[0])

    # what the image encoders learn: the largest K's probe (first mode) against the baselines
    out.update(learned_numbers("bounds", rows, T.get("baselines")))
    out["bounds_image_epochs"] = P.scan.epochs

    acc = verdict_rows[verdict_rows["key"] == "accuracy"]
    out["bounds_max_slope_half_width"] = float(((acc["high"] - acc["low"]) / 2).max())
    lr_rows = rows[rows["data"] == "image"].drop_duplicates("batch_size").sort_values("batch_size")
    out["bounds_lr_rule"] = ", ".join(
        f"B = {int(b)}: lr = {lr:.2g}" for b, lr in zip(lr_rows.batch_size, lr_rows.lr, strict=True)
    )

    worst = worst_float64_upsilon(upsilon)
    if worst is None:
        c = out["bounds_latent_c"]
        trap = (
            f"No K+1 of this latent scan reaches C = {c}, so υ is exactly 0 at every K and the "
            "float64 sum is not put to the test here."
        )
    elif worst["relative_error"] > 0.01:
        trap = (
            f"At K+1 = {worst['K+1']} the float64 sum gives {worst['float64']:.3e} where the "
            f"exact value is {worst['exact']:.3e}, {worst['ratio']:.3g} times the exact value."
        )
    else:
        trap = (
            f"With C = {worst['C']} the float64 sum is still accurate at every K of this scan "
            f"(relative error at most {worst['relative_error']:.1e}); the cancellation needs "
            "many more classes (see the coupon collector's chapter)."
        )
    out["bounds_trap_sentence"] = trap
    lat = upsilon[upsilon["data"] == "latent"]
    out["bounds_latent_top_upsilon"] = float(lat.iloc[-1]["empirical"])
    out["bounds_latent_low_upsilon"] = float(lat.iloc[0]["empirical"])
    out["bounds_latent_low_k1"] = int(lat.iloc[0]["K+1"])

    # the upper bounds on L_sup at the largest K of each data set (first mode listed)
    for kind in kinds:
        s = summary[
            (summary["data"] == kind) & (summary["K"] == rows.loc[rows.data == kind, "K"].max())
        ]
        s = s[s["mode"] == s["mode"].iloc[0]].set_index("term")
        for term, key in (
            ("curl_sup_upper_bound", "curl_ub"),
            ("proposed_sup_upper_bound_exact_upsilon", "prop_ub"),
            ("sup_loss", "sup"),
            ("tau", "tau"),
        ):
            r = s.loc[term]
            value = math.inf if r["n_inf"] == r["n"] else r["mean"]
            out[f"bounds_{kind}_top_{key}"] = vd.format_number(value, ".3g")
        out[f"bounds_{kind}_top_k1"] = int(s["K+1"].iloc[0])

    # where the CURL number (authors' form) lies below the measured L_sup: no upper bound there
    wide = stats.wide_summary(rows, ["curl_sup_upper_bound", "sup_loss"])
    low = wide[wide["curl_sup_upper_bound"] < wide["sup_loss"]]
    where = "; ".join(f"{label[r.data]}, {r['mode']}, K+1 = {r['K+1']}" for _, r in low.iterrows())
    out["bounds_curl_below_sup"] = (
        f"In this run it lies below the measured L_sup at: {where}."
        if where
        else "In this run it never lies below the measured L_sup."
    )
    for key, name in (("curl", "curl"), ("proposed", "prop")):
        v = verdict_rows[verdict_rows["key"] == key]
        out[f"bounds_verdict_{name}"] = "; ".join(
            f"{label[r.data]}, {modes[r.mode]}: {r.verdict}" for r in v.itertuples()
        )
    out.update(vd.count_numbers("bounds", verdict_rows))
    below = verdict_rows[verdict_rows["key"] == "lower bound"]
    out["bounds_below_all"] = (
        "in every run"
        if (below["verdict"] == vd.REPRODUCED).all()
        else "not in every run (see the table)"
    )
    out["bounds_verdicts"] = vd.records(T["verdicts"])  # for the summary on the first page
    out["bounds_rerun"] = P.papermill_command("bounds")
    out["bounds_figure_runs"] = json.dumps(figure_runs(P, T))
    return out


def learned_numbers(
    prefix: str, rows: pd.DataFrame, baselines: dict[str, dict[str, Any]] | None
) -> dict[str, float]:
    """``<prefix>_image_top_accuracy``: the mean linear probe of the image encoders at the
    largest K (the first mode of the scan), ``<prefix>_pixels`` and ``<prefix>_random``: the
    raw-pixel and random-encoder probes, and the gains over both (points; NaN without image
    runs)."""
    image = rows[rows["data"] == "image"]
    if baselines is None or not len(image):
        nan = math.nan
        top = pixels = random = nan
    else:
        g = image[image["mode"] == image["mode"].iloc[0]]
        top = float(g.loc[g["K"] == g["K"].max(), "linear_accuracy"].mean())
        pixels, random = (float(m["linear_accuracy"]) for m in baselines.values())
    return {
        f"{prefix}_image_top_accuracy": top,
        f"{prefix}_pixels": pixels,
        f"{prefix}_random": random,
        f"{prefix}_gain_pixels": top - pixels,
        f"{prefix}_gain_random": top - random,
    }


def figure_runs(P: Params, T: dict[str, Any]) -> dict[str, list[str]]:
    """The run ids behind each figure of the page, by the figure's name (the reproducibility
    page lists them: a figure traces to its runs in the cache)."""
    rows = T["rows"]
    every = sorted(set(rows["run_id"]))
    # the upper bounds are drawn for the first way of varying K of each data set
    first = [
        rows[
            (rows["data"] == kind)
            & (rows["mode"] == min(set(rows.loc[rows["data"] == kind, "mode"])))
        ]
        for kind in T["kinds"]
    ]
    upper = sorted({r for g in first for r in g["run_id"]})
    names = ("accuracy", "losses", "probabilities", "lower")
    return {**{f"fig-bounds-{n}": every for n in names}, "fig-bounds-upper": upper}
