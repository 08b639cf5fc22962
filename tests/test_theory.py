"""negatives.theory: the exact population loss against enumeration and Monte Carlo, the optimum
against the regular simplex, downstream metrics and the CURL view against hand computations."""

from __future__ import annotations

import json
import math

import pytest
import torch

from negatives import theory

F64 = torch.float64


def _random_vectors(num_classes: int, dim: int, seed: int, ball: bool = True) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    v = torch.randn(num_classes, dim, generator=gen, dtype=F64)
    v = v / v.norm(dim=1, keepdim=True)
    if ball:
        v = v * torch.rand(num_classes, 1, generator=gen, dtype=F64)
    return v


def _random_probs(num_classes: int, seed: int) -> list[float]:
    gen = torch.Generator().manual_seed(seed + 1000)
    p = torch.rand(num_classes, generator=gen, dtype=F64) + 0.05
    return (p / p.sum()).tolist()


def _simplex_vectors(num_classes: int) -> torch.Tensor:
    """Centred standard basis, normalised: a regular simplex in R^C (rank C - 1)."""
    e = torch.eye(num_classes, dtype=F64)
    v = e - e.mean(dim=0, keepdim=True)
    return v / v.norm(dim=1, keepdim=True)


def _binomial_pmf(k: int, p: float) -> list[float]:
    return [math.comb(k, m) * p**m * (1 - p) ** (k - m) for m in range(k + 1)]


# ------------------------------------------------------------------------- exact loss


@pytest.mark.parametrize(
    "num_classes, num_negatives, scale, seed",
    [
        (2, 1, 1.0, 0),
        (2, 9, 10.0, 1),
        (3, 5, 1.0, 2),
        (3, 12, 0.3, 3),
        (4, 7, 3.0, 4),
        (5, 4, 2.0, 5),
    ],
)
def test_integral_matches_enumeration(num_classes, num_negatives, scale, seed):
    v = _random_vectors(num_classes, 4, seed)
    rho = _random_probs(num_classes, seed)
    exact = theory.population_loss(v, num_negatives, rho, scale).item()
    enumerated = theory.population_loss_enumerated(v, num_negatives, rho, scale)
    assert exact == pytest.approx(enumerated, rel=1e-12, abs=1e-10)


def test_uniform_prior_is_the_default():
    v = _random_vectors(3, 3, 7)
    uniform = [1 / 3] * 3
    assert theory.population_loss(v, 4).item() == pytest.approx(
        theory.population_loss_enumerated(v, 4, uniform), abs=1e-12
    )


def test_simplex_loss_matches_binomial_sum_at_large_k():
    # At the regular simplex every non-collision has a = exp(-s C / (C-1)), so with n ~ Bin(K, 1/C)
    # collisions the loss is log(1 + n + (K - n) a): a one-dimensional sum, far beyond enumeration.
    c, k, s = 10, 1024, 2.0
    a = math.exp(-s * c / (c - 1))
    pmf = _binomial_pmf(k, 1 / c)
    expected = math.fsum(p * math.log1p(m + (k - m) * a) for m, p in enumerate(pmf))
    got = theory.population_loss(_simplex_vectors(c), k, scale=s).item()
    assert got == pytest.approx(expected, rel=1e-13)


def test_quadrature_has_converged():
    v = _random_vectors(12, 12, 3)
    rho = _random_probs(12, 3)
    for k, s in [(1, 1.0), (4096, 10.0), (300, 0.1)]:
        coarse = theory.population_loss(v, k, rho, s).item()
        fine = theory.population_loss(v, k, rho, s, step=theory.DEFAULT_STEP / 2).item()
        assert coarse == pytest.approx(fine, rel=1e-13, abs=1e-14)


def test_integral_matches_monte_carlo():
    v = _random_vectors(5, 5, 11)
    rho = _random_probs(5, 11)
    k, s = 64, 3.0
    exact = theory.population_loss(v, k, rho, s).item()
    mc = theory.population_loss_monte_carlo(v, k, rho, s, num_samples=40_000, seed=0)
    assert mc.standard_error > 0
    assert abs(mc.mean - exact) < 4 * mc.standard_error
    again = theory.population_loss_monte_carlo(v, k, rho, s, num_samples=40_000, seed=0)
    assert again == mc  # seeded


def test_gradient_matches_finite_differences():
    v = _random_vectors(4, 3, 5).requires_grad_(True)
    rho = _random_probs(4, 5)
    assert torch.autograd.gradcheck(
        lambda x: theory.population_loss(x, 6, rho, 2.0), (v,), eps=1e-6, atol=1e-7
    )


def test_per_class_losses_average_to_the_loss():
    v = _random_vectors(4, 4, 8)
    rho = _random_probs(4, 8)
    per = theory.population_loss_per_class(v, 5, rho, 1.5)
    assert per.shape == (4,)
    total = theory.population_loss(v, 5, rho, 1.5)
    assert float((torch.tensor(rho, dtype=F64) * per).sum()) == pytest.approx(
        float(total), abs=1e-14
    )


def test_collision_free_loss_matches_enumeration():
    v = _random_vectors(3, 3, 9)
    rho = _random_probs(3, 9)
    got = theory.collision_free_loss(v, 6, rho, 2.0).item()
    ref = theory.population_loss_enumerated(v, 6, rho, 2.0, collision_free=True)
    assert got == pytest.approx(ref, rel=1e-12)


def test_quadrature_check_against_enumeration_and_monte_carlo():
    cases = [(2, 9, 10.0), (3, 5, 1.0)]
    rows = theory.quadrature_check(cases, num_samples=20_000, seed=0)
    assert [(r["C"], r["K"], r["scale s"]) for r in rows] == cases
    for r in rows:
        assert r["|integral - enumeration|"] == abs(r["integral"] - r["enumeration"]) < 1e-10
        assert (
            r["(integral - MC) / s.e."] == (r["integral"] - r["Monte Carlo"]) / r["MC std. error"]
        )
        assert abs(r["(integral - MC) / s.e."]) < 5
    # case i draws from seed + i: the second case alone, from seed 1, is the same row
    alone = theory.quadrature_check(cases[1:], num_samples=20_000, seed=1)[0]
    clock = "integral time (ms)"
    assert {**alone, clock: 0} == {**rows[1], clock: 0}


# ------------------------------------------------------------------------- optimum


def test_simplex_gram_and_distance():
    for c in (2, 3, 7):
        g = theory.simplex_gram(c)
        assert torch.allclose(torch.diagonal(g), torch.ones(c, dtype=F64))
        assert torch.allclose(g.sum(dim=1), torch.zeros(c, dtype=F64), atol=1e-12)
        eig = torch.linalg.eigvalsh(g)
        assert eig.min() > -1e-12 and int((eig > 1e-9).sum()) == c - 1
        v = _simplex_vectors(c)
        assert theory.simplex_distance(v @ v.T) < 1e-12
    v = _random_vectors(4, 4, 0, ball=False)
    assert theory.simplex_distance(v @ v.T) > 0.05


@pytest.mark.parametrize("constraint", ["sphere", "ball"])
@pytest.mark.parametrize("num_classes", [2, 3, 4, 5])
def test_optimum_is_the_simplex_for_uniform_classes(num_classes, constraint):
    for k, s in [(1, 1.0), (8, 5.0), (256, 1.0)]:
        res = theory.optimal_representation(
            num_classes, k, num_classes, scale=s, constraint=constraint, restarts=2, seed=3
        )
        assert res.simplex_distance < 1e-5, (k, s, res.gram)
        assert res.loss < res.initial_loss  # the optimiser did something
        norms = res.vectors.norm(dim=1)
        assert torch.all(norms <= 1 + 1e-12)
        # no lower loss than the simplex itself, and the simplex is reached
        at_simplex = theory.population_loss(_simplex_vectors(num_classes), k, scale=s).item()
        assert res.loss == pytest.approx(at_simplex, abs=1e-10)
        assert max(res.restart_losses) - min(res.restart_losses) < 1e-8


def test_optimum_with_minimal_dimension_and_init():
    c = 4
    res = theory.optimal_representation(c, 16, c - 1, restarts=1)
    assert res.vectors.shape == (c, c - 1)
    assert res.simplex_distance < 1e-5
    warm = theory.optimal_representation(c, 32, c - 1, restarts=0, init=res.vectors)
    assert warm.simplex_distance < 1e-5 and len(warm.restart_losses) == 1


def test_non_uniform_optimum_is_not_the_simplex_but_is_reproducible():
    rho = [0.55, 0.25, 0.12, 0.08]
    res = theory.optimal_representation(4, 16, 4, rho, scale=2.0, restarts=3, seed=0)
    assert res.simplex_distance > 1e-2
    assert max(res.restart_losses) - min(res.restart_losses) < 1e-9
    simplex = theory.population_loss(_simplex_vectors(4), 16, rho, 2.0).item()
    assert res.loss < simplex - 1e-6


# ------------------------------------------------------------------------- downstream


def test_downstream_metrics_of_the_simplex():
    c, s = 6, 3.0
    m = theory.downstream_metrics(_simplex_vectors(c), scale=s)
    expected = math.log1p((c - 1) * math.exp(-s * c / (c - 1)))
    assert m.supervised_loss == pytest.approx(expected, rel=1e-12)
    assert m.balanced_supervised_loss == pytest.approx(expected, rel=1e-12)
    assert m.accuracy == pytest.approx(1.0) and m.balanced_accuracy == pytest.approx(1.0)
    assert m.min_margin == pytest.approx(1 + 1 / (c - 1), rel=1e-12)


def test_downstream_metrics_against_a_naive_loop():
    v = _random_vectors(5, 3, 21)
    rho = _random_probs(5, 21)
    s = 2.5
    m = theory.downstream_metrics(v, rho, s)
    loss, acc = 0.0, 0.0
    for c in range(5):
        logits = torch.stack([s * v[c] @ v[j] for j in range(5)])
        loss += rho[c] * float(torch.nn.functional.cross_entropy(logits[None], torch.tensor([c])))
        acc += rho[c] * float(int(torch.argmax(logits)) == c)
    assert m.supervised_loss == pytest.approx(loss, rel=1e-12)
    assert m.accuracy == pytest.approx(acc, abs=1e-12)


def test_collapsed_classes_split_the_tie():
    v = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0]], dtype=F64)
    m = theory.downstream_metrics(v, [0.5, 0.25, 0.25])
    assert m.accuracy == pytest.approx(0.5 * 0.5 + 0.25 * 0.5 + 0.25)
    assert m.balanced_accuracy == pytest.approx((0.5 + 0.5 + 1) / 3)
    assert m.min_margin == pytest.approx(0.0)


def test_optimum_reports_the_simplex_its_classifier_and_the_curl_view():
    rho = [1 / 3] * 3
    r = theory.optimum(3, 8, 3, rho, scale=2.0, constraint="sphere", seed=0, restarts=2)
    assert list(r) == [
        *("C", "K", "scale", "constraint", "loss", "simplex distance", "supervised loss"),
        *("accuracy", "balanced supervised loss", "balanced accuracy", "min margin", "min norm"),
        *("max norm", "tau_K", "log10 (1 - tau_K)", "collision term", "collision-free loss"),
        *("log10 CURL bound", "restarts", "restart spread", "gradient norm", "iterations"),
        "seconds",
    ]  # the run cache keeps these names
    json.dumps(r)  # plain numbers
    simplex = _simplex_vectors(3)
    assert r["simplex distance"] < 1e-6 and r["accuracy"] == 1.0
    assert r["min norm"] == pytest.approx(1.0) and r["max norm"] == pytest.approx(1.0)
    assert r["loss"] == pytest.approx(theory.population_loss(simplex, 8, scale=2.0).item())
    downstream = theory.downstream_metrics(simplex, rho, 2.0)
    assert r["supervised loss"] == pytest.approx(downstream.supervised_loss, abs=1e-8)
    assert r["restarts"] == 2 and 0 <= r["restart spread"] < 1e-8
    curl = theory.curl_bound_prediction(r["loss"], 8, rho)
    assert r["tau_K"] == curl.collision_probability
    assert r["log10 CURL bound"] == pytest.approx(curl.log_bound / math.log(10))
    assert 10 ** r["log10 CURL bound"] >= r["collision-free loss"]  # CURL bounds L_sub


# ------------------------------------------------------------------------- CURL view


def test_curl_prediction_against_hand_sums():
    rho = [0.5, 0.3, 0.2]
    k = 7
    pred = theory.curl_bound_prediction(3.0, k, rho)
    no_collision = sum(p * (1 - p) ** k for p in rho)
    coll = sum(p * sum(q * math.log1p(m) for m, q in enumerate(_binomial_pmf(k, p))) for p in rho)
    assert pred.collision_probability == pytest.approx(1 - no_collision, rel=1e-13)
    assert pred.collision_term == pytest.approx(coll, rel=1e-12)
    assert pred.bound == pytest.approx((3.0 - coll) / no_collision, rel=1e-12)


def test_curl_tau_agrees_with_bounds_module():
    bounds = pytest.importorskip("negatives.bounds")
    for k in (1, 31, 127):
        pred = theory.curl_bound_prediction(1.0, k, num_classes=10)
        assert pred.collision_probability == pytest.approx(
            bounds.collision_probability(k, num_classes=10), rel=1e-12
        )


def test_curl_bound_bounds_the_collision_free_loss_and_explodes():
    v = _simplex_vectors(4)
    preds = []
    for k in (1, 8, 64):
        loss = theory.population_loss(v, k, scale=2.0).item()
        pred = theory.curl_bound_prediction(loss, k, num_classes=4)
        assert pred.bound >= theory.collision_free_loss(v, k, scale=2.0).item() - 1e-12
        preds.append(pred.log_bound)
    assert preds[0] < preds[1] < preds[2]
    huge = theory.curl_bound_prediction(8.0, 4096, num_classes=2)
    assert huge.bound == math.inf and math.isfinite(huge.log_bound) and huge.log_bound > 700


# ------------------------------------------------------------------------- errors


def test_bad_inputs_name_the_parameter():
    v = _random_vectors(3, 3, 0)
    with pytest.raises(ValueError, match="num_negatives"):
        theory.population_loss(v, 0)
    with pytest.raises(ValueError, match="num_classes"):
        theory.population_loss(v[:1], 3)
    with pytest.raises(ValueError, match="vectors"):
        theory.population_loss(torch.ones(3, dtype=F64), 3)
    with pytest.raises(ValueError, match="class_probs"):
        theory.population_loss(v, 3, [0.5, 0.3, 0.3])
    with pytest.raises(ValueError, match="class_probs"):
        theory.population_loss(v, 3, [0.5, 0.5])
    with pytest.raises(ValueError, match="class_probs"):
        theory.population_loss(v, 3, [0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="scale"):
        theory.population_loss(v, 3, scale=0.0)
    with pytest.raises(ValueError, match="num_negatives"):
        theory.population_loss_enumerated(v, 10_000)
    with pytest.raises(ValueError, match="num_samples"):
        theory.population_loss_monte_carlo(v, 3, num_samples=1)
    with pytest.raises(ValueError, match="num_classes"):
        theory.optimal_representation(1, 3, 3)
    with pytest.raises(ValueError, match="num_negatives"):
        theory.optimal_representation(3, 0, 3)
    with pytest.raises(ValueError, match="dim"):
        theory.optimal_representation(5, 3, 3)
    with pytest.raises(ValueError, match="scale"):
        theory.optimal_representation(3, 3, 3, scale=-1.0)
    with pytest.raises(ValueError, match="constraint"):
        theory.optimal_representation(3, 3, 3, constraint="cube")
    with pytest.raises(ValueError, match="restarts"):
        theory.optimal_representation(3, 3, 3, restarts=0)
    with pytest.raises(ValueError, match="init"):
        theory.optimal_representation(3, 3, 3, init=torch.ones(2, 3, dtype=F64))
    with pytest.raises(ValueError, match="num_classes"):
        theory.simplex_gram(1)
    with pytest.raises(ValueError, match="gram"):
        theory.simplex_distance(torch.ones(2, 3))
    with pytest.raises(ValueError, match="tie_tolerance"):
        theory.downstream_metrics(v, tie_tolerance=-1.0)
    with pytest.raises(ValueError, match="unsupervised_loss"):
        theory.curl_bound_prediction(-1.0, 3, num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        theory.curl_bound_prediction(1.0, 3)
