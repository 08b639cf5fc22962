"""Chapter 5's page: every number it quotes (:func:`numbers`) and the runs behind each figure."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from negatives import verdicts as vd
from negatives.chapters.treatments.analysis import mechanism
from negatives.chapters.treatments.claims import paper_claims
from negatives.chapters.treatments.design import (
    CHAPTER,
    DATA_KINDS,
    REFERENCE,
    Params,
    parse_treatment,
)


def _list(items: list[str], empty: str = "none") -> str:
    """Items as a sentence lists them: "a, b and c"; items that hold commas themselves are
    separated by semicolons ("a, x; b, y and c, z")."""
    if not items:
        return empty
    if len(items) > 1 and any(", " in item for item in items):
        return f"{'; '.join(items[:-1])} and {items[-1]}"
    return vd.and_list(items)


def _kept(share: str) -> str:
    """A verdict's share of the gain over a random encoder, as a sentence part."""
    if share in ("", "n/a"):
        return "no share (no gain over a random encoder)"
    return f"keeping {share} of the gain over a random encoder"


def numbers(P: Params, T: dict[str, Any]) -> dict[str, Any]:
    """Every number and generated sentence the page quotes, by its glue name."""
    out: dict[str, Any] = {}
    put = out.__setitem__
    per_run, summary, verdicts = T["per_run"], T["summary"], T["verdicts"]
    coll, syn, book = T["collisions"], T["synthesis"], T["book_verdicts"]
    unique = per_run.drop_duplicates("run_id")
    new = unique[~unique["shared"]]
    put("treatments_num_runs", len(unique))
    put("treatments_new_runs", len(new))
    put("treatments_shared_runs", len(unique) - len(new))
    put("treatments_new_minutes", float(new["train_seconds"].sum() / 60))
    put("treatments_train_minutes", float(unique["train_seconds"].sum() / 60))
    put("treatments_seeds", P.seeds)
    put("treatments_latent_seeds", P.latent_seeds)
    # treatments with more seeds than P.seeds: those whose further runs chapter 2 or 3 trains
    counts = per_run.groupby(["bench", "treatment"], sort=False)["seed"].nunique()
    extra = [
        f"{parse_treatment('t', t).label} on {b.split(',')[0]}: {n}"
        for (b, t), n in counts.items()
        if n > P.seeds_of(per_run.loc[per_run["bench"] == b, "kind"].iloc[0])
    ]
    put(
        "treatments_shared_seeds",
        "every treatment has that many"
        if not extra
        else "a treatment whose further seeds chapter 2 or 3 trains takes all of them, so a "
        "claim both chapters judge rests on the same runs in both (" + "; ".join(extra) + ")",
    )
    put("treatments_margin", P.margin)
    put("treatments_latent_classes", P.latent_classes)
    put("treatments_benches", "; ".join(dict.fromkeys(per_run["bench"])))
    put("treatments_moco_t", P.moco_temperature)
    put("treatments_latent_epochs", P.latent_epochs)
    put("treatments_kscan_latent_epochs", P._simclr().latent_epochs)
    put("treatments_latent_base_rate", 100 / P.latent_classes)
    for kind in DATA_KINDS:
        mine = new[new["kind"] == kind]["train_seconds"]
        put(f"treatments_{kind}_run_seconds", float(mine.mean()) if len(mine) else math.nan)
        names = [parse_treatment("t", t).label for t in P.treatments_of(kind)]
        put(f"treatments_{kind}_list", _list(names))
    image = P.base_config(next((b for b in P.benches if b[1] == "image"), ("moco", "image", 1)))
    put(
        "treatments_scale",
        f"{P.epochs} epoch{'s' * (P.epochs != 1)} of a {image.arch} of width {image.width} on "
        f"{P.dataset}; an MLP for {P.latent_epochs} epoch{'s' * (P.latent_epochs != 1)} on "
        f"{P.latent_classes} latent classes",
    )
    put("treatments_simclr_t", P.simclr_temperature)
    # what the first image bench's encoders learn: all negatives against pixels and a random one
    first = per_run[(per_run["kind"] == "image") & (per_run["treatment"] == REFERENCE)]
    first = first[first["bench"] == first["bench"].iloc[0]] if len(first) else first
    top = float(first["linear_accuracy"].mean()) if len(first) else math.nan
    pixels, random = (
        (float(m["linear_accuracy"]) for m in T["baselines"].values())
        if T.get("baselines")
        else (math.nan, math.nan)
    )
    put("treatments_image_all_accuracy", top)
    put("treatments_pixels", pixels)
    put("treatments_random", random)
    put("treatments_gain_pixels", top - pixels)
    put("treatments_gain_random", top - random)
    for kind in DATA_KINDS:
        g = coll[coll["kind"] == kind]
        put(
            f"treatments_{kind}_collisions",
            _list([f"τ_K = {100 * r.tau_K:.1f}% at K = {r.K} (C = {r.num_classes})"
                   for r in g.itertuples()]),
        )  # fmt: skip
    # the mechanism: the weight share against the count share, per bench
    ref = summary[summary["treatment"] == REFERENCE]
    put(
        "treatments_reference_weight",
        _list([f"{100 * r.same_class_weight:.1f}% on {r.bench} (count share "
               f"{100 * r.same_class_kept:.1f}%, 1/C = {100 / r.num_classes:.1f}%)"
               for r in ref.itertuples()]),
    )  # fmt: skip
    # MoCo's queue and the query's own image (He, facebookresearch/moco#24): the share of
    # queries that find an older key of their own, which the trainer does not count as negative
    moco = ref[ref["method"] == "moco"]
    put(
        "treatments_own_key",
        _list([f"{100 * r.own_key_share:.2f}% of the queries on {r.bench} (a queue of "
               f"{r.K:,} keys, {100 * r.K / len(T['data'][r.kind].train_labels):.1f}% of the "
               "training images)" for r in moco.itertuples()], "no MoCo bench in this run"),
    )  # fmt: skip
    hard5 = summary[summary["treatment"] == "hardest 5%"]
    put(
        "treatments_hardest_weight",
        _list([f"{100 * r.same_class_weight:.1f}% on {r.bench}" for r in hard5.itertuples()]),
    )
    corr = mechanism(summary)
    put(
        "treatments_mechanism",
        _list(
            [
                f"{r.bench}: r = {r.r:+.2f} over {r.n} treatments"
                if math.isfinite(r.r)
                else f"{r.bench}: not computed ({r.n} treatments)"
                for r in corr.itertuples()
            ]
        ),
    )
    # the verdicts and the synthesis
    out.update(vd.count_numbers("treatments", verdicts))
    # each verdict with the share of the gain over a random encoder that the treatment keeps
    # (its interval over seeds mapped from Δ's, G held at its mean)
    for family, claim in paper_claims(P.margin).items():
        rows = verdicts[verdicts["claim"] == claim.name]
        put(
            f"treatments_verdicts_{family.replace(' ', '_')}",
            _list([f"{r.setting}: {r.ours}, {_kept(r.share_ours)} ({r.verdict})"
                   for r in rows.itertuples()], "not tested in this run"),
        )  # fmt: skip
    put(
        "treatments_gains",  # "; ": a bench's label has commas
        "; ".join(f"{vd.format_number(r.gain, '+.1f').replace('-', '−')} points on {r.bench}"
                  if math.isfinite(r.gain) else f"none measured on {r.bench}"
                  for r in summary[summary["treatment"] == REFERENCE].itertuples()),
    )  # fmt: skip
    put(
        "treatments_practice",
        " ".join(
            f"On {r.bench}: better than all negatives: {_list(r.better)}; worse: "
            f"{_list(r.worse)}; not told apart at this number of seeds: "
            f"{_list(r.unclear)}."
            for r in syn.itertuples()
        ),
    )
    n_book = vd.counts(book) if len(book) else dict.fromkeys(vd.VERDICTS, 0)
    put("treatments_book_claims", len(book))
    put("treatments_book_rep", n_book[vd.REPRODUCED])
    put("treatments_book_notrep", n_book[vd.NOT_REPRODUCED])
    put("treatments_book_inc", n_book[vd.INCONCLUSIVE])
    chapters = [c for c in dict.fromkeys(book["chapter"])] if len(book) else []
    put("treatments_book_chapters", len(chapters))
    for key, (claim, where) in QUOTED.items():
        put(f"treatments_quote_{key}", quote(book, claim, where))
    out["treatments_verdicts"] = vd.records(verdicts)
    out["treatments_rerun"] = P.papermill_command(CHAPTER)
    out["treatments_figure_runs"] = json.dumps(figure_runs(P, T))
    return out


# The other chapters' claims that the synthesis quotes, by glue key: (claim, its chapter).
QUOTED: dict[str, tuple[str, str]] = {
    "hard5": ("hardest 5% are sufficient", "chapter 2"),
    "no01": ("hardest 0.1% are unnecessary", "chapter 2"),
    "helps01": ("hardest 0.1% are sometimes detrimental", "chapter 2"),
    "sameclass": ("hard negatives are more often same-class", "chapter 2"),
    "curl": ("the CURL bound explodes", "chapter 3"),
    "every": ("the bound for every K is the tightest", "chapter 3"),
    "eqco": ("with EqCo's rescaling K stops mattering", "chapter 3"),
    "morek": ("more negatives improve accuracy", "chapter 3"),
    "optimum": ("the optimum does not degrade with K (uniform classes)", "chapter 4"),
    "trained": ("accuracy does not degrade with K", "chapter 4"),
}


def quote(book: pd.DataFrame, claim: str, where: str) -> str:
    """A claim's verdicts from the book's table, as a sentence part (or why there is none)."""
    rows = (
        book[(book["claim"] == claim) & (book["chapter"] != "this chapter")] if len(book) else book
    )
    if not len(rows):
        return f"not available ({where} was not executed in this build)"
    if len(rows) > 2:  # a scan's many settings: their verdicts counted
        return f"over {len(rows)} settings, {vd.verdict_counts(vd.counts(rows))}"
    return "; ".join(f"{r.ours} at {r.setting}: {r.verdict}" for r in rows.itertuples())


def figure_runs(P: Params, T: dict[str, Any]) -> dict[str, list[str]]:
    """The run ids behind each figure of the page, by the figure's name."""
    ids = sorted(set(T["per_run"]["run_id"]))
    return {"fig-treatments-accuracy": ids, "fig-treatments-mechanism": ids}
