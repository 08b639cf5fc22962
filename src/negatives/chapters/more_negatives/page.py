"""Chapter 4's page: every number it quotes (:func:`numbers`) and the runs behind each figure."""

from __future__ import annotations

import json
import math
from typing import Any

from negatives import verdicts as vd
from negatives.chapters.more_negatives.analysis import departures
from negatives.chapters.more_negatives.claims import _ends, _optima, _relative_change
from negatives.chapters.more_negatives.design import METRICS, MODE_NAMES, SCAN_KINDS, Params


def numbers(P: Params, T: dict[str, Any]) -> dict[str, Any]:
    """Every number the page quotes, by its glue name."""
    main, variants, skew = T["main"], T["variants"], T["skew"]
    k_min, k_max = min(P.population_num_negatives), max(P.population_num_negatives)
    c_max = max(P.num_classes)
    estimate = dict(zip(T["verdicts"]["key"], T["verdicts"]["estimate"], strict=True))
    both = _optima(main, variants)
    out: dict[str, Any] = {
        "morenegatives_quad_maxdiff": float(T["quad"]["|integral - enumeration|"].max()),
        "morenegatives_quad_maxz": float(T["quad"]["(integral - MC) / s.e."].abs().max()),
        "morenegatives_kmin": int(k_min),
        "morenegatives_kmax": int(k_max),
        "morenegatives_cmax": int(c_max),
        "morenegatives_main_scale": float(P.main_scale),
        "morenegatives_main_constraint": P.main_constraint,
        "morenegatives_uniform_n": int((both["prior"] == "uniform").sum()),
        "morenegatives_uniform_maxdist": float(estimate["structure"]),
        "morenegatives_uniform_supchange": float(estimate["flat"]),
        "morenegatives_uniform_minacc": float(estimate["accuracy"]),
    }

    # the Zipf prior from the smallest to the largest K; with two classes every prior's optimum
    # is the antipodal pair, so these use C >= 3
    zipf = both[(both["prior"] == "zipf") & (both["C"] >= 3)]
    first, last = _ends(zipf, "simplex distance")
    sup = _relative_change(zipf, "supervised loss")
    bal = _relative_change(zipf, "balanced supervised loss")
    out |= {
        "morenegatives_zipf_mindist": float(zipf["simplex distance"].min()),
        "morenegatives_zipf_dist_shrinks": int((last < first).sum()),
        "morenegatives_zipf_groups": len(first),
        "morenegatives_zipf_sup_rel_min": float(100 * sup.min()),
        "morenegatives_zipf_sup_rel_max": float(100 * sup.max()),
        "morenegatives_zipf_sup_up": int((sup > 1e-9).sum()),
        "morenegatives_zipf_bal_rel_min": float(100 * bal.min()),
        "morenegatives_zipf_bal_rel_max": float(100 * bal.max()),
        "morenegatives_zipf_minacc": float(zipf["accuracy"].min()),
        "morenegatives_zipf_label": P.population.prior_label("zipf"),
    }

    sk = skew.sort_values("Zipf exponent a")
    out |= {
        "morenegatives_skew_amin": float(sk["Zipf exponent a"].iloc[0]),
        "morenegatives_skew_amax": float(sk["Zipf exponent a"].iloc[-1]),
        "morenegatives_skew_change_amin": float(sk["change (%)"].iloc[0]),
        "morenegatives_skew_change_amax": float(sk["change (%)"].iloc[-1]),
        "morenegatives_skew_balchange_amax": float(sk["balanced change (%)"].iloc[-1]),
        "morenegatives_skew_ratio_amax": float(sk["rho_max / rho_min"].iloc[-1]),
        "morenegatives_skew_minacc": float(sk["min accuracy"].min()),
    }

    # sphere against ball (same C, K, prior, scale)
    sphere_ball = ball_min_norm = math.nan
    if len(set(variants["constraint"])) > 1:
        piv = variants.pivot_table(
            index=["prior", "scale", "K"], columns="constraint", values="loss"
        )
        sphere_ball = float((piv["sphere"] - piv["ball"]).abs().max())
    ball = variants[variants["constraint"] == "ball"]
    if len(ball):
        ball_min_norm = float(ball["min norm"].min())
    # the CURL view at the main scale, uniform prior
    curl_c = 10 if 10 in P.num_classes else c_max
    g = main[(main["prior"] == "uniform") & (main["C"] == curl_c)].sort_values("K")
    out |= {
        "morenegatives_sphere_ball_maxdiff": sphere_ball,
        "morenegatives_ball_minnorm": ball_min_norm,
        "morenegatives_variant_c": int(P.variant_num_classes),
        "morenegatives_heatmap_c": int(P.heatmap_num_classes),
        "morenegatives_seconds_cmax": float(T["timing"].set_index("C").loc[c_max, "mean s"]),
        "morenegatives_compute_seconds": float(T["compute_seconds"]),
        "morenegatives_optim_seconds_total": float(both["seconds"].sum()),
        "morenegatives_optim_count": len(both),
        "morenegatives_restarts": int(P.restarts),
        "morenegatives_restarts_text": vd.plural(int(P.restarts), "random point"),
        "morenegatives_curl_c": int(curl_c),
        "morenegatives_curl_log10_nocoll": float(g["log10 (1 - tau_K)"].iloc[-1]),
        "morenegatives_curl_log10_first": float(g["log10 CURL bound"].iloc[0]),
        "morenegatives_curl_log10_last": float(g["log10 CURL bound"].iloc[-1]),
        "morenegatives_curl_sup": float(g["supervised loss"].iloc[-1]),
    }

    # the two sections on trained encoders
    rows, margin = T["scan_rows"], P.accuracy_margin
    out |= {
        "more_negatives_scan_runs": len(rows),
        "more_negatives_scan_seeds": int(rows["seed"].nunique()),
        "more_negatives_scan_minutes": float(rows["train_seconds"].sum() / 60),
        "more_negatives_margin": float(margin),
    }
    for kind in SCAN_KINDS:
        g = rows[rows["data"] == kind]
        comp = T["comparisons"][T["comparisons"]["data"] == kind]
        found = departures(comp, margin)
        name = f"more_negatives_{kind}"
        out[f"{name}_label"] = T["scan_labels"][kind]
        out[f"{name}_k_range"] = f"{g.K.min()} to {g.K.max()}"
        out[f"{name}_modes"] = " and ".join(MODE_NAMES[m] for m in sorted(set(g["mode"])))
        out[f"{name}_departures"] = (
            "; ".join(found) + "."
            if found
            else f"none: no comparison moves by more than {margin:g} point{'' if margin == 1 else 's'} with 95% "
            "confidence."
        )
        out[f"{name}_verdicts"] = "; ".join(
            f"{METRICS[r.metric]}, {MODE_NAMES[r['mode']]}: "
            f"{vd.format_interval(r.best_mean, r.best_low, r.best_high, ' points', 1)}, "
            f"{r.verdict}"
            for _, r in comp.iterrows()
        )
    out["more_negatives_verdicts"] = vd.records(T["verdicts"])  # for the summary on the first page
    out["more_negatives_rerun"] = P.papermill_command("more_negatives")
    out["more_negatives_figure_runs"] = json.dumps(figure_runs(P, T))
    return out


def figure_runs(P: Params, T: dict[str, Any]) -> dict[str, list[str]]:
    """The run ids behind each figure of the page, by the figure's name (the reproducibility
    page lists them). The population figures come from no training run: their optima are
    computed (and cached) by :func:`negatives.theory.optimum`."""
    rows = T["scan_rows"]
    population = ("gram", "simplex", "loss", "variants", "curl")
    out: dict[str, list[str]] = {f"fig-morenegatives-{n}": [] for n in population}
    for kind in ("latent", "image"):
        out[f"fig-morenegatives-{kind}"] = sorted(set(rows.loc[rows["data"] == kind, "run_id"]))
    return out
