"""negatives.population: scans of the population optimum, cached, against direct calls."""

from __future__ import annotations

import pytest

from negatives import population, theory
from negatives.data import zipf_probs
from negatives.runs import RunStore

SCAN = population.Scan(num_negatives=(1, 4), zipf_exponent=1.0, dim=None, seed=0, restarts=1)


def test_grid_rows_are_the_optima_of_theory_and_are_cached(tmp_path) -> None:
    store = RunStore(tmp_path)
    grid = SCAN.grid(store, [3], population.PRIORS, [2.0], ["sphere"])
    assert len(grid) == 2 * 2 and list(grid["K"]) == [1, 4, 1, 4]
    direct = theory.optimum(3, 4, 3, list(zipf_probs(3, 1.0)), 2.0, "sphere", 0, 1)
    row = grid[(grid["prior"] == "zipf") & (grid["K"] == 4)].iloc[0]
    assert row["supervised loss"] == pytest.approx(direct["supervised loss"], rel=1e-9)
    assert len(list((tmp_path / "cache").glob("optimum-*.json"))) == 4
    again = SCAN.grid(store, [3], population.PRIORS, [2.0], ["sphere"])
    assert list(again["seconds"]) == list(grid["seconds"])  # read back, not recomputed


def test_endpoints_skew_and_labels(tmp_path) -> None:
    store = RunStore(tmp_path)
    grid = SCAN.grid(store, [3], ["uniform"], [1.0, 2.0], ["sphere"])
    ends = population.endpoints(grid)
    assert len(ends) == 2 and list(ends["K range"]) == ["1-4", "1-4"]
    skew = SCAN.skew(store, 3, [0.5, 1.5], 2.0, "sphere")
    assert list(skew["Zipf exponent a"]) == [0.5, 1.5]
    assert skew["rho_max / rho_min"].is_monotonic_increasing
    assert SCAN.prior_label("uniform") == "uniform" and SCAN.prior_label("zipf") == "Zipf a=1"
    assert set(SCAN.grams(3, 2.0, "sphere")) == {
        "regular simplex", "optimum, uniform", "optimum, Zipf a=1"
    }  # fmt: skip
    assert list(population.timing(grid)["optimisations"]) == [4]
    with pytest.raises(ValueError, match="prior"):
        SCAN.exponent("pareto")
