from __future__ import annotations

import math

import pytest

from negatives.chapters import coupon


def test_profiles_differ_only_in_grid_density() -> None:
    smoke, book = (
        coupon.Params.from_profile("smoke"),
        coupon.Params.from_profile("book"),
    )
    assert smoke.grid_points < book.grid_points
    assert smoke.num_classes == book.num_classes == (10, 100)


def test_list_given_as_text_is_parsed() -> None:
    assert coupon.Params.from_profile("smoke", num_classes="[3, 7]").num_classes == (3, 7)


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"num_classes": "[0]"}, "num_classes"),
        ({"max_negatives": -4}, "max_negatives"),
        ({"prior": "pareto"}, "prior"),
        ({"zipf_exponent": -1.0}, "zipf_exponent"),
        ({"grid_pts": 3}, "grid_pts"),
    ],
)
def test_bad_parameters_are_named(overrides, match) -> None:
    with pytest.raises(ValueError, match=match):
        coupon.Params.from_profile("smoke", **overrides)


def test_unknown_profile_is_named() -> None:
    with pytest.raises(ValueError, match="profile"):
        coupon.Params.from_profile("medium")


def test_table3_matches_the_paper_for_uniform_priors() -> None:
    df = coupon.expected_draws_table(coupon.Params.from_profile("smoke"))
    uniform = df.dropna(subset=["paper, Table 3"])
    assert (uniform["ceil (ours)"] == uniform["paper, Table 3"]).all()
    # the extra non-uniform prior needs more draws than the uniform one with the same C
    zipf = df[df["paper, Table 3"].isna()].iloc[0]
    assert zipf["E[K+1] (ours)"] > 100 * sum(1 / i for i in range(1, 101))


def test_trap_table_shows_the_float64_error_at_c100() -> None:
    df = coupon.trap_table(coupon.Params.from_profile("smoke"))
    row = df[df["N = K+1"] == 128].iloc[0]
    assert row["rel. error (notebook)"] > 1e3
    assert 0 < row["exact"] < 1e-20
    big = df[df["N = K+1"] == 1024].iloc[0]
    # far from the cancellation the direct float64 sum is fine; the notebook's form stays ~1e-3 off
    assert math.isclose(big["exact"], big["naive (direct form)"], rel_tol=1e-9)
    assert 1e-5 < big["rel. error (notebook)"] < 1e-2
