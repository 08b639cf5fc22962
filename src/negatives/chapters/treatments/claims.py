"""Chapter 5's claims (debiasing, hard-negative weights, the bands) and the synthesis of every
chapter's verdicts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from negatives import verdicts as vd
from negatives.chapters import difficulty
from negatives.chapters.treatments.design import CHAPTER, REFERENCE, parse_treatment

DELTA = "Δ linear-probe accuracy vs all negatives, paired by seed"


CHUANG = "Chuang et al. (2020)"


ROBINSON = "Robinson et al. (2021)"


def paper_claims(margin: float) -> dict[str, vd.Claim]:
    """The claims this chapter tests, by treatment family (statements in our words)."""
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
        "hardest": vd.Claim(
            "hardest 5% are sufficient",
            difficulty.PAPER,
            f"training on the hardest 5% alone comes within {margin:g} points of all negatives",
            DELTA,
            vd.above(-margin),
            " pts",
        ),
        "all but": vd.Claim(
            "hardest 0.1% are unnecessary",
            difficulty.PAPER,
            "removing the hardest 0.1% does not hurt",
            DELTA,
            vd.above(-margin),
            " pts",
        ),
    }


def _family(name: str) -> str | None:
    t = parse_treatment("treatment", name)
    if t.kind == "band":
        if t.band == (0.0, 0.05):
            return "hardest"
        return "all but" if t.band == (0.001, 1.0) else None
    return {"oracle": "oracle", "debiased": "debiased", "hard": "hard"}.get(t.kind)


def claims(T: dict[str, Any], margin: float = difficulty.PAPER_MARGIN) -> pd.DataFrame:
    """One verdict row per (bench, treatment) that a paper makes a claim about (:func:`paper_
    claims`; other bands are shown, not judged), decided by the book's one rule."""
    C = paper_claims(margin)
    rows = []
    for r in T["summary"].itertuples():
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
        rows.append({**row, "bench": r.bench, "treatment": r.treatment})
    return vd.verdict_table(rows)


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
