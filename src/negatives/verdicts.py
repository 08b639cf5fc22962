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

A row is of one of two kinds (:data:`KINDS`): a paper's **claim**, or a **check** of our own
estimates (a theorem that any correct estimate obeys, an optimiser that must agree with itself):
decided by the same rule, but no evidence for or against a paper, so the book counts and lists
them apart (:func:`of_kind`, :func:`count_numbers`). The introduction shows the papers' claims
in one short table (:func:`headline`, one row per claim over its settings, :func:`paper_rows`)
and every verdict grouped by chapter (:func:`by_chapter`, :func:`readable`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
INCONCLUSIVE = "inconclusive"
VERDICTS: tuple[str, ...] = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE)

# What a verdict is about: a paper's claim, or a check of our own estimates.
CLAIM = "claim"
CHECK = "check"
KINDS: tuple[str, ...] = (CLAIM, CHECK)

# The columns of every chapter's verdict table, in order.
COLUMNS: tuple[str, ...] = (
    "claim",
    "kind",
    "any_setting",
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
    ``unit``: appended to numbers (``" pts"``); ``digits``: decimals when printed; ``kind``:
    :data:`CLAIM` (a paper's claim) or :data:`CHECK` (a check of our own estimates, such as a
    theorem any correct estimate obeys: decided by the same rule, counted apart);
    ``any_setting``: the claim says something happens "sometimes", so over its settings it
    holds where at least one setting reproduces it (:func:`at_least_one`).
    """

    name: str
    paper: str
    statement: str
    quantity: str
    region: Region
    unit: str = ""
    digits: int = 2
    kind: str = CLAIM
    any_setting: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind={self.kind!r} must be one of {list(KINDS)}")


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
        "kind": claim.kind,
        "any_setting": claim.any_setting,
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
        if row["kind"] not in KINDS:
            raise ValueError(f"rows[{i}].kind={row['kind']!r} is not one of {list(KINDS)}")
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
    # the book's headline (:func:`headline`): a claim over its settings
    "estimate": "first setting (95%)",
}
# The book's palette (negatives.show): blue and vermillion stay apart for colour-blind readers,
# and the bold weight tells the two decided verdicts from the grey inconclusive in grayscale.
_CSS = {
    REPRODUCED: "color: #0072B2; font-weight: bold",
    NOT_REPRODUCED: "color: #D55E00; font-weight: bold",
}


# What a chapter's own verdict table shows (the summary adds the chapter and the paper).
CHAPTER_SHOWN: tuple[str, ...] = tuple(
    k for k in SHOWN if k not in ("chapter", "paper", "estimate")
)
# What the introduction's headline table shows of :func:`paper_rows`.
HEADLINE_SHOWN: tuple[str, ...] = ("claim", "verdict", "estimate")


def verdict_css(verdict: str) -> str:
    """The CSS of a verdict's cell on a page (the book's colours; grey for inconclusive). A
    claim's verdict over its settings (:func:`settings_verdict`) takes the colour of the one
    verdict of all its settings (``"reproduced (all 3)"``); a mixed one is grey."""
    for v, css in _CSS.items():
        if verdict == v or verdict.startswith(f"{v} ("):
            return css
    return "color: #595959"


def styled(
    table: pd.DataFrame,
    caption: str,
    columns: Iterable[str] = CHAPTER_SHOWN,
    *,
    empty: str = "none: the runs these parameters ask for touch none of the papers' claims",
) -> Any:
    """A verdict table as the book shows it (a :class:`negatives.show.Table`): the ``columns``
    (keys of :data:`SHOWN`) under their readers' headers, verdicts coloured, seed counts as
    integers (blank where none); a table without rows is one row that says ``empty``."""
    from negatives import show

    columns = list(columns)
    unknown = sorted(set(columns) - set(SHOWN))
    if unknown:
        raise ValueError(f"columns: unknown {unknown}; allowed: {list(SHOWN)}")

    def count(v: Any) -> str:
        return "" if v is None or v != v else f"{int(v)}"

    if table.empty:  # a valid choice of runs that touches no claim: the page says so
        table = pd.DataFrame([{c: empty if c == columns[0] else None for c in columns}])

    formats = {c: count if c in ("seeds", "to_decide") else "text" for c in columns}
    return show.table(
        table,
        caption,
        columns={c: SHOWN[c] for c in columns},
        formats=formats,
        css={SHOWN["verdict"]: verdict_css} if "verdict" in columns else None,
    )


def counts(table: pd.DataFrame) -> dict[str, int]:
    """How many rows of a verdict table have each verdict (every verdict present, maybe 0)."""
    if "verdict" not in table.columns:  # an empty summary: no chapter executed
        return dict.fromkeys(VERDICTS, 0)
    found = table["verdict"].value_counts()
    return {v: int(found.get(v, 0)) for v in VERDICTS}


def of_kind(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    """The rows of a verdict table (or of the book's summary) of one :data:`KINDS`, in order;
    a table without a ``kind`` column (read from a build before checks were marked) holds
    claims only."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} must be one of {list(KINDS)}")
    if "kind" not in table.columns:
        return table if kind == CLAIM else table.iloc[:0]
    return table[table["kind"] == kind]


def count_numbers(prefix: str, table: pd.DataFrame, kind: str | None = None) -> dict[str, int]:
    """A page's glue values for its verdict counts: ``<prefix>_n_verdicts``, ``_n_rep``,
    ``_n_notrep`` and ``_n_inc``: of every row, or of the rows of one ``kind``
    (:func:`of_kind`: :data:`CLAIM` or :data:`CHECK`)."""
    if kind is not None:
        table = of_kind(table, kind)
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
    "claim", "kind", "any_setting", "paper", "statement", "setting", "ours", "test_set", "both",
    "seeds", "verdict",
)  # fmt: skip


def records(table: pd.DataFrame) -> str:
    """A verdict table as JSON records of :data:`RECORD_COLUMNS` (a chapter glues it; the
    introduction reads every chapter's and shows them in one table)."""
    return table[list(RECORD_COLUMNS)].to_json(orient="records", force_ascii=False)


# ---------------------------------------------------------------------------------------------
# the book's summary, as the introduction shows it


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``"1 setting"``, ``"3 settings"`` (``many``: the plural where it is not ``noun + "s"``)."""
    return f"{n} {noun if n == 1 else many or noun + 's'}"


def and_list(items: Iterable[Any]) -> str:
    """Items as a sentence says them: ``"15, 63 and 255"``, ``"a and b"``, ``"a"`` (floats
    without trailing zeros: ``1.0`` is ``"1"``)."""
    words = [_threshold(x) if isinstance(x, float) else str(x) for x in items]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def at_least_one(found: Mapping[str, int]) -> str:
    """The verdict of a "sometimes" claim over its settings, from the count of each verdict:
    reproduced if at least one setting is, not reproduced if every setting is not,
    inconclusive otherwise (and where no setting was tested)."""
    if found.get(REPRODUCED, 0):
        return REPRODUCED
    if found.get(NOT_REPRODUCED, 0) and not found.get(INCONCLUSIVE, 0):
        return NOT_REPRODUCED
    return INCONCLUSIVE


def settings_verdict(found: Mapping[str, int], *, any_setting: bool = False) -> str:
    """A claim's verdict over its settings, from the count of each verdict: ``"reproduced"``
    (one setting), ``"reproduced (both)"``, ``"not reproduced (all 3)"`` where every setting
    has the same verdict, else ``"2 of 4 reproduced, 1 not, 1 inconclusive"`` (the first
    verdict present leads). ``any_setting`` (a claim that something happens "sometimes"):
    reproduced where at least one setting is (``"reproduced (1 of 2 settings)"``)."""
    present = [v for v in VERDICTS if found.get(v, 0)]
    if not present:
        raise ValueError(f"settings_verdict: no setting counted in {dict(found)}")
    n = sum(found.get(v, 0) for v in VERDICTS)
    if any_setting and at_least_one(found) == REPRODUCED and len(present) > 1:
        return f"{REPRODUCED} ({found[REPRODUCED]} of {n} settings)"
    if len(present) == 1:
        return present[0] if n == 1 else f"{present[0]} ({'both' if n == 2 else f'all {n}'})"
    short = {REPRODUCED: REPRODUCED, NOT_REPRODUCED: "not", INCONCLUSIVE: INCONCLUSIVE}
    first, *rest = present
    return ", ".join([f"{found[first]} of {n} {first}", *(f"{found[v]} {short[v]}" for v in rest)])


_CITATION = re.compile(r"[A-Z][^()]*?\(\d{4}\)")


def cited_paper(paper: str) -> str:
    """The paper a verdict's ``paper`` cell cites, without what the book adds to it:
    ``"Awasthi, Dikkala & Kamath (2022)"`` for ``"third-party summary of Awasthi, Dikkala &
    Kamath (2022)"`` or ``"... (2022), as we reconstruct it"``; the cell itself where it names
    no ``Authors (year)``."""
    found = _CITATION.search(paper)
    return found.group(0) if found else paper


def _by_claim(table: pd.DataFrame) -> pd.DataFrame:
    """The rows grouped by claim: by the paper they cite (in order of first appearance), then
    by the paper cell, then by claim, each row's own order kept within its claim."""
    t = table.reset_index(drop=True)
    keys = pd.DataFrame(
        {
            "cited": pd.factorize(t["paper"].map(cited_paper))[0],
            "paper": pd.factorize(t["paper"])[0],
            "claim": pd.factorize(t["paper"] + "\0" + t["claim"])[0],
            "row": range(len(t)),
        }
    )
    return t.loc[keys.sort_values(["cited", "paper", "claim", "row"]).index].reset_index(drop=True)


def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


# The columns of :func:`headline`.
HEADLINE_COLUMNS: tuple[str, ...] = (
    "paper", "claim", "verdict", "estimate", "settings", "setting", "chapter",
    "n_rep", "n_notrep", "n_inc",
)  # fmt: skip


def headline(table: pd.DataFrame) -> pd.DataFrame:
    """The papers' claims, one row per (paper, claim), checks of our estimates left out:
    grouped by the paper they cite (:func:`cited_paper`) in the order the table first names
    them, then in the table's order. ``verdict``: over every setting of the claim
    (:func:`settings_verdict`); ``estimate``: the first setting's, with its 95% interval (the
    one that decides: ``both`` where the row has it, else ``ours``), ``setting`` that setting;
    ``settings``: how many; ``chapter``: the first setting's chapter (where ``table`` has
    that column, as :func:`negatives.glue.verdict_summary`'s does); ``n_rep``, ``n_notrep``,
    ``n_inc``: the verdicts' counts. ``table``: a verdict table, or the book's summary."""
    claims = of_kind(table, CLAIM)
    if not len(claims):
        return pd.DataFrame(columns=list(HEADLINE_COLUMNS))
    rows = []
    for (paper, claim), g in _by_claim(claims).groupby(["paper", "claim"], sort=False):
        first, found = g.iloc[0], counts(g)
        rows.append(
            {
                "paper": paper,
                "claim": claim,
                "verdict": settings_verdict(found, any_setting=_any_setting(g)),
                "estimate": _text(first.get("both")) or _text(first.get("ours")),
                "settings": len(g),
                "setting": _text(first.get("setting")),
                "chapter": _text(first.get("chapter")),
                "n_rep": found[REPRODUCED],
                "n_notrep": found[NOT_REPRODUCED],
                "n_inc": found[INCONCLUSIVE],
            }
        )
    return pd.DataFrame(rows, columns=list(HEADLINE_COLUMNS))


def _any_setting(rows: pd.DataFrame) -> bool:
    """Whether a claim's rows hold where any setting does (:attr:`Claim.any_setting`; a
    record from a build before the column existed says no)."""
    return "any_setting" in rows.columns and bool(rows["any_setting"].fillna(False).any())


def grouped(table: pd.DataFrame, kind: str = CLAIM) -> pd.DataFrame:
    """The rows of one ``kind`` (:func:`of_kind`) of the book's summary
    (:func:`negatives.glue.verdict_summary`), chapter by chapter in reading order, each
    chapter's rows grouped by claim as in :func:`headline` (every setting of a claim
    together)."""
    rows = of_kind(table, kind).reset_index(drop=True)
    if not len(rows) or "chapter" not in rows.columns:
        return _by_claim(rows)
    parts = [_by_claim(g) for _, g in rows.groupby("chapter", sort=False)]
    return pd.concat(parts, ignore_index=True)


def by_chapter(table: pd.DataFrame, kind: str = CLAIM) -> list[tuple[str, pd.DataFrame]]:
    """:func:`grouped` as one table per chapter: ``(chapter, its rows)``, in reading order;
    chapters with no row of the kind are left out."""
    rows = grouped(table, kind)
    if not len(rows):
        return []
    if "chapter" not in rows.columns:
        raise ValueError("by_chapter: the table has no chapter column (verdict_summary's has)")
    return [(str(ch), g.reset_index(drop=True)) for ch, g in rows.groupby("chapter", sort=False)]


def chapter_caption(chapter: str, rows: pd.DataFrame) -> str:
    """The caption of one chapter's table of :func:`by_chapter`: ``"Bounds against the number
    of negatives (4 claims in 18 settings)"``."""
    claims = rows[["paper", "claim"]].drop_duplicates()
    counted = f"{plural(len(claims), 'claim')} in {plural(len(rows), 'setting')}"
    return f"{chapter_title(chapter)} ({counted})"


def without_repeats(table: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``table`` with a cell of ``columns`` blank where it repeats the row above, the columns
    taken as nested groups: the second column's cell is blank only where the first's is too
    (a claim's name repeats within one paper, not across two)."""
    out = table.reset_index(drop=True).astype({c: object for c in columns})
    original = out.copy()
    same = pd.Series(True, index=out.index)
    for c in columns:
        same &= original[c].eq(original[c].shift())
        out.loc[same, c] = ""
    return out


def chapter_title(cell: str) -> str:
    """A summary's ``chapter`` cell without its link: the page's title."""
    return re.sub(r"<[^>]+>", "", cell)


def readable(table: pd.DataFrame, groups: Sequence[str] = ("paper", "claim")) -> pd.DataFrame:
    """A table of :func:`headline`, :func:`grouped` or :func:`by_chapter` made for reading
    through :func:`styled`: each ``claim`` a link to its row's chapter (where the ``chapter``
    cell holds a link, as :func:`negatives.glue.verdict_summary`'s does), then the ``groups``
    written once per group (:func:`without_repeats`)."""
    out = table.reset_index(drop=True)
    if "chapter" in out.columns and "claim" in out.columns:
        out = out.astype({"claim": object})
        for i, (claim, chapter) in enumerate(zip(out["claim"], out["chapter"], strict=True)):
            found = re.search(r'href="([^"]+)"', _text(chapter))
            if claim and found:
                out.loc[i, "claim"] = f'<a href="{found.group(1)}">{claim}</a>'
    return without_repeats(out, [g for g in groups if g in out.columns])


def paper_rows(head: pd.DataFrame) -> pd.DataFrame:
    """:func:`headline`'s table as the page shows it through :func:`styled` (columns
    :data:`HEADLINE_SHOWN`): a row naming each paper (in bold) above its claims, each claim a
    link to its chapter (:func:`readable`), each estimate kept on one line on the page (the PDF,
    which drops the markup, breaks it where its column needs)."""
    rows: list[dict[str, Any]] = []
    blank = dict.fromkeys(HEADLINE_COLUMNS, "")
    cited = head["paper"].map(cited_paper)
    for paper, g in head.groupby(cited, sort=False):
        rows.append({**blank, "paper": paper, "claim": f"<b>{paper}</b>"})
        for row in g.to_dict("records"):
            estimate = f'<span style="white-space: nowrap">{row["estimate"]}</span>'
            # what the book adds to the citation ("as we reconstruct it", "third-party
            # summary of"), said beside the claim under the paper's one row
            extra = " ".join(row["paper"].replace(paper, " ").split()).strip(" ,")
            extra = extra.replace("(", "").replace(")", "")
            extra = f"from a {extra.removesuffix(' of')}" if extra.endswith(" of") else extra
            claim = f"{row['claim']} ({extra})" if extra else row["claim"]
            rows.append({**row, "claim": claim, "estimate": estimate})
    return readable(pd.DataFrame(rows, columns=list(HEADLINE_COLUMNS)), groups=())


def summary_sentence(table: pd.DataFrame) -> str:
    """What the book's summary counts, as the introduction says it: the papers' claims, the
    settings they are decided in and the verdicts, then the checks of our estimates apart
    (left out where there is none)."""
    claims, checks = of_kind(table, CLAIM), of_kind(table, CHECK)
    n = len(headline(table))
    if not len(claims) and not len(checks):
        return "No chapter with verdicts was executed in this build."
    text = (
        f"The book decides {plural(n, 'claim')} of the papers in "
        f"{plural(len(claims), 'setting')}: {verdict_counts(counts(claims))} at this scale."
    )
    if len(checks):
        tests = "tests" if len(checks) == 1 else "test"
        text += (
            f" Apart from these it makes {plural(len(checks), 'check')} of its own estimates, "
            f"which {tests} no paper's claim: {verdict_counts(counts(checks))}."
        )
    return text


def verdict_counts(found: Mapping[str, int]) -> str:
    """``"25 reproduced, 7 not reproduced and 11 inconclusive"``; ``"all 7 reproduced"``,
    ``"both reproduced"``; the verdict alone for one row; ``"none"`` for no row."""
    n = sum(found.values())
    present = [v for v in VERDICTS if found.get(v, 0)]
    if not present:
        return "none"
    if len(present) == 1:
        return present[0] if n == 1 else f"{'both' if n == 2 else f'all {n}'} {present[0]}"
    return and_list(f"{found[v]} {v}" for v in present)
