"""One verdict rule for the whole book: reproduced, not reproduced, inconclusive.

A claim of a paper becomes a statement about one quantity we measure (a paired difference of
accuracies, a slope against log2 K, a ratio to a null, a distance at an optimum): the claim
holds where the quantity lies in the claim's **region**, an open interval ``(low, high)``
(above a threshold, below it, or between two). Our estimate comes with a 95% interval. The
rule is symmetric:

* **reproduced**: the whole interval lies inside the region;
* **not reproduced**: the whole interval lies outside it;
* **inconclusive**: the interval straddles a boundary of the region, or there is no interval
  (fewer than two seeds).

Two sources of uncertainty: training (the interval over seeds) and the test set every seed is
scored on (resampling its images). A test set of 10,000 images shared by every seed is one
sample: seeds that happen to agree give a narrow interval over seeds that says nothing about
it. Where a chapter measures both, the verdict is decided on :func:`both_sources`, the two 95%
half-widths added in quadrature on each side, never narrower than either.

Exact computations (the population optimum, a minimum over all runs) have a degenerate
interval ``[x, x]`` and are decided by the same rule. Infinite ends are allowed (an upper bound
that is infinite in every seed has the interval ``[inf, inf]``); NaN is not an interval.

:func:`judge` turns a :class:`Claim` and an estimate into one row of a chapter's verdict
table; :func:`verdict_table` makes the table; :func:`format_interval` is the book's one way of
writing an estimate with its interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
VERDICTS: tuple[str, ...] = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)

# The columns of every chapter's verdict table, in order.
COLUMNS: tuple[str, ...] = (
    "claim",
    "paper",
    "statement",
    "setting",
    "quantity",
    "estimate",
    "low",
    "high",
    "ours",
    "test_set",
    "both",
    "seeds",
    "rule",
    "verdict",
    "to_decide",
    "undecided",
)


@dataclass(frozen=True)
class Region:
    """Where a claim holds: the open interval ``(low, high)`` of its quantity."""

    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self) -> None:
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
                raise ValueError(f"{name}={value!r} must be a number (±inf allowed)")
        if not self.low < self.high:
            raise ValueError(f"low={self.low} must be < high={self.high}")
        if math.isinf(self.low) and math.isinf(self.high):
            raise ValueError("a region must have at least one finite boundary")

    def describe(self, unit: str = "") -> str:
        """``"> -0.7 pts"``, ``"< 0"``, ``"in (-1, 1)"``."""
        if math.isinf(self.high):
            return f"> {_threshold(self.low)}{unit}"
        if math.isinf(self.low):
            return f"< {_threshold(self.high)}{unit}"
        return f"in ({_threshold(self.low)}, {_threshold(self.high)}){unit}"


def above(threshold: float) -> Region:
    """The claim holds where the quantity exceeds ``threshold``."""
    return Region(low=threshold)


def below(threshold: float) -> Region:
    """The claim holds where the quantity is below ``threshold``."""
    return Region(high=threshold)


def between(low: float, high: float) -> Region:
    """The claim holds where the quantity lies strictly between ``low`` and ``high``."""
    return Region(low=low, high=high)


def decide(low: float, high: float, region: Region) -> str:
    """The verdict of a 95% interval ``[low, high]`` against a claim's ``region``.

    Reproduced if ``region.low < low`` and ``high < region.high`` (inside; an infinite end of
    the region is no boundary, so ``[inf, inf]`` is inside ``(0, inf)``); not reproduced if
    ``high <= region.low`` or ``low >= region.high`` (outside, touching a boundary counts as
    outside); inconclusive otherwise, and when either end is NaN.
    """
    if not isinstance(region, Region):
        raise ValueError(f"region={region!r} must be a Region (above, below or between)")
    if math.isnan(low) or math.isnan(high):
        return INCONCLUSIVE
    if low > high:
        raise ValueError(f"low={low} must be <= high={high}")
    # an infinite side of the region has no boundary: an infinite estimate lies inside it
    above_low = region.low == -math.inf or region.low < low
    below_high = region.high == math.inf or high < region.high
    if above_low and below_high:
        return REPRODUCED
    if high <= region.low or (region.high < math.inf and low >= region.high):
        return NOT_REPRODUCED
    return INCONCLUSIVE


@dataclass(frozen=True)
class Claim:
    """A paper's claim, as the book tests it.

    ``name``: a short label (a table row); ``paper``: who claims it; ``statement``: what the
    paper says, in our words (never a number we have not read in it); ``quantity``: what we
    measure, with its unit; ``region``: where the quantity must lie for the claim to hold;
    ``unit``: appended to numbers (``" pts"``); ``digits``: decimals when printed.
    """

    name: str
    paper: str
    statement: str
    quantity: str
    region: Region
    unit: str = ""
    digits: int = 2


def both_sources(
    estimate: float, seeds: tuple[float, float], test_set: tuple[float, float]
) -> tuple[float, float]:
    """The 95% interval of ``estimate`` that carries both sources of uncertainty: the interval
    over seeds (training) and the test set's (its images resampled), their half-widths added in
    quadrature on each side: ``low = estimate - sqrt((estimate - seeds_low)^2 + (estimate -
    test_low)^2)``, and likewise ``high``.

    Independent errors add in variance; each half-width is its source's 95% quantile, so the sum
    is at least as wide as either interval alone. NaN where either interval is missing.
    """
    e = float(estimate)
    (s_low, s_high), (t_low, t_high) = seeds, test_set
    if any(math.isnan(v) for v in (e, s_low, s_high, t_low, t_high)):
        return math.nan, math.nan
    low = e - math.hypot(e - s_low, e - t_low)
    high = e + math.hypot(s_high - e, t_high - e)
    return low, high


def judge(
    claim: Claim,
    estimate: float,
    low: float,
    high: float,
    *,
    setting: str = "",
    seeds: int | None = None,
    test_set: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One row of a verdict table: the claim, our estimate and intervals, and the verdict.

    ``[low, high]``: the 95% interval over seeds (or exact). ``test_set``: the evaluation's own
    95% interval of the same estimate (resampling the test images,
    :func:`negatives.stats.paired_bootstrap`). Where it is given, the verdict is decided on
    :func:`both_sources` (column ``both``; ``low`` and ``high`` of the row are that interval),
    else on the interval over seeds.
    """
    estimate, seed_low, seed_high = float(estimate), float(low), float(high)
    if test_set is not None:
        low, high = both_sources(estimate, (seed_low, seed_high), test_set)
    u, d = claim.unit, claim.digits
    return {
        "claim": claim.name,
        "paper": claim.paper,
        "statement": claim.statement,
        "setting": setting,
        "quantity": claim.quantity,
        "estimate": estimate,
        "low": low,
        "high": high,
        "ours": format_interval(estimate, seed_low, seed_high, u, d),
        "test_set": ""
        if test_set is None
        else format_interval(estimate, *test_set, u, d, with_estimate=False),
        "both": "" if test_set is None else format_interval(estimate, low, high, u, d),
        "seeds": seeds,
        "rule": f"reproduced if the interval is {claim.region.describe(claim.unit)}",
        "verdict": decide(low, high, claim.region),
        "to_decide": seeds_to_decide(
            estimate, seed_low, seed_high, seeds, claim.region, test_set=test_set
        ),
        "undecided": undecided_reason(estimate, low, high, seeds, claim.region, test_set),
    }


def seeds_to_decide(
    estimate: float,
    low: float,
    high: float,
    seeds: int | None,
    region: Region,
    confidence: float = 0.95,
    max_seeds: int = 1000,
    *,
    test_set: tuple[float, float] | None = None,
) -> int | None:
    """How many seeds an inconclusive interval would need to decide, if nothing else changed.

    ``[low, high]`` is a Student-t ``confidence`` interval of a mean over ``seeds`` seeds; its
    spread is s = half-width x sqrt(n) / t(n-1). The answer is the smallest m > n with
    ``t(m-1) s / sqrt(m) < |estimate - b|``, b the region's boundary that the interval straddles
    (the budget that would make the interval clear it, were the mean and the spread the same).
    With ``test_set`` the verdict's interval is :func:`both_sources`: the test set's half-width
    on the boundary's side does not shrink with seeds, so m must satisfy
    ``sqrt((t(m-1) s / sqrt(m))^2 + h_test^2) < |estimate - b|``, and no number of seeds decides
    where h_test alone
    reaches the boundary (a larger test set would).
    None where the verdict is not inconclusive, there is no interval (fewer than two seeds),
    the estimate sits on the boundary, or more than ``max_seeds`` would be needed.
    """
    from scipy import stats as sps

    if seeds is None or seeds < 2:
        return None
    if not all(math.isfinite(v) for v in (estimate, low, high)):
        return None
    v_low, v_high = (
        (low, high) if test_set is None else both_sources(estimate, (low, high), test_set)
    )
    if decide(v_low, v_high, region) != INCONCLUSIVE:
        return None
    straddled = [b for b in (region.low, region.high) if math.isfinite(b) and v_low <= b <= v_high]
    if not straddled:
        return None
    b = min(straddled, key=lambda x: abs(estimate - x))
    distance = abs(estimate - b)
    test_half = 0.0
    if test_set is not None:  # the test set's half-width on the boundary's side
        test_half = abs(estimate - test_set[0] if b < estimate else test_set[1] - estimate)
    quantile = 0.5 + confidence / 2
    spread = (high - low) / 2 * math.sqrt(seeds) / float(sps.t.ppf(quantile, seeds - 1))
    if distance == 0 or test_half >= distance or (spread == 0 and test_half == 0):
        return None
    room = math.sqrt(distance**2 - test_half**2)  # what the seeds' half-width may take
    for m in range(seeds + 1, max_seeds + 1):
        if float(sps.t.ppf(quantile, m - 1)) * spread / math.sqrt(m) < room:
            return m
    return None


def undecided_reason(
    estimate: float,
    low: float,
    high: float,
    seeds: int | None,
    region: Region,
    test_set: tuple[float, float] | None = None,
) -> str:
    """Why more seeds alone would not decide an inconclusive verdict (``""`` where they would,
    or where it is decided): ``[low, high]`` is the verdict's interval, ``test_set`` the test
    set's own. The test set's half-width on the boundary's side does not shrink with seeds."""
    if decide(low, high, region) != INCONCLUSIVE:
        return ""
    if seeds is None or seeds < 2:
        return "one seed: no interval over seeds"
    bounds = [b for b in (region.low, region.high) if math.isfinite(b)]
    b = min(bounds, key=lambda x: abs(estimate - x)) if bounds else math.nan
    if not math.isfinite(estimate) or estimate == b:
        return "its estimate sits on the boundary"
    if test_set is not None:
        half = abs(estimate - test_set[0] if b < estimate else test_set[1] - estimate)
        if half >= abs(estimate - b):
            return "the test set's own interval reaches the boundary: a larger test set would"
    return ""


def verdict_table(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """The rows of :func:`judge` as a table with the book's columns (:data:`COLUMNS`), then any
    extra keys a chapter adds to select rows by (``data``, ``mode``, ``metric``, ...)."""
    rows = list(rows)
    extra = list(dict.fromkeys(k for row in rows for k in row if k not in COLUMNS))
    for i, row in enumerate(rows):
        missing = set(COLUMNS) - set(row)
        if missing:
            raise ValueError(f"rows[{i}] lacks {sorted(missing)}; build rows with judge()")
        if row["verdict"] not in VERDICTS:
            raise ValueError(f"rows[{i}].verdict={row['verdict']!r} is not one of {list(VERDICTS)}")
    return pd.DataFrame(rows, columns=[*COLUMNS, *extra])


# What a chapter's page shows of its verdict table, with the headers a reader sees.
SHOWN: dict[str, str] = {
    "chapter": "chapter",  # the book's summary: a link to the page that shows the claim
    "paper": "paper",
    "claim": "claim",
    "setting": "setting",
    "statement": "the paper says",
    "quantity": "quantity",
    "ours": "ours (95% over seeds, or exact)",
    "test_set": "test set (95%)",
    "both": "seeds and test set (95%, decides)",
    "seeds": "seeds",
    "rule": "rule",
    "verdict": "verdict",
    "to_decide": "seeds to decide",
}
# The book's palette (negatives.show): blue and vermillion stay apart for colour-blind readers,
# and the bold weight tells the two decided verdicts from the grey inconclusive in grayscale.
_CSS = {
    REPRODUCED: "color: #0072B2; font-weight: bold",
    NOT_REPRODUCED: "color: #D55E00; font-weight: bold",
}


# What a chapter's own verdict table shows (the summary adds the chapter and the paper).
CHAPTER_SHOWN: tuple[str, ...] = tuple(k for k in SHOWN if k not in ("chapter", "paper"))


def verdict_css(verdict: str) -> str:
    """The CSS of a verdict's cell on a page (the book's colours; grey for inconclusive)."""
    return _CSS.get(verdict, "color: #595959")


def styled(table: pd.DataFrame, caption: str, columns: Iterable[str] = CHAPTER_SHOWN) -> Any:
    """A verdict table as the book shows it (a :class:`negatives.show.Table`): the ``columns``
    (keys of :data:`SHOWN`) under their readers' headers, verdicts coloured, seed counts as
    integers (blank where none)."""
    from negatives import show

    columns = list(columns)
    unknown = sorted(set(columns) - set(SHOWN))
    if unknown:
        raise ValueError(f"columns: unknown {unknown}; allowed: {list(SHOWN)}")

    def count(v: Any) -> str:
        return "" if v is None or v != v else f"{int(v)}"

    if table.empty:  # a valid choice of runs that touches no claim: the page says so
        import pandas as pd

        note = "none: the runs these parameters ask for touch none of the papers' claims"
        table = pd.DataFrame([{c: note if c == columns[0] else None for c in columns}])

    formats = {c: count if c in ("seeds", "to_decide") else "text" for c in columns}
    return show.table(
        table,
        caption,
        columns={c: SHOWN[c] for c in columns},
        formats=formats,
        css={SHOWN["verdict"]: lambda v: _CSS.get(v, "color: #595959")}
        if "verdict" in columns
        else None,
    )


def counts(table: pd.DataFrame) -> dict[str, int]:
    """How many rows of a verdict table have each verdict (every verdict present, maybe 0)."""
    found = table["verdict"].value_counts()
    return {v: int(found.get(v, 0)) for v in VERDICTS}


def count_numbers(prefix: str, table: pd.DataFrame) -> dict[str, int]:
    """A page's glue values for its verdict counts: ``<prefix>_n_verdicts``, ``_n_rep``,
    ``_n_notrep`` and ``_n_inc``."""
    found = counts(table)
    short = {REPRODUCED: "rep", NOT_REPRODUCED: "notrep", INCONCLUSIVE: "inc"}
    return {
        f"{prefix}_n_verdicts": len(table),
        **{f"{prefix}_n_{short[v]}": found[v] for v in VERDICTS},
    }


def _number(x: float, digits: int = 2, signed: bool = False) -> str:
    """A number for the page: fixed decimals, two significant digits when smaller than that."""
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    sign = "+" if signed else ""
    if x != 0 and abs(x) < 10.0**-digits:
        text = f"{x:{sign}.2g}"
    else:
        text = f"{x:{sign}.{digits}f}"
    return text.replace("-", "−")


def _threshold(x: float) -> str:
    return "∞" if x == math.inf else "−∞" if x == -math.inf else f"{x:g}".replace("-", "−")


def format_interval(
    estimate: float,
    low: float,
    high: float,
    unit: str = "",
    digits: int = 2,
    *,
    with_estimate: bool = True,
) -> str:
    """``"−1.65 [−2.64, −0.66] pts"``; ``"n/a"`` without an estimate; ``"+0.31 (one seed)"``
    without an interval; ``with_estimate=False`` gives ``"[−2.64, −0.66] pts"``."""
    if math.isnan(estimate):
        return "n/a"
    head = _number(estimate, digits, signed=True) if with_estimate else ""
    if math.isnan(low) or math.isnan(high):
        return f"{head}{unit} (no interval)" if with_estimate else "n/a"
    if low == high == estimate:
        return f"{head}{unit}" if with_estimate else f"[{_number(low, digits, True)}]{unit}"
    interval = f"[{_number(low, digits, True)}, {_number(high, digits, True)}]"
    return f"{head} {interval}{unit}" if with_estimate else f"{interval}{unit}"


def format_number(x: float | None, spec: str = ".2f") -> str:
    """A number for a sentence: ``∞`` / ``−∞`` for infinities, ``–`` for a missing value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return format(x, spec)


# The columns of a verdict table that travel to the book's summary on its first page.
RECORD_COLUMNS: tuple[str, ...] = (
    "claim", "paper", "statement", "setting", "ours", "test_set", "both", "seeds", "verdict",
)  # fmt: skip


def records(table: pd.DataFrame) -> str:
    """A verdict table as JSON records of :data:`RECORD_COLUMNS` (a chapter glues it; the
    introduction reads every chapter's and shows them in one table)."""
    return table[list(RECORD_COLUMNS)].to_json(orient="records", force_ascii=False)
