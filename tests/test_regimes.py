"""negatives.regimes: one grammar names every negative regime and maps it to TrainConfig."""

from __future__ import annotations

import pytest

from negatives import regimes
from negatives.trainconfig import TrainConfig

BASE = TrainConfig(method="moco", queue_size=256, batch_size=32, epochs=1, device="cpu")


@pytest.mark.parametrize(
    ("text", "band"),
    [
        ("all", (0.0, 1.0)),
        ("hardest 5%", (0.0, 0.05)),
        ("easiest 95%", (0.05, 1.0)),  # exactly 0.05, as a band written [0.05, 1.0) is
        ("all but hardest 0.1%", (0.001, 1.0)),
        ("[5%, 10%)", (0.05, 0.1)),
        ("  hardest   5% ", (0.0, 0.05)),
    ],
)
def test_bands_parse_to_the_fractions_written(text: str, band: tuple[float, float]) -> None:
    assert regimes.parse("p", text).band == band


def test_a_band_names_itself_as_the_paper_does_and_round_trips_through_its_config() -> None:
    for name in regimes.PAPER_BANDS:
        config = regimes.parse("p", name).apply(BASE, 10)
        assert regimes.name_of(config) == name
        assert regimes.band(*regimes.band_of(config)).apply(BASE, 10) == config
    fine = regimes.band(0.05, 0.1)
    assert fine.name == "[5%, 10%)" and regimes.parse("p", fine.name).band == fine.band
    assert regimes.name_of(fine.apply(BASE, 10)) == "[5%, 10%)"
    oracle = regimes.parse("p", "no same-class").apply(BASE, 10)
    assert oracle.negatives == "no-same-class" and regimes.name_of(oracle) == regimes.ORACLE
    assert regimes.band_of(oracle) is None
    # "all" is trained without the sort, whichever way it is written
    assert regimes.band(0.0, 1.0).apply(BASE, 10).negatives == "all"
    assert regimes.parse("p", "[0%, 100%)").apply(BASE, 10) == regimes.parse("p", "all").apply(
        BASE, 10
    )


def test_debiased_and_hard_resolve_the_prior_with_the_classes() -> None:
    debiased = regimes.parse("p", "debiased tau+=1/C")
    assert debiased.apply(BASE, 10).tau_plus == pytest.approx(0.1)
    assert debiased.label == "debiased, τ⁺ = 1/C"
    assert regimes.parse("p", "debiased tau+=0.05").apply(BASE, 100).tau_plus == 0.05
    hard = regimes.parse("p", "hard beta=2").apply(BASE, 4)
    assert (hard.negatives, hard.beta, hard.tau_plus) == ("all", 2.0, 0.25)
    with pytest.raises(ValueError, match="neither a band nor the oracle"):
        regimes.name_of(hard)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("hardest 0%", "strictly between 0 and 100"),
        ("easiest 100%", "strictly between 0 and 100"),
        ("[10%, 5%)", "0 <= A < B <= 100"),
        ("[0%, 150%)", "0 <= A < B <= 100"),
        ("debiased tau+=1.5", r"tau\+ must be in \[0, 1\)"),
        ("median", "is not a negative regime"),
        (3, "must be the name of a negative regime"),
    ],
)
def test_bad_names_say_what_is_allowed(text: object, match: str) -> None:
    with pytest.raises(ValueError, match=match) as err:
        regimes.parse("conditions[2]", text)
    assert "conditions[2]" in str(err.value)
