"""Chapter 2's claims (Cai & Frankle 2020) as the chapter tests them, and their verdicts."""

from __future__ import annotations

from typing import Any

import pandas as pd

from negatives import config as cfg
from negatives import verdicts as vd
from negatives.chapters.difficulty.design import PAPER_MARGIN

# The paper's claims as this chapter tests them (negatives.verdicts decides them).
PAPER = "Cai & Frankle (2020)"


DELTA = "Δ linear-probe accuracy vs all negatives, paired by seed"


def paper_claims(margin: float = PAPER_MARGIN) -> dict[str, vd.Claim]:
    """The chapter's claims, keyed by the short names the verdict table uses."""
    return {
        "hardest 5% are sufficient": vd.Claim(
            "hardest 5% are sufficient",
            PAPER,
            f"training on the hardest 5% alone comes within {margin:g} points of all negatives",
            DELTA,
            vd.above(-margin),
            " pts",
        ),
        "easiest 95% are insufficient": vd.Claim(
            "easiest 95% are insufficient",
            PAPER,
            "training without the hardest 5% is clearly worse than all negatives",
            DELTA,
            vd.below(-margin),
            " pts",
        ),
        "hardest 0.1% are unnecessary": vd.Claim(
            "hardest 0.1% are unnecessary",
            PAPER,
            "removing the hardest 0.1% does not hurt",
            DELTA,
            vd.above(-margin),
            " pts",
        ),
        "removing the hardest 0.1% helps": vd.Claim(
            "removing the hardest 0.1% helps",
            PAPER,
            "removing the hardest 0.1% helps slightly at T = 0.07",
            DELTA,
            vd.above(0.0),
            " pts",
        ),
        "hard negatives are more often same-class": vd.Claim(
            "hard negatives are more often same-class",
            PAPER,
            "the hardest negatives are semantically closer to the query",
            "same-class rate of the hardest 5% − base rate (percentage points)",
            vd.above(0.0),
            " pp",
        ),
        "some negatives are consistently hard": vd.Claim(
            "some negatives are consistently hard",
            PAPER,
            "some negatives are hard for many queries, more than chance",
            "variance of per-key hardness counts / the shuffled null's",
            vd.above(1.0),
        ),
    }


def claims(T: dict[str, Any], *, margin: float = PAPER_MARGIN) -> pd.DataFrame:
    """One row per claim of Cai & Frankle (2020) and temperature (:mod:`negatives.verdicts`).

    ``T`` holds (as :func:`run` returns them):

    * ``summary``: :func:`summarize_conditions` (needs ``group, condition, temperature,
      diff_mean, diff_low, diff_high`` for the ``main`` group, and uses ``diff_test_low/high``
      where present); Δ = condition − all negatives, paired by seed, in accuracy points;
    * ``same_class`` (optional): :func:`negatives.hardness.same_class_summary`;
    * ``consistency_summary`` (optional): :func:`negatives.hardness.consistency_summary`.

    ``margin``: "as good as all negatives" means Δ > −margin (the paper's 0.7 points).

    Regions (see :func:`paper_claims`): hardest 5% sufficient, Δ > −margin; easiest 95%
    insufficient, Δ < −margin; hardest 0.1% unnecessary, Δ(all but the hardest 0.1%) > −margin;
    removing it helps at the lowest temperature (the paper's 0.07), Δ > 0; hard negatives more
    often same-class, excess of the hardest 5% over the base rate > 0; consistent hardness,
    variance ratio over the shuffled null > 1.
    """
    cfg.check_float("margin", margin, 0.0)
    C = paper_claims(margin)
    summary, same_class = T["summary"], T.get("same_class")
    consistency = T.get("consistency_summary")
    main = summary[summary["group"] == "main"].set_index(["condition", "temperature"])
    temps = sorted(main.index.get_level_values("temperature").unique())
    rows: list[dict[str, Any]] = []

    def add(
        name: str, r: pd.Series, t: float, columns: tuple[str, str, str], scale: float = 1.0
    ) -> None:
        test = None
        if "diff_test_low" in r.index and columns[0] == "diff_mean":
            test = (float(r["diff_test_low"]), float(r["diff_test_high"]))
        mean, low, high = (scale * float(r[c]) for c in columns)
        row = vd.judge(
            C[name],
            mean,
            low,
            high,
            setting=f"T = {t:g}",
            seeds=int(r["n"]) if "n" in r.index else None,
            test_set=test,
        )
        rows.append({**row, "key": name, "temperature": t})

    delta = ("diff_mean", "diff_low", "diff_high")
    for name, condition, ts in (
        ("hardest 5% are sufficient", "hardest 5%", temps),
        ("easiest 95% are insufficient", "easiest 95%", temps),
        ("hardest 0.1% are unnecessary", "all but hardest 0.1%", temps),
        ("removing the hardest 0.1% helps", "all but hardest 0.1%", temps[:1]),
    ):
        for t in ts:
            if (condition, t) in main.index:
                add(name, main.loc[(condition, t)], t, delta)
    for table, name, columns, scale in (
        (same_class, "hard negatives are more often same-class", "excess", 100.0),  # -> pp
        (consistency, "some negatives are consistently hard", "variance_ratio", 1.0),
    ):
        if table is not None:
            for _, r in table.sort_values("temperature").iterrows():
                cols = (f"{columns}_mean", f"{columns}_low", f"{columns}_high")
                add(name, r, float(r["temperature"]), cols, scale)
    return vd.verdict_table(rows)
