"""Chapter 2's claims (Cai & Frankle 2020) as the chapter tests them, and their verdicts.

The authors softened their claims between versions of the paper. The chapter scores the latest
abstract's wording (as the study's notes quote it): the hardest 5% "were both necessary and
sufficient for the downstream task to reach nearly full accuracy", the easiest 95% "were
unnecessary and insufficient", and the very hardest 0.1% "were unnecessary and sometimes
detrimental". "Nearly full" is read as within 0.7 points of all negatives, the paper's ImageNet
result for the hardest 5% as the notes report it; the temperatures are the chapter's.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from negatives import config as cfg
from negatives import verdicts as vd
from negatives.chapters.difficulty.design import MARGIN
from negatives.regimes import REFERENCE
from negatives.stats import share_of_gain

# The paper's claims as this chapter tests them (negatives.verdicts decides them).
PAPER = "Cai & Frankle (2020)"


DELTA = "Δ linear-probe accuracy vs all negatives, paired by seed"


# The latest abstract's words that the statements quote.
NEARLY_FULL = "nearly full accuracy"
SOMETIMES = "sometimes"


def paper_claims(margin: float = MARGIN) -> dict[str, vd.Claim]:
    """The chapter's claims, keyed by the short names the verdict table uses.

    The statements quote the paper's latest abstract; ``margin`` (points) reads its "nearly
    full accuracy" (the paper's ImageNet result for the hardest 5%, within 0.7 points, as the
    study's notes report it).
    """
    return {
        "hardest 5% are sufficient": vd.Claim(
            "hardest 5% are sufficient",
            PAPER,
            f'the hardest 5% are "sufficient for the downstream task to reach {NEARLY_FULL}" '
            f"(read: within {margin:g} points of all negatives)",
            DELTA,
            vd.above(-margin),
            " pts",
        ),
        "easiest 95% are insufficient": vd.Claim(
            "easiest 95% are insufficient",
            PAPER,
            'the easiest 95% "were unnecessary and insufficient": without the hardest 5%, accuracy '
            "falls clearly below all negatives",
            DELTA,
            vd.below(-margin),
            " pts",
        ),
        "hardest 0.1% are unnecessary": vd.Claim(
            "hardest 0.1% are unnecessary",
            PAPER,
            'the very hardest 0.1% "were unnecessary": removing them does not clearly hurt',
            DELTA,
            vd.above(-margin),
            " pts",
        ),
        "hardest 0.1% are sometimes detrimental": vd.Claim(
            "hardest 0.1% are sometimes detrimental",
            PAPER,
            f'the very hardest 0.1% were "{SOMETIMES} detrimental": removing them helps in at '
            "least one of the settings tested",
            DELTA,
            vd.above(0.0),
            " pts",
            any_setting=True,
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


# The claims read from "sometimes" (Claim.any_setting): judged per setting (temperature), each
# holds where at least one setting reproduces it (:func:`at_least_one`).
SOMETIMES_CLAIMS: tuple[str, ...] = tuple(n for n, c in paper_claims().items() if c.any_setting)


# -- the share of the gain over a random encoder that a condition keeps ------------------------


def format_share(share: float, low: float = math.nan, high: float = math.nan) -> str:
    """A share of the gain (a fraction) for the page: ``"98.7% [96.1%, 101.2%]"``, ``"98.7%
    (no interval)"`` without one, ``"98.7%"`` for the interval ``[x, x]``, ``"n/a"`` without a
    share."""

    def pct(x: float) -> str:
        return f"{100 * x:.1f}%".replace("-", "−")

    if not math.isfinite(share):
        return "n/a"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{pct(share)} (no interval)"
    if low == high == share:  # every seed the same: as negatives.verdicts.format_interval
        return pct(share)
    return f"{pct(share)} [{pct(low)}, {pct(high)}]"


def share_columns(
    estimate: float,
    seeds: tuple[float, float],
    decisive: tuple[float, float],
    gain: float,
) -> dict[str, Any]:
    """The share-of-gain columns of one verdict row of a paired difference Δ (points):
    ``gain`` (G, points), ``share`` = 1 + Δ / G (:func:`negatives.stats.share_of_gain`),
    ``share_low`` / ``share_high`` mapped from the row's decisive interval ``decisive`` (its
    ``low`` / ``high``), and as text ``share_ours`` (from the interval over ``seeds``, beside
    the row's ``ours``) and ``share_both`` (from ``decisive``, beside ``both``). G is held at
    its mean: the intervals are Δ's, mapped; NaN (``"n/a"``) where G is not positive."""
    share, s_low, s_high, d_low, d_high = (
        float(share_of_gain(x, gain)) for x in (estimate, *seeds, *decisive)
    )
    return {
        "gain": float(gain),
        "share": share,
        "share_low": d_low,
        "share_high": d_high,
        "share_ours": format_share(share, s_low, s_high),
        "share_both": format_share(share, d_low, d_high),
    }


# The share-of-gain columns of a verdict row (:func:`share_columns`), empty on a row of no Δ.
NO_SHARE: dict[str, Any] = {
    "gain": math.nan,
    "share": math.nan,
    "share_low": math.nan,
    "share_high": math.nan,
    "share_ours": "",
    "share_both": "",
}
SHARE_COLUMNS: tuple[str, ...] = tuple(NO_SHARE)


def add_shares(summary: pd.DataFrame, random_accuracy: float) -> pd.DataFrame:
    """``summary`` (:func:`summarize_conditions`) with the share of the gain over a random
    encoder that each condition keeps.

    ``gain``: G = the mean linear-probe accuracy with all negatives (group ``main``) at the
    row's temperature − ``random_accuracy`` (the random encoder's probe, points); ``share``,
    ``share_low``, ``share_high`` = 1 + Δ / G of ``diff_mean``, ``diff_low``, ``diff_high``
    (the interval over seeds mapped, G held at its mean), and ``share_test_low`` /
    ``share_test_high`` of the test set's interval where ``summary`` has it. NaN where G is not
    positive or there is no reference at the temperature.
    """
    out = summary.copy()
    ref = summary[(summary["group"] == "main") & (summary["condition"] == REFERENCE)]
    top = ref.groupby("temperature")["mean"].mean()
    out["gain"] = out["temperature"].map(top).astype(float) - float(random_accuracy)
    pairs = [("share", "diff_mean"), ("share_low", "diff_low"), ("share_high", "diff_high")]
    if "diff_test_low" in out:
        pairs += [("share_test_low", "diff_test_low"), ("share_test_high", "diff_test_high")]
    for name, column in pairs:
        out[name] = share_of_gain(out[column].to_numpy(dtype=float), out["gain"].to_numpy())
    return out


def at_least_one(table: pd.DataFrame, claim: str) -> str:
    """The verdict of a "sometimes" claim over its settings (rows of ``table`` named
    ``claim``): :func:`negatives.verdicts.at_least_one` of their verdicts."""
    return vd.at_least_one(vd.counts(table[table["claim"] == claim]))


def claims(T: dict[str, Any], *, margin: float = MARGIN) -> pd.DataFrame:
    """One row per claim of Cai & Frankle (2020) and temperature (:mod:`negatives.verdicts`).

    ``T`` holds (as :func:`run` returns them):

    * ``summary``: :func:`summarize_conditions` (needs ``group, condition, temperature,
      diff_mean, diff_low, diff_high`` for the ``main`` group, and uses ``diff_test_low/high``
      where present); Δ = condition − all negatives, paired by seed, in accuracy points; with
      :func:`add_shares`' ``gain`` column, each Δ row also gets :func:`share_columns` (the share
      of the gain over a random encoder it keeps; NaN and ``""`` on the other rows);
    * ``same_class`` (optional): :func:`negatives.hardness.same_class_summary`;
    * ``consistency_summary`` (optional): :func:`negatives.hardness.consistency_summary`.

    ``margin``: "as good as all negatives" means Δ > −margin: the chapter's reading of the
    paper's "nearly full accuracy" (its ImageNet result, as the study's notes report it).

    Regions (see :func:`paper_claims`): hardest 5% sufficient, Δ > −margin; easiest 95%
    insufficient, Δ < −margin; the hardest 0.1% unnecessary, Δ(all but the hardest 0.1%) >
    −margin, and sometimes detrimental, Δ > 0, both judged at every temperature (the
    "sometimes" claim holds where at least one setting reproduces it: :func:`at_least_one`);
    hard negatives more often same-class, excess of the hardest 5% over the base rate > 0;
    consistent hardness, variance ratio over the shuffled null > 1.
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
        is_delta = columns[0] == "diff_mean"
        test = None
        if "diff_test_low" in r.index and is_delta:
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
        share = NO_SHARE
        if is_delta:
            gain = float(r["gain"]) if "gain" in r.index else math.nan
            share = share_columns(mean, (low, high), (row["low"], row["high"]), gain)
        rows.append({**row, "key": name, "temperature": t, **share})

    delta = ("diff_mean", "diff_low", "diff_high")
    for name, condition in (
        ("hardest 5% are sufficient", "hardest 5%"),
        ("easiest 95% are insufficient", "easiest 95%"),
        ("hardest 0.1% are unnecessary", "all but hardest 0.1%"),
        ("hardest 0.1% are sometimes detrimental", "all but hardest 0.1%"),
    ):
        for t in temps:
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
