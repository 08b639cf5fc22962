"""Tests for negatives.losses against naive Python loops (math.exp / math.log)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from negatives.losses import (
    contrastive_logits,
    debiased_info_nce,
    debiased_nt_xent,
    info_nce,
    nt_xent,
)


def _dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


def naive_info_nce(q, pos, negs_per_row, temperature, keep_per_row=None) -> list[float]:
    """One sample at a time: -log(e^{q.k+/T} / (e^{q.k+/T} + sum_kept e^{q.k-/T}))."""
    out = []
    for b in range(len(q)):
        p = math.exp(_dot(q[b], pos[b]) / temperature)
        denom = p
        for j, k in enumerate(negs_per_row[b]):
            if keep_per_row is None or keep_per_row[b][j]:
                denom += math.exp(_dot(q[b], k) / temperature)
        out.append(-math.log(p / denom))
    return out


def _unit(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def test_contrastive_logits_shapes_and_values() -> None:
    q, p, n = _unit(3, 4, seed=0), _unit(3, 4, seed=1), _unit(5, 4, seed=2)
    logits = contrastive_logits(q, p, n)
    assert logits.shape == (3, 6)
    for b in range(3):
        assert logits[b, 0].item() == pytest.approx(_dot(q[b].tolist(), p[b].tolist()))
        for j in range(5):
            assert logits[b, 1 + j].item() == pytest.approx(_dot(q[b].tolist(), n[j].tolist()))


@pytest.mark.parametrize("temperature", [0.07, 0.5, 1.0])
def test_info_nce_shared_negatives_matches_loop(temperature: float) -> None:
    q, p, n = _unit(4, 6, seed=0), _unit(4, 6, seed=1), _unit(7, 6, seed=2)
    loss = info_nce(q, p, n, temperature)
    assert loss.shape == (4,) and loss.dtype == torch.float32
    expected = naive_info_nce(q.tolist(), p.tolist(), [n.tolist()] * 4, temperature)
    torch.testing.assert_close(
        loss, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-5
    )


def test_info_nce_per_query_negatives_matches_loop() -> None:
    q, p, n = _unit(4, 6, seed=3), _unit(4, 6, seed=4), _unit(4, 5, 6, seed=5)
    loss = info_nce(q, p, n, 0.2)
    expected = naive_info_nce(q.tolist(), p.tolist(), n.tolist(), 0.2)
    torch.testing.assert_close(
        loss, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-5
    )


def test_shared_equals_repeated_per_query() -> None:
    q, p, n = _unit(5, 8, seed=6), _unit(5, 8, seed=7), _unit(9, 8, seed=8)
    shared = info_nce(q, p, n, 0.1)
    repeated = info_nce(q, p, n.unsqueeze(0).expand(5, 9, 8), 0.1)
    torch.testing.assert_close(shared, repeated)


def test_mask_equals_deleting_negatives() -> None:
    q, p, n = _unit(4, 6, seed=9), _unit(4, 6, seed=10), _unit(10, 6, seed=11)
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(4, 10, generator=g) < 0.5
    mask[0] = True  # one row keeps all
    masked = info_nce(q, p, n, 0.07, mask=mask)
    for b in range(4):
        reduced = info_nce(q[b : b + 1], p[b : b + 1], n[mask[b]], 0.07)
        torch.testing.assert_close(masked[b : b + 1], reduced)
    expected = naive_info_nce(q.tolist(), p.tolist(), [n.tolist()] * 4, 0.07, mask.tolist())
    torch.testing.assert_close(
        masked, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=1e-5
    )


def test_all_masked_gives_zero_and_finite_gradients() -> None:
    q = _unit(3, 4, seed=12).float().requires_grad_()
    p = _unit(3, 4, seed=13).float().requires_grad_()
    n = _unit(3, 5, 4, seed=14).float().requires_grad_()
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1] = False  # row 1: no negatives left -> -log 1 = 0
    mask[2, :4] = False
    loss = info_nce(q, p, n, 0.1, mask=mask)
    assert loss[1].item() == 0.0
    assert loss[0].item() > 0 and loss[2].item() > 0
    loss.sum().backward()
    for t in (q, p, n):
        assert torch.isfinite(t.grad).all()
    # masked negatives get exactly zero gradient
    assert (n.grad[~mask] == 0).all()
    assert (n.grad[mask].abs().sum(-1) > 0).all()


def test_zero_negatives_gives_zero() -> None:
    q, p = _unit(2, 3, seed=15), _unit(2, 3, seed=16)
    loss = info_nce(q, p, torch.empty(0, 3, dtype=torch.float64), 0.5)
    assert torch.equal(loss, torch.zeros(2))


def test_inputs_are_not_normalised_by_info_nce() -> None:
    q, p, n = _unit(2, 3, seed=17), _unit(2, 3, seed=18), _unit(4, 3, seed=19)
    assert not torch.allclose(info_nce(2 * q, p, n, 0.5), info_nce(q, p, n, 0.5))


def test_info_nce_bf16_inputs_give_float32() -> None:
    q, p, n = _unit(2, 8, seed=20), _unit(2, 8, seed=21), _unit(4, 8, seed=22)
    loss = info_nce(q.bfloat16(), p.bfloat16(), n.bfloat16(), 0.07)
    assert loss.dtype == torch.float32
    exact = info_nce(q.bfloat16().double(), p.bfloat16().double(), n.bfloat16().double(), 0.07)
    torch.testing.assert_close(loss, exact.float(), rtol=1e-5, atol=1e-5)


def test_losses_stay_float32_under_autocast() -> None:
    q, p, n = (
        _unit(3, 8, seed=23).float(),
        _unit(3, 8, seed=24).float(),
        _unit(5, 8, seed=25).float(),
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = info_nce(q, p, n, 0.07)
        pair = nt_xent(q, p, 0.07)
    assert loss.dtype == torch.float32 and pair.dtype == torch.float32
    torch.testing.assert_close(loss, info_nce(q, p, n, 0.07))
    torch.testing.assert_close(pair, nt_xent(q, p, 0.07))


def test_info_nce_errors() -> None:
    q, p, n = _unit(2, 3, seed=0), _unit(2, 3, seed=1), _unit(4, 3, seed=2)
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            info_nce(q, p, n, bad)
    with pytest.raises(ValueError, match="positive"):
        info_nce(q, p[:1], n, 0.1)
    with pytest.raises(ValueError, match="negatives"):
        info_nce(q, p, _unit(4, 5, seed=3), 0.1)
    with pytest.raises(ValueError, match="negatives"):
        info_nce(q, p, _unit(3, 4, 3, seed=3), 0.1)
    with pytest.raises(ValueError, match="mask"):
        info_nce(q, p, n, 0.1, mask=torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        info_nce(q, p, n, 0.1, mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="query"):
        info_nce(q[0], p[0], n, 0.1)


def naive_nt_xent(z1, z2, temperature, neg_mask=None, scale=1.0) -> list[float]:
    """SimCLR eq. 1 one anchor at a time, on cosine similarities; ``scale`` multiplies the
    negatives' sum (EqCo's alpha / K)."""

    def cos(a, b):
        return _dot(a, b) / math.sqrt(_dot(a, a) * _dot(b, b))

    batch = len(z1)
    views = [(z1[i], i) for i in range(batch)] + [(z2[i], i) for i in range(batch)]
    out = []
    for a, (za, ia) in enumerate(views):
        positive = (a + batch) % (2 * batch)
        num = math.exp(cos(za, views[positive][0]) / temperature)
        denom = num
        for zb, ib in views:
            if ib == ia:
                continue  # self and positive are not negatives
            if neg_mask is not None and not neg_mask[ia][ib]:
                continue
            denom += scale * math.exp(cos(za, zb) / temperature)
        out.append(-math.log(num / denom))
    return out


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_loop(temperature: float) -> None:
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    loss = nt_xent(z1, z2, temperature)
    assert loss.shape == (10,)
    expected = naive_nt_xent(z1.tolist(), z2.tolist(), temperature)
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_nt_xent_with_mask_matches_loop_and_diagonal_is_ignored() -> None:
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    neg_mask = torch.rand(6, 6, generator=g) < 0.5
    neg_mask[3] = False  # anchor instance 3 keeps no negatives -> loss 0 for both its views
    loss = nt_xent(z1, z2, 0.2, neg_mask=neg_mask)
    expected = naive_nt_xent(z1.tolist(), z2.tolist(), 0.2, neg_mask.tolist())
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-5, atol=1e-5)
    assert loss[3].item() == 0.0 and loss[9].item() == 0.0
    flipped = neg_mask.clone()
    flipped.diagonal().logical_not_()
    torch.testing.assert_close(nt_xent(z1, z2, 0.2, neg_mask=flipped), loss)
    full = torch.ones(6, 6, dtype=torch.bool)
    torch.testing.assert_close(nt_xent(z1, z2, 0.2, neg_mask=full), nt_xent(z1, z2, 0.2))


def test_nt_xent_equals_info_nce_with_per_query_negatives() -> None:
    # anchor i of view 1: positive z2[i], negatives = both views of the other instances
    g = torch.Generator().manual_seed(3)
    z1 = F.normalize(torch.randn(4, 5, generator=g), dim=1)
    z2 = F.normalize(torch.randn(4, 5, generator=g), dim=1)
    loss = nt_xent(z1, z2, 0.3)
    negs = torch.stack(
        [torch.cat([z1[torch.arange(4) != i], z2[torch.arange(4) != i]]) for i in range(4)]
    )  # (4, 6, 5)
    torch.testing.assert_close(loss[:4], info_nce(z1, z2, negs, 0.3))


def test_nt_xent_gradients_finite_with_mask() -> None:
    g = torch.Generator().manual_seed(4)
    z1 = torch.randn(4, 3, generator=g).requires_grad_()
    z2 = torch.randn(4, 3, generator=g).requires_grad_()
    neg_mask = torch.zeros(4, 4, dtype=torch.bool)
    neg_mask[0, 1] = True
    nt_xent(z1, z2, 0.1, neg_mask=neg_mask).sum().backward()
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()
    assert z1.grad[1].abs().sum() > 0


def test_nt_xent_errors() -> None:
    z = torch.randn(3, 4)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            nt_xent(z, z, bad)
    with pytest.raises(ValueError, match="z1"):
        nt_xent(z, z[:2], 0.5)
    with pytest.raises(ValueError, match="neg_mask"):
        nt_xent(z, z, 0.5, neg_mask=torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="neg_mask"):
        nt_xent(z, z, 0.5, neg_mask=torch.ones(3, 3))


def test_masked_logsumexp_equals_minus_inf_masking_with_its_gradient() -> None:
    from negatives.losses import masked_logsumexp

    g = torch.Generator().manual_seed(3)
    logits = (30 * torch.randn(6, 40, generator=g, dtype=torch.float64)).requires_grad_()
    keep = torch.rand(6, 40, generator=g) < 0.3
    keep[:, 0] = True
    keep[0] = False
    keep[0, 5] = True  # one kept entry
    keep[1, 1:] = False
    keep[1, 0] = True
    # masked entries far above the kept ones must not overflow (exp(200) * 0 would be nan)
    with torch.no_grad():
        logits[2] = torch.where(keep[2], logits[2], logits[2] + 500.0)
    got = masked_logsumexp(logits, keep)
    expected = torch.logsumexp(logits.masked_fill(~keep, float("-inf")), dim=1)
    torch.testing.assert_close(got, expected)
    (g1,) = torch.autograd.grad(got.sum(), logits)
    (g2,) = torch.autograd.grad(expected.sum(), logits)
    torch.testing.assert_close(g1, g2)
    assert (g1[~keep] == 0).all() and torch.isfinite(g1).all()


# -- debiased (Chuang et al. 2020) and hard-negative (Robinson et al. 2021) losses -----------


def _naive_debiased(pos: float, negs: list[float], t: float, tau: float, beta: float) -> float:
    """The authors' estimator for one anchor, term by term, in float64: ``neg = exp(s/T)``,
    ``imp = neg^beta``, ``reweight = sum(imp * neg) / mean(imp)``, ``Ng = (-tau N pos +
    reweight) / (1 - tau)`` clamped at ``N e^{-1/T}``, ``loss = -log(pos / (pos + Ng))``."""
    n = len(negs)
    p = math.exp(pos / t)
    neg = [math.exp(s / t) for s in negs]
    imp = [e**beta for e in neg]
    reweight = sum(i * e for i, e in zip(imp, neg, strict=True)) / (sum(imp) / n)
    ng = max((-tau * n * p + reweight) / (1 - tau), n * math.exp(-1 / t))
    return -math.log(p / (p + ng))


@pytest.mark.parametrize("tau, beta", [(0.0, 0.0), (0.1, 0.0), (0.1, 1.0), (0.5, 0.5), (0.9, 2.0)])
def test_debiased_info_nce_matches_a_per_anchor_loop(tau: float, beta: float) -> None:
    g = torch.Generator().manual_seed(3)
    q = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    keys = F.normalize(torch.randn(6, 8, generator=g), dim=1)
    queue = F.normalize(torch.randn(20, 8, generator=g), dim=1)
    mask = torch.rand(6, 20, generator=g) < 0.6
    mask[:, 0] = True  # every anchor keeps one negative
    pos, neg = (q * keys).sum(1), q @ queue.T
    got = debiased_info_nce(pos, neg, 0.2, tau, beta, mask)
    for i in range(6):
        negs = [float(neg[i, j]) for j in range(20) if mask[i, j]]
        want = _naive_debiased(float(pos[i]), negs, 0.2, tau, beta)
        assert got[i].item() == pytest.approx(want, rel=1e-5, abs=1e-5)


def test_debiased_nt_xent_is_the_authors_batch_estimator() -> None:
    """Anchors of both views, N = 2B - 2 negatives (self and positive dropped), as their code."""
    g = torch.Generator().manual_seed(4)
    z1 = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    z2 = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    got = debiased_nt_xent(z1, z2, 0.5, 0.1, 1.0)
    z = torch.cat([z1, z2]).double()
    sim = z @ z.T
    for a in range(10):
        partner = (a + 5) % 10
        negs = [float(sim[a, c]) for c in range(10) if c not in (a, partner)]
        want = _naive_debiased(float(sim[a, partner]), negs, 0.5, 0.1, 1.0)
        assert got[a].item() == pytest.approx(want, rel=1e-5)


def test_without_debiasing_or_weights_it_is_nt_xent_and_info_nce() -> None:
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    mask = torch.rand(8, 8, generator=g) < 0.7
    mask |= torch.eye(8, dtype=torch.bool).roll(1, 1)  # one other instance per anchor kept
    for m in (None, mask):
        assert torch.allclose(
            debiased_nt_xent(z1, z2, 0.3, 0.0, 0.0, m), nt_xent(z1, z2, 0.3, m), atol=1e-5
        )
    q = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    k = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    queue = F.normalize(torch.randn(12, 16, generator=g), dim=1)
    got = debiased_info_nce((q * k).sum(1), q @ queue.T, 0.2, 0.0)
    assert torch.allclose(got, info_nce(q, k, queue, 0.2), atol=1e-5)


def test_the_clamp_holds_where_debiasing_overshoots_and_gradients_are_finite() -> None:
    # a positive far more similar than every negative: the debiased sum goes negative, and
    # the clamp at N e^{-1/T} keeps the loss finite (the papers' constraint)
    pos = torch.tensor([1.0], requires_grad=True)
    neg = torch.full((1, 4), -0.5, requires_grad=True)
    loss = debiased_info_nce(pos, neg, 0.5, 0.5)
    assert loss.item() == pytest.approx(
        -math.log(math.e**2 / (math.e**2 + 4 * math.e**-2)), rel=1e-5
    )
    loss.sum().backward()
    assert torch.isfinite(pos.grad).all() and torch.isfinite(neg.grad).all()


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(tau_plus=1.0), "tau_plus=1.0"),
        (dict(tau_plus=-0.1), "tau_plus"),
        (dict(beta=-1.0), "beta=-1.0"),
        (dict(temperature=0.0), "temperature"),
    ],
)
def test_bad_debiasing_parameters_are_named(kw, match) -> None:
    args = dict(temperature=0.5, tau_plus=0.1, beta=0.0) | kw
    with pytest.raises(ValueError, match=match):
        debiased_info_nce(torch.zeros(2), torch.zeros(2, 3), **args)
    with pytest.raises(ValueError, match="keeps no negative"):
        debiased_info_nce(
            torch.zeros(2), torch.zeros(2, 3), 0.5, 0.1, mask=torch.zeros(2, 3, dtype=torch.bool)
        )


@pytest.mark.parametrize("alpha, k", [(256, 3), (4, 16)])
def test_eqco_shift_scales_the_negatives_sum_as_a_loop(alpha: int, k: int) -> None:
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    neg_mask = torch.rand(6, 6, generator=g) < 0.6
    shift = math.log(alpha / k)
    loss = nt_xent(z1, z2, 0.5, neg_mask=neg_mask, negative_shift=shift)
    expected = naive_nt_xent(z1.tolist(), z2.tolist(), 0.5, neg_mask.tolist(), alpha / k)
    torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-5, atol=1e-5)
    # one rank's rows of the batch give the same anchors' losses
    part = nt_xent(z1, z2, 0.5, neg_mask=neg_mask[2:4], rows=slice(2, 4), negative_shift=shift)
    torch.testing.assert_close(part, torch.cat([loss[2:4], loss[8:10]]))
    # InfoNCE with shared negatives: the same scale on the negatives only
    q, p, n = _unit(4, 6, seed=0), _unit(4, 6, seed=1), _unit(7, 6, seed=2)
    got = info_nce(q, p, n, 0.2, negative_shift=shift)
    for b in range(4):
        pos = math.exp(_dot(q[b].tolist(), p[b].tolist()) / 0.2)
        negs = math.fsum(math.exp(_dot(q[b].tolist(), x) / 0.2) for x in n.tolist())
        assert got[b].item() == pytest.approx(-math.log(pos / (pos + alpha / k * negs)), rel=1e-5)
