"""Chapter 3's page: every number it quotes (:func:`numbers`) and the runs behind each figure."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
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
    out["bounds_image_epochs_text"] = f"{P.scan.epochs} epoch" + ("s" if P.scan.epochs != 1 else "")

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
    out.update(surrogate_numbers(T))
    out.update(eqco_numbers(T))
    out.update(collision_numbers(T))
    for key, name in (("curl", "curl"), ("proposed", "prop"), ("every K", "every")):
        v = verdict_rows[verdict_rows["key"] == key]
        out[f"bounds_verdict_{name}"] = "; ".join(
            f"{label[r.data]}, {modes[r.mode]}: {r.verdict}" for r in v.itertuples()
        )
    out.update(vd.count_numbers("bounds", verdict_rows))
    claims_, checks = vd.of_kind(verdict_rows, vd.CLAIM), vd.of_kind(verdict_rows, vd.CHECK)
    out["bounds_counts_text"] = (
        f"Of the {vd.plural(len(claims_), 'verdict')} on the papers' claims, "
        f"{vd.verdict_counts(vd.counts(claims_))}; of the {vd.plural(len(checks), 'check')} "
        f"of our estimates, {vd.verdict_counts(vd.counts(checks))}."
    )
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
    arms = T["eqco"]
    compared = {m.removeprefix(kscan.EQCO_PREFIX) for m in arms["mode"]} if len(arms) else set()
    eqco = sorted(
        set(rows.loc[rows["mode"].isin(compared), "run_id"]) | set(arms.get("run_id", []))
    )
    return {
        **{f"fig-bounds-{n}": every for n in names},
        "fig-bounds-upper": upper,
        "fig-bounds-every": upper,
        "fig-bounds-eqco": eqco,
        "fig-bounds-collisions": upper,
    }


# The upper bounds of the every-K figure and table, in the order they are drawn.
EVERY_BOUND: dict[str, str] = {
    "curl_sup_upper_bound": "CURL (Arora et al.)",
    "proposed_sup_upper_bound_exact_upsilon": "Nozawa & Sato",
    "ash_sup_upper_bound": "Ash et al.",
    "bao_sup_upper_bound": "Bao et al., upper",
    "sup_loss": "L_sup (measured)",
    "bao_sup_lower_bound": "Bao et al., lower",
}


def every_bound_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Means over seeds of every bound on L_sup and the measured L_sup, one row per data set,
    way of varying K and K+1 (∞: infinite in every seed)."""
    return stats.wide_summary(rows, list(EVERY_BOUND))


def surrogate_numbers(T: dict[str, Any]) -> dict[str, Any]:
    """The every-K bounds at the smallest and largest K of each data set (first mode), and
    how far above L_sup Bao et al.'s upper bound lies (nats)."""
    out: dict[str, Any] = {}
    table = every_bound_table(T["rows"])
    for kind in T["kinds"]:
        g = table[table["data"] == kind]
        g = g[g["mode"] == g["mode"].iloc[0]].sort_values("K+1")
        for end, r in (("low", g.iloc[0]), ("top", g.iloc[-1])):
            out[f"bounds_{kind}_{end}_k1_every"] = int(r["K+1"])
            for term, key in (
                ("bao_sup_upper_bound", "bao_ub"),
                ("bao_sup_lower_bound", "bao_lb"),
                ("ash_sup_upper_bound", "ash_ub"),
                ("sup_loss", "sup_every"),
            ):
                out[f"bounds_{kind}_{end}_{key}"] = vd.format_number(float(r[term]), ".3g")
        gap = g["bao_sup_upper_bound"] - g["sup_loss"]
        out[f"bounds_{kind}_bao_gap_range"] = f"{gap.min():.2f} to {gap.max():.2f}"
    return out


def eqco_numbers(T: dict[str, Any]) -> dict[str, Any]:
    """The EqCo arms' slopes with and without the rescaling per data set and way of varying K,
    α, the widest half-width of an arm's slope per data set, and the verdicts in words."""
    slopes, eqco = T["eqco_slopes"], T["eqco"]
    out: dict[str, Any] = {
        "bounds_eqco_runs": len(eqco),
        "bounds_eqco_modes": vd.and_list(T["eqco_modes"]) if T.get("eqco_modes") else "none",
    }
    sentences = []
    for kind in T["kinds"]:
        out[f"bounds_{kind}_eqco_half_width"] = math.nan
        for mode, g in slopes[slopes["data"] == kind].groupby("mode", sort=False):
            g = g.set_index("arm")
            arm = eqco[(eqco["data"] == kind) & (eqco["mode"] == kscan.EQCO_PREFIX + mode)]
            alpha = int(arm["K"].max())
            text = {a: _slope(r["mean"], r["low"], r["high"]) for a, r in g.iterrows()}
            sentences.append(
                f"{T['labels'][kind]}, {kscan.MODE_NAMES[mode]}: {text['without']} points per "
                f"doubling without the rescaling, {text['with']} with it (α = {alpha}), a "
                f"difference paired by seed of {text['difference']}"
            )
            half = float((g.loc["with", "high"] - g.loc["with", "low"]) / 2)
            out[f"bounds_{kind}_eqco_half_width"] = float(
                np.nanmax([out[f"bounds_{kind}_eqco_half_width"], half])
            )
    out["bounds_eqco_sentence"] = (
        "; ".join(sentences) + "." if sentences else "No EqCo arm was trained (eqco_modes=[])."
    )
    out["bounds_eqco_reading"] = eqco_reading(T)
    v = T["verdicts"]
    v = v[v["key"] == "eqco"]
    out["bounds_verdict_eqco"] = (
        "; ".join(
            f"{T['labels'][r.data]}, {r.mode.removeprefix(kscan.EQCO_PREFIX)}: {r.verdict}"
            for r in v.itertuples()
        )
        or "not tested"
    )
    return out


def eqco_reading(T: dict[str, Any]) -> str:
    """What the EqCo arms can say in this run. Where a mode's slope without the rescaling
    already lies within ±:data:`MIN_ACCURACY_SLOPE`, K has no effect for the rescaling to
    remove; where it does not, the paired difference says how much the rescaling removes. The
    image scan's batch mode without an arm, and not flat, is named with the parameter that
    adds its arm and the training time it would take (its runs' own times, from the cache)."""
    slopes, rows = T["eqco_slopes"], T["rows"]
    base = slopes[slopes["arm"] == "without"]
    flat, moving = [], []
    for r in base.itertuples():
        where = f"{T['labels'][r.data]}, {r.mode}"
        inside = -MIN_ACCURACY_SLOPE < r.low and r.high < MIN_ACCURACY_SLOPE
        (flat if inside else moving).append(where)
    text = []
    if flat:
        text.append(
            f"Without the rescaling the slope is already within ±{MIN_ACCURACY_SLOPE:g} points "
            f"per doubling on {_places(flat)}: K has no effect there for the rescaling to "
            "remove, so that arm shows that EqCo's rescaling changes nothing, not whether K's "
            "effect runs through the margin."
        )
    if moving:
        text.append(
            f"On {_places(moving)} the slope without the rescaling is not shown to be flat: "
            "the paired difference is how much of K's effect the rescaling removes, and the "
            "EqCo verdict says whether any is left."
        )
    batch = rows[(rows["data"] == "image") & (rows["mode"] == "batch")]
    has_arm = ((slopes["data"] == "image") & (slopes["mode"] == "batch")).any()
    if len(batch) and not has_arm:
        mean, low, high, _ = stats.trend(batch, "linear_accuracy")
        if not (-MIN_ACCURACY_SLOPE < low and high < MIN_ACCURACY_SLOPE):
            extra = batch[batch["K"] < batch["K"].max()]
            minutes = float(extra["train_seconds"].sum()) / 60
            text.append(
                "The image scan's batch mode, where K moves with the batch size, has a slope of "
                f"{_slope(mean, low, high)} points per doubling without an EqCo arm; "
                f"its arm ({len(extra)} more runs, K + 1 = B, α = {int(batch['K'].max())}) is "
                "what would decide whether that effect runs through the margin: "
                '-p eqco_modes \'["batch", "mask"]\', about '
                f"{minutes:.0f} minutes of training on this machine (the same runs' times "
                "without the rescaling)."
            )
    return " ".join(text)


def _slope(mean: float, low: float, high: float) -> str:
    """A slope with its interval at two decimals, as the slope tables print it: "+0.05 [−0.09,
    +0.20]"."""
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]".replace("-", "−")


def _places(items: list[str]) -> str:
    """Settings that hold commas themselves, listed: "a, x; b, y and c, z"."""
    return items[0] if len(items) == 1 else f"{'; '.join(items[:-1])} and {items[-1]}"


def collision_numbers(T: dict[str, Any]) -> dict[str, Any]:
    """The share of the kept negatives that are of the anchor's class, logged in training
    (the last epoch's sampled steps), at the smallest and largest K of each data set (first
    mode), against 1/C."""
    rows, out = T["rows"], {}
    for kind in T["kinds"]:
        g = rows[rows["data"] == kind]
        g = g[g["mode"] == g["mode"].iloc[0]]
        share = g.groupby("K")["same_class_kept"].mean()
        out[f"bounds_{kind}_same_class_low"] = float(100 * share.iloc[0])
        out[f"bounds_{kind}_same_class_top"] = float(100 * share.iloc[-1])
        out[f"bounds_{kind}_chance"] = float(100 / int(g["num_classes"].iloc[0]))
    return out
