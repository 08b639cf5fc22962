"""The book's one verdict rule: every claim type, each of the three verdicts."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from negatives import verdicts as vd

INF = math.inf

# (region, interval inside, interval outside, interval straddling a boundary)
CASES = {
    "above a margin (hardest 5% sufficient: Δ > −0.7)": (
        vd.above(-0.7),
        (-0.5, 0.2),
        (-2.64, -0.71),
        (-1.0, -0.2),
    ),
    "below a margin (easiest 95% insufficient: Δ < −0.7)": (
        vd.below(-0.7),
        (-3.0, -1.0),
        (-0.5, 0.4),
        (-1.2, -0.3),
    ),
    "a direction (slope > 0)": (vd.above(0.0), (0.1, 0.9), (-0.8, -0.05), (-0.3, 0.4)),
    "two-sided (within ±1)": (vd.between(-1.0, 1.0), (-0.4, 0.6), (1.2, 2.0), (0.5, 1.5)),
    "a ratio to a null (> 1)": (vd.above(1.0), (1.5, 3.0), (0.6, 0.95), (0.9, 1.2)),
    "an exact value (tolerance 1e-4)": (vd.below(1e-4), (3e-7, 3e-7), (0.2, 0.2), None),
    "an infinite estimate (grows without bound)": (
        vd.above(0.0),
        (INF, INF),
        (-INF, -INF),
        (-1.0, INF),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_inside_outside_and_straddling(name: str) -> None:
    region, inside, outside, straddle = CASES[name]
    assert vd.decide(*inside, region) == vd.REPRODUCED
    assert vd.decide(*outside, region) == vd.NOT_REPRODUCED
    if straddle is not None:  # a point cannot straddle
        assert vd.decide(*straddle, region) == vd.INCONCLUSIVE


def test_the_rule_is_symmetric_about_the_boundary() -> None:
    # mirror images of an interval about the boundary get opposite verdicts
    for low, high in [(-2.64, -0.71), (-0.69, 0.5), (-5.0, -0.7000001)]:
        m = -0.7
        mirrored = (2 * m - high, 2 * m - low)
        a, b = vd.decide(low, high, vd.above(m)), vd.decide(*mirrored, vd.above(m))
        assert {a, b} == {vd.REPRODUCED, vd.NOT_REPRODUCED}


def test_touching_the_boundary_is_outside_and_nan_is_inconclusive() -> None:
    assert vd.decide(-2.0, -0.7, vd.above(-0.7)) == vd.NOT_REPRODUCED
    assert vd.decide(-0.7, 0.3, vd.above(-0.7)) == vd.INCONCLUSIVE
    assert vd.decide(math.nan, math.nan, vd.above(0)) == vd.INCONCLUSIVE
    assert vd.decide(0.2, math.nan, vd.above(0)) == vd.INCONCLUSIVE


def test_bad_intervals_and_regions_are_refused() -> None:
    with pytest.raises(ValueError, match="low"):
        vd.decide(1.0, 0.0, vd.above(0))
    with pytest.raises(ValueError, match="low"):
        vd.Region(1.0, 0.0)
    with pytest.raises(ValueError, match="finite boundary"):
        vd.Region()
    with pytest.raises(ValueError, match="region"):
        vd.decide(0.0, 1.0, 0.5)  # type: ignore[arg-type]


def test_judge_rows_and_table() -> None:
    claim = vd.Claim("c", "P (2020)", "says so", "Δ (points)", vd.above(-0.7), " pts")
    row = vd.judge(claim, -2.0, -2.5, -1.5, setting="T = 0.2", seeds=5, test_set=(-2.3, -1.7))
    assert row["verdict"] == vd.NOT_REPRODUCED
    assert row["ours"] == "−2.00 [−2.50, −1.50] pts"
    assert row["test_set"] == "[−2.30, −1.70] pts"
    # decided on both sources: half-widths 0.5 and 0.3 added in quadrature on each side
    half = math.hypot(0.5, 0.3)
    assert row["low"] == pytest.approx(-2.0 - half) and row["high"] == pytest.approx(-2.0 + half)
    assert row["both"] == vd.format_interval(-2.0, -2.0 - half, -2.0 + half, " pts")
    assert row["rule"] == "reproduced if the interval is > −0.7 pts"
    # the seeds alone would clear -0.7 here; with the test set's share the interval reaches it
    close = vd.judge(claim, -1.65, -2.64, -0.71, seeds=5, test_set=(-2.0, -1.3))
    assert vd.decide(-2.64, -0.71, claim.region) == vd.NOT_REPRODUCED
    assert close["verdict"] == vd.INCONCLUSIVE and close["high"] > -0.7
    table = vd.verdict_table([row, vd.judge(claim, 0.1, -0.2, 0.4)])
    assert list(table.columns) == list(vd.COLUMNS)
    assert vd.counts(table) == {vd.REPRODUCED: 1, vd.NOT_REPRODUCED: 1, vd.INCONCLUSIVE: 0}
    with pytest.raises(ValueError, match="lacks"):
        vd.verdict_table([{"claim": "x", "verdict": "reproduced"}])
    bad = dict(row, verdict="maybe")
    with pytest.raises(ValueError, match="verdict"):
        vd.verdict_table([bad])


def test_both_sources_carries_the_test_set_when_seeds_agree() -> None:
    # three seeds that each lose exactly 105 of 10,000 test images: a zero-width interval over
    # seeds, which alone would decide against a -0.7 margin; the test set's own does not
    est = -1.05
    low, high = vd.both_sources(est, (est, est), (-1.45, -0.65))
    assert (low, high) == pytest.approx((-1.45, -0.65))
    claim = vd.Claim("c", "p", "s", "q", vd.above(-0.7))
    assert vd.decide(est, est, claim.region) == vd.NOT_REPRODUCED
    assert vd.judge(claim, est, est, est, seeds=3, test_set=(-1.45, -0.65))["verdict"] == (
        vd.INCONCLUSIVE
    )
    # never narrower than either source, asymmetric sides kept apart
    low, high = vd.both_sources(1.0, (0.2, 1.5), (0.9, 2.0))
    assert low <= 0.2 and high >= 2.0
    assert low == pytest.approx(1.0 - math.hypot(0.8, 0.1))
    assert high == pytest.approx(1.0 + math.hypot(0.5, 1.0))
    assert all(math.isnan(v) for v in vd.both_sources(1.0, (math.nan, math.nan), (0.5, 1.5)))
    # without a test-set interval the verdict is the seeds' and "both" is blank
    row = vd.judge(claim, -1.5, -1.9, -1.1, seeds=5)
    assert row["both"] == "" and (row["low"], row["high"]) == (-1.9, -1.1)


def test_seeds_to_decide_with_the_test_set() -> None:
    region = vd.above(-0.7)
    # seeds' half-width 0.5 over 5 seeds, test set's 0.2 on the boundary's side
    est, low, high, test = -1.0, -1.5, -0.5, (-1.2, -0.8)
    m = vd.seeds_to_decide(est, low, high, 5, region, test_set=test)
    assert m is not None and m > 5
    spread = 0.5 * math.sqrt(5) / sps.t.ppf(0.975, 4)
    for n, decided in ((m, True), (m - 1, False)):
        half = math.hypot(sps.t.ppf(0.975, n - 1) * spread / math.sqrt(n), 0.2)
        assert (est + half < -0.7) == decided
    # more seeds than without the test set's share
    assert m > vd.seeds_to_decide(est, low, high, 5, region)
    # where the test set's half-width alone reaches the boundary no seed count decides
    assert vd.seeds_to_decide(est, low, high, 5, region, test_set=(-1.4, -0.6)) is None
    claim = vd.Claim("c", "p", "s", "q", region)
    row = vd.judge(claim, est, low, high, seeds=5, test_set=(-1.4, -0.6))
    assert row["to_decide"] is None and "larger test set" in row["undecided"]
    assert vd.judge(claim, est, low, high, seeds=5, test_set=test)["undecided"] == ""
    assert "boundary" in vd.judge(claim, -0.7, -1.0, -0.4, seeds=5)["undecided"]
    assert vd.judge(claim, -2.0, -2.5, -1.5, seeds=5)["undecided"] == ""  # decided
    # decided on both sources already: nothing to say
    assert vd.seeds_to_decide(-2.0, -2.5, -1.5, 5, region, test_set=(-2.3, -1.7)) is None


def test_format_interval() -> None:
    assert vd.format_interval(0.5, math.nan, math.nan) == "+0.50 (no interval)"
    assert vd.format_interval(math.nan, 0, 1) == "n/a"
    assert vd.format_interval(INF, INF, INF) == "∞"
    assert vd.format_interval(2.0, 1.0, INF, " nats") == "+2.00 [+1.00, ∞] nats"
    assert vd.format_interval(3e-7, 3e-7, 3e-7, digits=1) == "+3e−07"


def test_seeds_to_decide_against_a_simulated_t_interval() -> None:
    import numpy as np

    def t_interval(x: np.ndarray) -> tuple[float, float, float]:
        half = sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
        return float(x.mean()), float(x.mean() - half), float(x.mean() + half)

    x = np.array([-1.6, -0.5, -1.3, -0.7, -1.6])  # mean -1.14 straddling -0.7
    region = vd.above(-0.7)
    est, low, high = t_interval(x)
    assert vd.decide(low, high, region) == vd.INCONCLUSIVE
    m = vd.seeds_to_decide(est, low, high, len(x), region)
    assert m is not None and m > len(x)
    # the same mean and spread over m seeds clears the boundary, over m - 1 it does not
    for n, decided in ((m, True), (m - 1, False)):
        half = sps.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)
        assert (est + half < -0.7) == decided
    # decided intervals, no interval, or an estimate on the boundary: nothing to say
    assert vd.seeds_to_decide(-1.5, -1.9, -1.1, 5, region) is None
    assert vd.seeds_to_decide(-0.5, math.nan, math.nan, 1, region) is None
    assert vd.seeds_to_decide(-0.7, -1.0, -0.4, 5, region) is None
    row = vd.judge(vd.Claim("c", "p", "s", "q", region), est, low, high, seeds=5)
    assert row["to_decide"] == m


def test_styled_shows_the_readers_columns() -> None:
    claim = vd.Claim("c", "p", "s", "q", vd.above(0.0))
    table = vd.verdict_table([vd.judge(claim, 1.0, 0.5, 1.5, seeds=3), vd.judge(claim, 0.1, -1, 1)])
    html = vd.styled(table, "caption")._repr_html_()
    assert "seeds to decide" in html and "the paper says" in html and "caption" in html
    assert "nan" not in html  # blank where a row has no seed count
    assert "#0072B2" in html  # the reproduced verdict in the book's blue
    with pytest.raises(ValueError, match="columns"):
        vd.styled(table, "x", columns=["claim", "colour"])


def test_count_numbers_names_every_verdict() -> None:
    claim = vd.Claim("c", "p", "s", "q", vd.above(0.0))
    rows = [vd.judge(claim, 1.0, 0.5, 1.5), vd.judge(claim, -1.0, -1.5, -0.5)]
    rows.append(vd.judge(claim, 0.1, -0.5, 0.7))
    got = vd.count_numbers("ch", vd.verdict_table(rows))
    assert got == {"ch_n_verdicts": 3, "ch_n_rep": 1, "ch_n_notrep": 1, "ch_n_inc": 1}
