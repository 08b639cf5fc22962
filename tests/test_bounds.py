"""Tests for negatives.bounds: coupon collector maths against exact rationals, Monte-Carlo and
the paper's tables; bound terms against hand computations and a naive per-anchor loop, on
feature sets where the theorems must hold exactly, and on the features of small encoders."""

from __future__ import annotations

import itertools
import math
import time
from fractions import Fraction

import numpy as np
import pytest
import torch

from negatives import bounds, probes
from negatives.data import load_dataset
from negatives.models import build_model
from negatives.train import TrainConfig

# ---------------------------------------------------------------------------------------------
# Slow, obviously correct references
# ---------------------------------------------------------------------------------------------


def stirling_coverage(num_draws: int, num_classes: int) -> Fraction:
    """C! S(N, C) / C^N with S from the recurrence S(n, k) = k S(n-1, k) + S(n-1, k-1)."""
    s = [1] + [0] * num_classes
    for _ in range(num_draws):
        s = [0] + [k * s[k] + s[k - 1] for k in range(1, num_classes + 1)]
    return Fraction(math.factorial(num_classes) * s[num_classes], num_classes**num_draws)


def subset_coverage(num_draws: int, weights: list[int]) -> Fraction:
    """Inclusion-exclusion over all subsets, exact: Σ_S (-1)^{C-|S|} (w(S)/W)^N."""
    total = sum(weights)
    acc = Fraction(0)
    for r in range(len(weights) + 1):
        for subset in itertools.combinations(weights, r):
            acc += (-1) ** (len(weights) - r) * Fraction(sum(subset), total) ** num_draws
    return acc


def step_coverage(num_draws: int, groups: list[tuple[int, int]]) -> Fraction:
    """Inclusion-exclusion grouped by weight: groups = [(count, integer weight), ...]."""
    total = sum(c * w for c, w in groups)
    acc = 0
    for missing in itertools.product(*(range(c + 1) for c, _ in groups)):
        sign = (-1) ** sum(missing)
        ways = math.prod(math.comb(c, m) for (c, _), m in zip(groups, missing, strict=True))
        left = total - sum(m * w for (_, w), m in zip(groups, missing, strict=True))
        acc += sign * ways * left**num_draws
    return Fraction(acc, total**num_draws)


def subset_expected_draws(weights: list[int]) -> Fraction:
    """E[T] = Σ_{S ≠ ∅} (-1)^{|S|+1} / ρ(S), exact."""
    total = sum(weights)
    acc = Fraction(0)
    for r in range(1, len(weights) + 1):
        for subset in itertools.combinations(weights, r):
            acc += (-1) ** (r + 1) * Fraction(total, sum(subset))
    return acc


def step_expected_draws(groups: list[tuple[int, int]]) -> Fraction:
    total = sum(c * w for c, w in groups)
    acc = Fraction(0)
    for chosen in itertools.product(*(range(c + 1) for c, _ in groups)):
        if sum(chosen) == 0:
            continue
        ways = math.prod(math.comb(c, m) for (c, _), m in zip(groups, chosen, strict=True))
        mass = sum(m * w for (_, w), m in zip(groups, chosen, strict=True))
        acc += (-1) ** (sum(chosen) + 1) * ways * Fraction(total, mass)
    return acc


def simulate_draws_to_cover(probs: np.ndarray, trials: int, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(trials)
    for i in range(trials):
        seen, n = set(), 0
        while len(seen) < len(probs):
            seen.add(int(rng.choice(len(probs), p=probs)))
            n += 1
        out[i] = n
    return out


def rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


# ---------------------------------------------------------------------------------------------
# coverage_probability
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("num_draws", "num_classes", "expected"),
    [
        (2, 2, Fraction(1, 2)),
        (3, 3, Fraction(2, 9)),
        (3, 2, Fraction(3, 4)),  # 1 - P(all same) = 1 - 2/8
        (4, 3, Fraction(4, 9)),  # 3! S(4,3) / 3^4 = 36/81
        (2, 3, Fraction(0)),  # fewer draws than classes
        (5, 1, Fraction(1)),
    ],
)
def test_coverage_small_cases_by_hand(num_draws: int, num_classes: int, expected: Fraction) -> None:
    assert bounds.coverage_probability(num_draws, num_classes) == pytest.approx(
        float(expected), rel=1e-15, abs=0
    )


def test_coverage_nonuniform_by_hand() -> None:
    # N = C = 3 draws cover all three classes iff they are a permutation: 3! ρ1 ρ2 ρ3.
    assert bounds.coverage_probability(3, class_probs=[1 / 2, 1 / 3, 1 / 6]) == pytest.approx(
        6 * (1 / 2) * (1 / 3) * (1 / 6), rel=1e-12
    )
    # two classes, N = 2: 2 p q
    assert bounds.coverage_probability(2, class_probs=[0.3, 0.7]) == pytest.approx(0.42, rel=1e-12)
    assert bounds.coverage_probability(10, class_probs=[0.5, 0.5, 0.0]) == 0.0


@pytest.mark.parametrize("num_draws", [100, 128, 256, 512, 2000])
def test_coverage_c100_matches_stirling_reference(num_draws: int) -> None:
    """The float64 trap zone: C = 100, N = 128 is ~1.5e-22 and must still be right to 1e-9."""
    exact = float(stirling_coverage(num_draws, 100))
    assert rel(bounds.coverage_probability(num_draws, 100), exact) < 1e-12
    # the positive-term dynamic programme used for other priors, on the uniform prior
    dp = bounds._coverage_poissonized(num_draws, np.full(100, 0.01))
    assert rel(dp, exact) < 1e-9


@pytest.mark.parametrize("num_draws", [5, 7, 20, 60])
def test_coverage_nonuniform_matches_subset_inclusion_exclusion(num_draws: int) -> None:
    weights = [1, 2, 3, 7, 11]
    probs = [w / sum(weights) for w in weights]
    exact = float(subset_coverage(num_draws, weights))
    assert rel(bounds.coverage_probability(num_draws, class_probs=probs), exact) < 1e-10


@pytest.mark.parametrize("num_draws", [100, 128, 500, 2000])
def test_coverage_nonuniform_c100_exact_and_fast(num_draws: int) -> None:
    groups = [(50, 1), (50, 3)]  # a step prior: half the classes three times as likely
    probs = [1 / 200] * 50 + [3 / 200] * 50
    exact = float(step_coverage(num_draws, groups))
    start = time.perf_counter()
    value = bounds.coverage_probability(num_draws, class_probs=probs)
    assert time.perf_counter() - start < 1.0
    assert exact > 0 and rel(value, exact) < 1e-9


def test_coverage_is_one_where_one_is_its_rounding() -> None:
    """υ(10^6) for C = 100 is 1 - ~1e-4363: 1.0, from the union bound, without the exact sum."""
    assert bounds.coverage_probability(10**6, num_classes=100) == 1.0
    probs = [1 / 200] * 50 + [3 / 200] * 50
    assert bounds.coverage_probability(10**6, class_probs=probs) == 1.0
    assert bounds.coverage_probability(10**6, class_probs=[0.5, 0.5, 0.0]) == 0.0
    assert bounds.coverage_probability(10**6, class_probs=[1.0, 0.0]) == 0.0


def first_draws_below_half_ulp(groups: list[tuple[int, int]]) -> int:
    """The smallest N whose union bound Σ_c (1 - ρ_c)^N is below 2^-54, in exact rationals."""
    total = sum(c * w for c, w in groups)
    n = 1
    while sum(c * Fraction(total - w, total) ** n for c, w in groups) >= Fraction(1, 2**54):
        n += 1
    return n


@pytest.mark.parametrize(
    "groups", [[(2, 1)], [(10, 1)], [(100, 1)], [(2, 1), (3, 3)], [(1, 1), (1, 2), (1, 5)]]
)
def test_coverage_shortcut_agrees_with_the_exact_value_around_the_switch(
    groups: list[tuple[int, int]],
) -> None:
    """Around the first N where the union bound allows 1.0, the result is the correctly
    rounded exact υ (uniform: exactly; other priors: the de-Poissonised sum's error before,
    exactly 1.0 after). [(2, 1)] has bound = 2^-54 exactly at N = 55: the tie rounds to 1.0."""
    total = sum(c * w for c, w in groups)
    probs = [w / total for c, w in groups for _ in range(c)]
    uniform = len(groups) == 1
    switch = first_draws_below_half_ulp(groups)
    for n in range(switch - 3, switch + 4):
        exact = float(step_coverage(n, groups))
        if uniform:
            assert bounds.coverage_probability(n, num_classes=len(probs)) == exact, n
        value = bounds.coverage_probability(n, class_probs=probs)
        if n >= switch:
            assert value == exact == 1.0, n
        else:
            assert abs(value - exact) < 1e-13, n


@pytest.mark.parametrize(
    ("probs", "num_draws"), [([0.1] * 10, 25), ([0.4, 0.3, 0.15, 0.1, 0.05], 20)]
)
def test_coverage_monte_carlo(probs: list[float], num_draws: int) -> None:
    rng = np.random.default_rng(0)
    trials = 20_000
    draws = rng.choice(len(probs), size=(trials, num_draws), p=probs)
    covered = np.array([len(np.unique(row)) == len(probs) for row in draws])
    estimate = covered.mean()
    value = bounds.coverage_probability(num_draws, class_probs=probs)
    se = math.sqrt(value * (1 - value) / trials)
    assert abs(estimate - value) < 4 * se


def test_naive_coverage_is_fine_for_few_classes() -> None:
    for form in ("notebook", "direct"):
        assert (
            rel(
                bounds.naive_coverage_probability(32, 10, form), bounds.coverage_probability(32, 10)
            )
            < 1e-12
        )


def test_naive_coverage_is_badly_wrong_at_c100() -> None:
    """Documents the trap: the paper's float64 formula is rounding noise at C = 100, N = 128."""
    exact = float(stirling_coverage(128, 100))  # ~1.5e-22
    for form in ("notebook", "direct"):
        naive = bounds.naive_coverage_probability(128, 100, form)
        assert abs(naive - exact) / exact > 1e10
    # accumulated clipped noise even pushes the published form above 1 for large N
    assert bounds.naive_coverage_probability(2000, 100) > 1.0


def test_alternating_sum_largest_term() -> None:
    for n, c in [(5, 3), (128, 100), (40, 20)]:
        exact = max(math.comb(c, m) * Fraction(c - m, c) ** n for m in range(c + 1))
        assert rel(bounds.alternating_sum_largest_term(n, c), float(exact)) < 1e-11
    # the trap in one line: terms ~1e7 must cancel down to ~1e-22
    assert bounds.alternating_sum_largest_term(128, 100) > 1e28 * float(stirling_coverage(128, 100))


def test_min_draws_for_coverage() -> None:
    for kwargs in ({"num_classes": 10}, {"num_classes": 100}, {"class_probs": [0.5, 0.3, 0.2]}):
        for q in (0.5, 0.99):
            n = bounds.min_draws_for_coverage(q, **kwargs)
            assert bounds.coverage_probability(n, **kwargs) >= q
            assert n == 1 or bounds.coverage_probability(n - 1, **kwargs) < q


# ---------------------------------------------------------------------------------------------
# expected_draws_to_cover
# ---------------------------------------------------------------------------------------------


def test_expected_draws_reproduces_paper_table3() -> None:
    # Nozawa & Sato (2021) Table 3 prints ceil(E[K+1]): binary, AG news, CIFAR-10/100, Wiki-3029.
    for num_classes, published in [(2, 3), (4, 9), (10, 30), (100, 519), (3029, 26030)]:
        assert math.ceil(bounds.expected_draws_to_cover(num_classes)) == published
    assert bounds.expected_draws_to_cover(2) == 3.0
    assert bounds.expected_draws_to_cover(4) == pytest.approx(25 / 3, rel=1e-15)
    assert round(bounds.expected_draws_to_cover(10), 2) == 29.29
    assert round(bounds.expected_draws_to_cover(100), 2) == 518.74


def test_expected_draws_nonuniform_exact() -> None:
    assert bounds.expected_draws_to_cover(class_probs=[0.2, 0.8]) == pytest.approx(
        1 / 0.2 + 1 / 0.8 - 1, rel=1e-11
    )
    weights = [1, 2, 3, 7, 11]
    exact = float(subset_expected_draws(weights))
    value = bounds.expected_draws_to_cover(class_probs=[w / sum(weights) for w in weights])
    assert rel(value, exact) < 1e-10
    # C = 100 step prior (exact via grouped inclusion-exclusion)
    exact = float(step_expected_draws([(50, 1), (50, 3)]))
    value = bounds.expected_draws_to_cover(class_probs=[1 / 200] * 50 + [3 / 200] * 50)
    assert rel(value, exact) < 1e-9
    assert bounds.expected_draws_to_cover(class_probs=[0.5, 0.5, 0.0]) == math.inf


def test_expected_draws_monte_carlo() -> None:
    probs = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    draws = simulate_draws_to_cover(probs, 4000, np.random.default_rng(1))
    value = bounds.expected_draws_to_cover(class_probs=probs.tolist())
    assert abs(draws.mean() - value) < 4 * draws.std(ddof=1) / math.sqrt(len(draws))


# ---------------------------------------------------------------------------------------------
# collision_probability
# ---------------------------------------------------------------------------------------------


def test_collision_reproduces_paper_table() -> None:
    assert round(bounds.collision_probability(31, 10), 2) == 0.96
    for k, published in [(127, 0.72), (255, 0.92), (511, 0.99)]:
        assert round(bounds.collision_probability(k, 100), 2) == published


def test_collision_against_formula_and_monte_carlo() -> None:
    probs = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    for k in (0, 1, 3, 10):
        direct = 1 - float(np.sum(probs * (1 - probs) ** k))
        assert bounds.collision_probability(k, class_probs=probs.tolist()) == pytest.approx(
            direct, abs=1e-15
        )
    rng = np.random.default_rng(2)
    trials, k = 50_000, 3
    anchor = rng.choice(5, size=trials, p=probs)
    negatives = rng.choice(5, size=(trials, k), p=probs)
    estimate = (negatives == anchor[:, None]).any(axis=1).mean()
    value = bounds.collision_probability(k, class_probs=probs.tolist())
    assert abs(estimate - value) < 4 * math.sqrt(value * (1 - value) / trials)


def test_collision_edge_cases_and_small_tau() -> None:
    assert bounds.collision_probability(0, 10) == 0.0
    assert bounds.collision_probability(5, 1) == 1.0
    # tiny τ keeps relative accuracy: C = 10^6, K = 1 gives τ = 1/C exactly
    assert rel(bounds.collision_probability(1, 10**6), 1e-6) < 1e-12


# ---------------------------------------------------------------------------------------------
# parameter errors
# ---------------------------------------------------------------------------------------------


def test_bad_coupon_parameters_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="num_draws"):
        bounds.coverage_probability(0, 10)
    with pytest.raises(ValueError, match="num_classes"):
        bounds.coverage_probability(10, 0)
    with pytest.raises(ValueError, match="num_classes"):
        bounds.coverage_probability(10)
    with pytest.raises(ValueError, match="class_probs"):
        bounds.coverage_probability(10, 2, [0.5, 0.5])
    with pytest.raises(ValueError, match="class_probs"):
        bounds.coverage_probability(10, class_probs=[0.5, 0.6])
    with pytest.raises(ValueError, match="class_probs"):
        bounds.expected_draws_to_cover(class_probs=[1.5, -0.5])
    with pytest.raises(ValueError, match="num_negatives"):
        bounds.collision_probability(-1, 10)
    with pytest.raises(ValueError, match="num_classes"):
        bounds.expected_draws_to_cover(num_classes=0)
    with pytest.raises(ValueError, match="form"):
        bounds.naive_coverage_probability(10, 5, form="fast")
    with pytest.raises(ValueError, match="probability"):
        bounds.min_draws_for_coverage(1.0, 10)


# ---------------------------------------------------------------------------------------------
# mean classifier and bound terms
# ---------------------------------------------------------------------------------------------


def test_mean_classifier_weights_against_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=gen)
    y = torch.arange(30) % 3
    w = bounds.mean_classifier_weights(x, y, 3)
    for c in range(3):
        torch.testing.assert_close(
            w[c], torch.stack([x[i] for i in range(30) if y[i] == c]).mean(0)
        )
    with pytest.raises(ValueError, match="labels"):
        bounds.mean_classifier_weights(x, y, 4)  # class 3 has no sample
    with pytest.raises(ValueError, match="num_classes"):
        bounds.mean_classifier_weights(x, y, 0)


E0, E1 = [1.0, 0.0], [0.0, 1.0]


def hand_inputs(means: list[list[float]]) -> dict:
    z = torch.tensor([E0, E1, E0, E1], dtype=torch.float64)
    return {
        "z": z,
        "z_bar": z.clone(),
        "labels": torch.tensor([0, 1, 0, 1]),
        "class_means": torch.tensor(means, dtype=torch.float64),
        "temperature": 0.5,
        "num_negatives": 3,  # one batch holding all four samples, so the shuffle is irrelevant
        "num_passes": 2,
        "seed": 0,
    }


def test_bound_terms_by_hand_covering_batch() -> None:
    out = bounds.bound_terms(**hand_inputs([[0.8, 0.0], [0.0, 0.8]]))
    # every anchor: scores z·μ/t = (1.6, 0); keys are z itself: logits (2, 0, 2, 0)
    l_sup = math.log(math.exp(1.6) + 1) - 1.6
    l_info = math.log(2 * math.exp(2) + 2) - 2
    d_f = (0.8 - 1.0) / 0.5  # z·(μ_y - z̄) / t
    assert out["info_loss"] == pytest.approx(l_info, rel=1e-12)
    assert out["sup_loss"] == pytest.approx(l_sup, rel=1e-12)
    assert out["sub_loss"] == pytest.approx(l_sup, rel=1e-12)  # both classes present
    assert out["upsilon"] == 1.0 and out["tau"] == 1.0
    assert out["collision_term"] == pytest.approx(math.log(2), rel=1e-12)
    assert out["d_f"] == pytest.approx(d_f, rel=1e-12)
    assert out["sup_term"] == pytest.approx(l_sup, rel=1e-12) and out["sub_term"] == 0.0
    assert out["curl_sub_term"] == 0.0  # every anchor collides
    assert out["proposed_bound"] == pytest.approx(0.5 * (l_sup + math.log(2)) + d_f, rel=1e-12)
    assert out["curl_bound"] == pytest.approx(math.log(2) + d_f, rel=1e-12)
    assert out["proposed_sup_upper_bound"] == pytest.approx(
        2 * (l_info - d_f) - math.log(2), rel=1e-12
    )
    # 1 - τ = 0: the inequality constrains nothing, the bound is ±inf by the sign of its rhs
    assert out["curl_sup_rhs"] == pytest.approx(l_info - d_f - math.log(2), abs=1e-12)
    assert out["curl_sup_upper_bound"] == (math.inf if out["curl_sup_rhs"] >= 0 else -math.inf)
    assert out["upsilon_exact"] == pytest.approx(1 - 2 / 16, rel=1e-12)  # 4 draws, 2 classes
    assert out["tau_exact"] == pytest.approx(1 - 0.5**3, rel=1e-12)
    assert out["centroid_accuracy"] == 100.0
    assert out["num_anchors"] == 8 and out["num_batches"] == 2


def test_bound_terms_by_hand_uncovered_class() -> None:
    out = bounds.bound_terms(**hand_inputs([[0.8, 0.0], [0.0, 0.8], [-0.5, -0.5]]))
    # class 2 never occurs, so no batch covers: L_sub over {0, 1}, L_sup over all three classes
    l_sup = math.log(math.exp(1.6) + 1 + math.exp(-1.0)) - 1.6
    l_sub = math.log(math.exp(1.6) + 1) - 1.6
    assert out["upsilon"] == 0.0 and out["upsilon_exact"] == 0.0
    assert out["sup_loss"] == pytest.approx(l_sup, rel=1e-12)
    assert out["sub_loss"] == pytest.approx(l_sub, rel=1e-12)
    assert out["sup_term"] == 0.0 and out["sub_term"] == pytest.approx(l_sub, rel=1e-12)
    assert out["proposed_bound"] == pytest.approx(0.5 * (l_sub + math.log(2)) - 0.4, rel=1e-12)
    rhs = out["proposed_sup_rhs"]
    assert out["proposed_sup_upper_bound"] == (math.inf if rhs >= 0 else -math.inf)  # υ = 0
    assert math.isnan(out["sup_loss_covered"])  # a conditional mean over no batch: undefined


def test_sup_upper_bound_zero_weight() -> None:
    assert bounds.sup_upper_bound(3.0, 0.5) == 6.0
    assert bounds.sup_upper_bound(3.0, 0.0) == math.inf  # 0 · L_sup <= 3 holds for every L_sup
    assert bounds.sup_upper_bound(0.0, -1e-17) == math.inf  # float64 noise around 0
    assert bounds.sup_upper_bound(-1.0, 0.0) == -math.inf  # no L_sup satisfies 0 · L_sup <= -1


def naive_bound_terms(inputs: dict, z_positive: torch.Tensor | None) -> dict[str, float]:
    """Per-anchor Python loop over the same batches, float64 via numpy scalars."""
    z = torch.nn.functional.normalize(inputs["z"].double(), dim=1).numpy()
    z_bar = inputs["z_bar"].double().numpy()
    key = (
        z_bar
        if z_positive is None
        else torch.nn.functional.normalize(z_positive.double(), dim=1).numpy()
    )
    y = inputs["labels"].numpy()
    mu = inputs["class_means"].double().numpy()
    t, k = inputs["temperature"], inputs["num_negatives"]
    c = mu.shape[0]
    batches = bounds.evaluation_batches(len(y), k + 1, inputs["num_passes"], inputs["seed"])
    rows = []
    for idx in batches.reshape(-1, k + 1).tolist():
        classes = {int(y[j]) for j in idx}
        covered = len(classes) == c
        for i in idx:
            logits = [float(z[i] @ key[j]) / t for j in idx]
            info = -logits[idx.index(i)] + math.log(sum(math.exp(v) for v in logits))
            s = [float(z[i] @ mu[cc]) / t for cc in range(c)]
            sup = -s[y[i]] + math.log(sum(math.exp(v) for v in s))
            sub = -s[y[i]] + math.log(sum(math.exp(s[cc]) for cc in classes))
            same = sum(1 for j in idx if y[j] == y[i])
            d = min(0.0, float(z[i] @ (mu[y[i]] - z_bar[i]))) / t
            rows.append((info, sup, sub, covered, same, d))
    a = np.array(rows, dtype=float)
    info, sup, sub, cov, same, d = a.T
    nocol = same == 1
    return {
        "info_loss": info.mean(),
        "sup_loss": sup.mean(),
        "sub_loss": sub.mean(),
        "upsilon": cov.mean(),
        "tau": (~nocol).mean(),
        "collision_term": np.log(same).mean(),
        "d_f": d.mean(),
        "sup_term": (cov * sup).mean(),
        "sub_term": ((1 - cov) * sub).mean(),
        "curl_sub_term": (nocol * sub).mean(),
        "sub_loss_no_collision_uncovered": (nocol * (1 - cov) * sub).mean(),
    }


@pytest.mark.parametrize("use_positive", [False, True])
@pytest.mark.parametrize("num_negatives", [1, 4, 9])
def test_bound_terms_against_naive_loop(use_positive: bool, num_negatives: int) -> None:
    gen = torch.Generator().manual_seed(3)
    n, dim, c = 23, 5, 3
    z = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)
    views = torch.nn.functional.normalize(torch.randn(4, n, dim, generator=gen) + 2 * z, dim=2)
    z_bar = views.mean(0)
    labels = torch.randint(0, c, (n,), generator=gen)
    labels[:c] = torch.arange(c)
    means = bounds.mean_classifier_weights(z_bar, labels, c)
    inputs = {
        "z": z,
        "z_bar": z_bar,
        "labels": labels,
        "class_means": means,
        "temperature": 0.3,
        "num_negatives": num_negatives,
        "num_passes": 3,
        "seed": 11,
    }
    z_positive = views[0] * 1.7 if use_positive else None  # unnormalised on purpose
    out = bounds.bound_terms(**inputs, z_positive=z_positive)
    ref = naive_bound_terms(inputs, z_positive)
    for name, value in ref.items():
        assert out[name] == pytest.approx(value, rel=1e-10, abs=1e-12), name
    # derived quantities follow from the terms exactly as documented
    assert out["proposed_bound"] == pytest.approx(
        0.5 * (ref["sup_term"] + ref["sub_term"] + ref["collision_term"]) + ref["d_f"]
    )
    assert out["curl_bound"] == pytest.approx(
        ref["curl_sub_term"] + ref["collision_term"] + ref["d_f"]
    )
    freq = (torch.bincount(labels, minlength=c).double() / n).tolist()
    assert out["upsilon_exact"] == pytest.approx(
        bounds.coverage_probability(num_negatives + 1, class_probs=freq)
    )
    if 0 < ref["upsilon"]:
        assert out["proposed_sup_upper_bound"] == pytest.approx(
            (2 * (ref["info_loss"] - ref["d_f"]) - ref["sub_term"] - ref["collision_term"])
            / ref["upsilon"]
        )
    # the sub-class loss never exceeds the supervised loss (fewer classes in the softmax)
    assert out["sub_loss"] <= out["sup_loss"] + 1e-12
    assert out["d_f"] <= 0.0


def test_evaluation_batches_are_seeded_permutations() -> None:
    a = bounds.evaluation_batches(10, 3, 4, seed=5)
    assert a.shape == (4, 3, 3)
    for p in range(4):
        flat = a[p].flatten().tolist()
        assert len(set(flat)) == 9 and all(0 <= i < 10 for i in flat)
    assert torch.equal(a, bounds.evaluation_batches(10, 3, 4, seed=5))
    assert not torch.equal(a, bounds.evaluation_batches(10, 3, 4, seed=6))


def test_bad_bound_parameters_name_the_parameter() -> None:
    base = hand_inputs([[0.8, 0.0], [0.0, 0.8]])
    with pytest.raises(ValueError, match="num_negatives"):
        bounds.bound_terms(**{**base, "num_negatives": 4})  # K+1 = 5 > N = 4
    with pytest.raises(ValueError, match="num_negatives"):
        bounds.bound_terms(**{**base, "num_negatives": 0})
    with pytest.raises(ValueError, match="temperature"):
        bounds.bound_terms(**{**base, "temperature": 0.0})
    with pytest.raises(ValueError, match="num_passes"):
        bounds.bound_terms(**{**base, "num_passes": 0})
    with pytest.raises(ValueError, match="z_bar"):
        bounds.bound_terms(**{**base, "z_bar": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="labels"):
        bounds.bound_terms(**{**base, "labels": torch.tensor([0, 1, 0, 5])})
    with pytest.raises(ValueError, match="class_means"):
        bounds.bound_terms(**{**base, "class_means": torch.zeros(2, 3)})


# ---------------------------------------------------------------------------------------------
# bound terms of an encoder's features (bound_inputs, terms_from_inputs)
# ---------------------------------------------------------------------------------------------


def clustered_inputs(
    num_classes: int, per_class: int, dim: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Every sample exactly on its (unit) class vector: z = z⁺ = z̄ = μ_y, so d(f) = 0 and,
    per anchor, L_Info = ln Σ_c n_c e^{s_yc} - s_yy >= max(L_sub, ln n_y): both theorems hold
    for every batch, not only in expectation."""
    gen = torch.Generator().manual_seed(seed)
    means = torch.nn.functional.normalize(torch.randn(num_classes, dim, generator=gen), dim=1)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(len(labels), generator=gen)]
    z = means[labels]
    return {"z": z, "z_positive": z, "z_bar": z, "labels": labels, "class_means": means}


def test_terms_on_exact_clusters_satisfy_both_bounds() -> None:
    inputs = clustered_inputs(num_classes=5, per_class=12, dim=6)
    for k in (2, 5, 19, 59):
        out = bounds.terms_from_inputs(
            inputs, temperature=0.5, num_negatives=k, num_passes=3, seed=1
        )
        extras = {"upsilon_uniform", "upsilon_naive", "proposed_sup_upper_bound_naive_upsilon"}
        assert extras <= set(out)
        assert out["d_f"] == pytest.approx(0.0, abs=1e-12)
        assert 0.0 <= out["upsilon"] <= 1.0 and 0.0 <= out["tau"] <= 1.0
        assert out["proposed_bound"] <= out["info_loss"] + 1e-12
        assert out["curl_bound"] <= out["info_loss"] + 1e-12
        assert out["centroid_accuracy"] == pytest.approx(100.0)
        assert out["upsilon_uniform"] == bounds.coverage_probability(k + 1, num_classes=5)
        if out["upsilon"] > 0:
            # The inequality gives υ̂ L_sup^{covered} <= rhs, so rhs / υ̂ >= L_sup on covered batches.
            assert out["proposed_sup_upper_bound"] >= out["sup_loss_covered"] - 1e-12


def test_sup_loss_and_accuracy_against_a_loop() -> None:
    gen = torch.Generator().manual_seed(3)
    c, n, d, t = 4, 40, 5, 0.3
    labels = torch.arange(n) % c
    means = torch.randn(c, d, generator=gen)
    z = torch.nn.functional.normalize(means[labels] + 0.8 * torch.randn(n, d, generator=gen), dim=1)
    z_bar = torch.nn.functional.normalize(z + 0.3 * torch.randn(n, d, generator=gen), dim=1)
    mu = bounds.mean_classifier_weights(z_bar, labels, c)
    inputs = {"z": z, "z_positive": z_bar, "z_bar": z_bar, "labels": labels, "class_means": mu}
    out = bounds.terms_from_inputs(inputs, temperature=t, num_negatives=7, num_passes=2, seed=0)
    sup, correct = 0.0, 0
    for i in range(n):
        scores = [float(z[i].double() @ mu[j].double()) / t for j in range(c)]
        sup += math.log(sum(math.exp(s) for s in scores)) - scores[int(labels[i])]
        bar_scores = [float(z_bar[i] @ mu[j]) for j in range(c)]
        correct += int(np.argmax(bar_scores) == int(labels[i]))
    assert out["sup_loss"] == pytest.approx(sup / n, rel=1e-6)
    assert out["centroid_accuracy"] == pytest.approx(100.0 * correct / n)


def test_vacuous_upper_bounds_are_infinite() -> None:
    # K + 1 = 3 < C = 4: no batch covers every class, so the proposed bound divides by υ = 0.
    out = bounds.terms_from_inputs(
        clustered_inputs(4, 6, 5), temperature=0.5, num_negatives=2, num_passes=2, seed=0
    )
    assert out["upsilon"] == 0.0 and out["upsilon_exact"] == 0.0
    assert out["proposed_sup_upper_bound"] == math.inf
    assert out["proposed_sup_upper_bound_exact_upsilon"] == math.inf
    # Two classes, one batch of everything: every anchor collides, 1 - τ = 0.
    out = bounds.terms_from_inputs(
        clustered_inputs(2, 5, 5), temperature=0.5, num_negatives=9, num_passes=1, seed=0
    )
    assert out["tau"] == 1.0
    assert out["curl_sup_upper_bound"] == math.inf
    assert math.isfinite(out["proposed_sup_upper_bound"])


def test_bound_inputs_images_and_latent(one_thread) -> None:
    digits = load_dataset("digits", train_size=100, test_size=50)
    model = build_model("cnn-small", 1, 8, width=8, proj_hidden=16, proj_dim=8, input_dim=64)
    config = TrainConfig(arch="cnn-small", width=8, proj_hidden=16, proj_dim=8)
    x = bounds.bound_inputs(model, digits, config, num_augmentations=3, seed=0)
    with pytest.raises(ValueError, match="num_augmentations"):
        bounds.bound_inputs(model, digits, config, num_augmentations=0, seed=0)
    assert x["z"].shape == x["z_positive"].shape == x["z_bar"].shape == (50, 8)
    assert x["class_means"].shape == (10, 8)
    assert torch.allclose(x["z"].norm(dim=1), torch.ones(50), atol=1e-5)
    assert bool((x["z_bar"].norm(dim=1) <= 1 + 1e-5).all())  # a mean of unit vectors
    assert not torch.equal(x["z"], x["z_positive"])  # two different augmented views

    latent = load_dataset(
        "latent-class", num_classes=3, dim=6, noise=1.5, train_size=60, test_size=30
    )
    mlp = build_model("mlp", 1, 1, width=16, proj_hidden=16, proj_dim=4, input_dim=6)
    lconfig = TrainConfig(
        arch="mlp", positives="latent-class", width=16, proj_hidden=16, proj_dim=4
    )
    y = bounds.bound_inputs(mlp, latent, lconfig, num_augmentations=3, seed=0)
    # Positives are training samples of the anchor's class; z̄ is the class mean.
    labels = latent.test_labels
    assert torch.equal(y["z_bar"], y["class_means"][labels])
    z_train = torch.nn.functional.normalize(
        probes.extract_features(mlp, latent.train_images, which="projection"), dim=1
    )
    for i in range(len(labels)):
        same = z_train[latent.train_labels == labels[i]]
        assert bool((same == y["z_positive"][i]).all(dim=1).any())
    # A class with a single test sample still gets a positive (drawn from the training set).
    sparse = load_dataset("latent-class", num_classes=10, dim=6, train_size=60, test_size=12)
    assert bool((torch.bincount(sparse.test_labels, minlength=10) == 1).any())
    s_in = bounds.bound_inputs(mlp, sparse, lconfig, num_augmentations=1, seed=0)
    assert s_in["z_positive"].shape == (12, 4)
    out = bounds.terms_from_inputs(y, temperature=0.5, num_negatives=5, num_passes=2, seed=0)
    assert out["d_f"] == 0.0
    # The accuracy scores each sample's own feature (z̄ = μ_y would always be right).
    assert torch.equal(y["z_classify"], y["z"])
    pred = [int(np.argmax([float(y["z"][i] @ m) for m in y["class_means"]])) for i in range(30)]
    expected = 100.0 * float(np.mean(np.array(pred) == labels.numpy()))
    assert expected < 100.0  # noisy classes: the check can tell z from z̄
    assert out["centroid_accuracy"] == pytest.approx(expected)


def test_the_exact_coverage_refuses_work_past_its_cap_and_names_the_sizes() -> None:
    from negatives import bounds

    with pytest.raises(ValueError, match=r"num_draws=100000, num_classes=10000: .*over the cap"):
        bounds.coverage_probability(100_000, num_classes=10_000)
    assert bounds.coverage_probability(10**6, num_classes=100) == 1.0  # the rounding shortcut


# -- the bounds for every K (Bao, Nagano & Nozawa 2022) and the earlier ones' factors ----------


def _binomial_expectation_by_sampling(k: int, c: int, fn, draws: int = 400_000) -> float:
    """E fn(m), m the count of K negatives in the anchor's class, by simulating the draws."""
    rng = np.random.default_rng(0)
    m = (rng.integers(0, c, size=(draws, k)) == 0).sum(1)  # class 0 is the anchor's
    return float(np.mean(fn(m)))


@pytest.mark.parametrize("k, c", [(9, 10), (31, 10), (127, 100)])
def test_the_optimal_losses_match_a_simulation_of_their_definitions(k: int, c: int) -> None:
    from negatives import bounds

    b = 1.0
    nce = _binomial_expectation_by_sampling(
        k, c, lambda m: np.log(1 + m + (k - m) * np.exp(-2 * b * b))
    )
    assert bounds.min_contrastive_loss(k, c, b) == pytest.approx(nce, rel=2e-3)
    col = _binomial_expectation_by_sampling(k, c, lambda m: np.log(1 + m))
    assert bounds.collision_term(k, c) == pytest.approx(col, rel=1e-2, abs=1e-3)
    assert bounds.min_supervised_loss(c, b) == pytest.approx(np.log(1 + (c - 1) * np.exp(-2)))


def test_surrogate_gap_intercepts_at_a_uniform_and_a_skewed_prior() -> None:
    from negatives import bounds

    k, c, b = 63, 10, 0.7
    gamma, delta = bounds.surrogate_gap_bounds(k, [1 / c] * c, b)
    lc = np.log(np.cosh(b**2))
    # uniform: H = log C and pi_max C^2 = C
    assert gamma == pytest.approx(np.log(c) + np.log(k) - 2 * np.log(1 + k) - 2 * lc)
    assert delta == pytest.approx(np.log(c / k) + 2 * lc)
    probs = [0.5, 0.25, 0.125, 0.125]
    gamma, delta = bounds.surrogate_gap_bounds(k, probs, b)
    assert gamma == pytest.approx(1.75 * np.log(2) + np.log(k) - 2 * np.log(1 + k) - 2 * lc)
    assert delta == pytest.approx(np.log(0.5 * 16 / k) + 2 * lc)
    with pytest.raises(ValueError, match="class_probs must sum to 1"):
        bounds.surrogate_gap_bounds(k, [0.5, 0.4], b)


def test_the_earlier_bounds_factors_and_where_they_explode() -> None:
    from negatives import bounds

    c = 10
    for k in (15, 31, 63):
        f = bounds.earlier_bound_coefficients(k, c)
        ups = bounds.coverage_probability(k + 1, num_classes=c)
        tau = 1 - (1 - 1 / c) ** k
        h = sum(1 / i for i in range(1, c))
        assert f["bao"] == 1.0
        assert f["arora"] == pytest.approx(1 / ((1 - tau) * ups))
        assert f["nozawa_sato"] == pytest.approx(2 / ups)
        assert f["ash"] == pytest.approx(2 * max(1, 2 * (c - 1) * h / k) / (1 - tau))
    assert bounds.earlier_bound_coefficients(5, c)["nozawa_sato"] == np.inf  # K + 1 < C
    assert bounds.earlier_bound_coefficients(2047, c)["arora"] == np.inf  # 1 - tau rounds to 0
    # at K + 1 = 32 the bound for every K is the tightest of the four (the authors' argument)
    k = 31
    f = bounds.earlier_bound_coefficients(k, c)
    r, col = bounds.min_contrastive_loss(k, c), bounds.collision_term(k, c)
    ours = r + bounds.surrogate_gap_bounds(k, [1 / c] * c)[1]
    earlier = [
        f["arora"] * (r - col),
        (2 * r - col) * f["nozawa_sato"] / 2,
        f["ash"] * (r - col),
    ]
    assert bounds.min_supervised_loss(c) <= ours < min(earlier)


@pytest.mark.parametrize("c", [2, 10, 100])
@pytest.mark.parametrize("b", [0.5, 1.0, 2**0.5])
def test_the_surrogate_gap_bounds_hold_at_the_optimum(c: int, b: float) -> None:
    # lower <= R*_supv <= upper at the population optimum, every K: the direction of the lower
    # intercept is read from the authors' function names; this is what would refute it
    from negatives import bounds

    sup = bounds.min_supervised_loss(c, b)
    for k in (1, 3, 15, 63, 255, 1023):
        lower, upper = bounds.surrogate_gap_sup_bounds(
            bounds.min_contrastive_loss(k, c, b), k, [1 / c] * c, b
        )
        assert lower <= sup <= upper


def test_every_sup_bound_from_measured_terms_by_hand() -> None:
    from negatives import bounds

    # one encoder's measured terms (made up) at t = 0.5, so b^2 = 1 / t = 2
    terms = {
        "info_loss": 3.2,
        "collision_term": 0.4,
        "tau": 0.9,
        "num_negatives": 63.0,
        "temperature": 0.5,
    }
    c, k = 10, 63
    out = bounds.every_sup_bound(terms, [1 / c] * c)
    h = sum(1 / i for i in range(1, c))  # H_9
    assert out["ash_sup_upper_bound"] == pytest.approx(
        2 * max(1, 2 * 9 * h / k) / (1 - 0.9) * (3.2 - 0.4)
    )
    lc = np.log(np.cosh(2.0))
    assert out["bao_sup_upper_bound"] == pytest.approx(3.2 + np.log(c / k) + 2 * lc)
    assert out["bao_sup_lower_bound"] == pytest.approx(
        3.2 + np.log(c) + np.log(k) - 2 * np.log(1 + k) - 2 * lc
    )
    # no collision-free anchor: Ash et al.'s bound says nothing
    assert bounds.every_sup_bound({**terms, "tau": 1.0}, [1 / c] * c)["ash_sup_upper_bound"] == (
        np.inf
    )
