"""Chapter 5's claims (debiasing, hard-negative weights, the bands) and the synthesis of every
chapter's verdicts.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from negatives import verdicts as vd
from negatives.chapters import difficulty
from negatives.chapters.treatments.design import CHAPTER, REFERENCE, parse_treatment
from negatives.stats import share_of_gain

DELTA = "Δ linear-probe accuracy vs all negatives, paired by seed"


CHUANG = "Chuang et al. (2020)"


ROBINSON = "Robinson et al. (2021)"


def paper_claims(margin: float) -> dict[str, vd.Claim]:
    """The claims this chapter tests, by treatment family (statements in our words; the bands'
    are chapter 2's, in the wording of Cai & Frankle's latest version: :func:`negatives.
    chapters.difficulty.paper_claims`)."""
    return {
        "debiased": vd.Claim(
            "debiasing helps",
            CHUANG,
            "correcting the negative term for same-class negatives improves on the standard loss",
            DELTA,
            vd.above(0.0),
            " pts",
        ),
        "oracle": vd.Claim(
            "removing same-class negatives helps",
            CHUANG,
            "contrasting only with negatives of other classes (true labels) improves on the "
            "standard loss",
            DELTA,
            vd.above(0.0),
            " pts",
        ),
        "hard": vd.Claim(
            "hard-negative weights help",
            ROBINSON,
            "weighting negatives towards the harder ones (with debiasing) improves on the "
            "standard loss",
            DELTA,
            vd.above(0.0),
            " pts",
        ),
        # chapter 2's claims about the same bands, as chapter 2 words and decides them
        "hardest": difficulty.paper_claims(margin)["hardest 5% are sufficient"],
        "all but": difficulty.paper_claims(margin)["hardest 0.1% are unnecessary"],
    }


def _family(name: str) -> str | None:
    t = parse_treatment("treatment", name)
    if t.kind == "band":
        if t.band == (0.0, 0.05):
            return "hardest"
        return "all but" if t.band == (0.001, 1.0) else None
    return {"oracle": "oracle", "debiased": "debiased", "hard": "hard"}.get(t.kind)


def claims(T: dict[str, Any], margin: float = difficulty.MARGIN) -> pd.DataFrame:
    """One verdict row per (bench, treatment) that a paper makes a claim about (:func:`paper_
    claims`; other bands are shown, not judged), decided by the book's one rule.

    Where ``T["summary"]`` has :func:`add_shares`' ``gain``, each row also gets the share of
    the gain over a random encoder that the treatment keeps (:func:`negatives.chapters.
    difficulty.share_columns`: ``gain, share, share_low, share_high, share_ours,
    share_both``, the intervals Δ's mapped with G held at its mean)."""
    C = paper_claims(margin)
    summary = T["summary"]
    rows = []
    for r in summary.itertuples():
        family = _family(r.treatment)
        if family is None:
            continue
        row = vd.judge(
            C[family],
            r.diff_mean,
            r.diff_low,
            r.diff_high,
            setting=f"{r.bench}: {parse_treatment('treatment', r.treatment).label}",
            seeds=int(r.n),
            test_set=(float(r.diff_test_low), float(r.diff_test_high)),
        )
        gain = float(r.gain) if "gain" in summary.columns else math.nan
        share = difficulty.share_columns(
            r.diff_mean, (r.diff_low, r.diff_high), (row["low"], row["high"]), gain
        )
        rows.append({**row, "bench": r.bench, "treatment": r.treatment, **share})
    return vd.verdict_table(rows)


def add_shares(summary: pd.DataFrame, random: dict[str, float]) -> pd.DataFrame:
    """``summary`` (:func:`summarize`) with the share of the gain over a random encoder that
    each treatment keeps: ``gain`` = G, the bench's mean linear-probe accuracy with all
    negatives − ``random[bench]`` (its random encoder's probe, points; NaN for a bench not in
    ``random``); ``share``, ``share_low``, ``share_high``, ``share_test_low``,
    ``share_test_high`` = 1 + Δ / G of ``diff_mean`` and of the ends of the intervals over
    seeds and over the test images (:func:`negatives.stats.share_of_gain`: G held at its mean,
    NaN where G is not positive)."""
    out = summary.copy()
    top = summary[summary["treatment"] == REFERENCE].groupby("bench")["mean"].mean()
    base = pd.Series(random, dtype=float)
    out["gain"] = out["bench"].map(top).astype(float) - out["bench"].map(base).astype(float)
    for name, column in (
        ("share", "diff_mean"),
        ("share_low", "diff_low"),
        ("share_high", "diff_high"),
        ("share_test_low", "diff_test_low"),
        ("share_test_high", "diff_test_high"),
    ):
        out[name] = share_of_gain(out[column].to_numpy(dtype=float), out["gain"].to_numpy())
    return out


def book_verdicts(root: str | Path = ".", own: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every claim of the book with its verdict: each executed chapter's glued verdicts
    (:func:`negatives.glue.verdict_summary`, in reading order; chapters not executed in this
    build are absent), this chapter's own from ``own`` (this run's, not an earlier build's)."""
    from negatives.glue import verdict_summary

    # outside a book (no table of contents, as in an interactive session): this chapter alone
    table = verdict_summary(root) if (Path(root) / "_toc.yml").is_file() else pd.DataFrame()
    if len(table):
        table = table[~table["chapter"].str.contains(f'href="{CHAPTER}.html"', regex=False)]
    if own is not None and len(own):
        mine = own[list(vd.RECORD_COLUMNS)].assign(chapter="this chapter")
        table = pd.concat([table, mine], ignore_index=True)
    return table.reset_index(drop=True)


def synthesis(summary: pd.DataFrame) -> pd.DataFrame:
    """Per bench: the treatments whose paired difference to all negatives is clearly positive,
    clearly negative, or not told apart from zero by the 95% interval over seeds."""
    rows = []
    for bench, g in summary[summary["treatment"] != REFERENCE].groupby("bench", sort=False):
        label = {t: parse_treatment("t", t).label for t in g["treatment"]}
        better = [label[r.treatment] for r in g.itertuples() if r.diff_low > 0]
        worse = [label[r.treatment] for r in g.itertuples() if r.diff_high < 0]
        same = [label[r.treatment] for r in g.itertuples() if r.diff_low <= 0 <= r.diff_high]
        best = g.loc[g["diff_mean"].idxmax()]
        rows.append(
            {"bench": bench, "better": better, "worse": worse, "unclear": same,
             "best": label[best["treatment"]], "best_diff": float(best["diff_mean"])}
        )  # fmt: skip
    return pd.DataFrame(rows)
