"""The latent-class population contrastive loss, computed exactly, and its optimum.

Setting (the latent-class model of Arora et al. 2019, listed as Saunshi et al. in the ICML 2019
proceedings; as used by Awasthi, Dikkala & Kamath, ICML 2022,
"Do More Negative Samples Necessarily Hurt in Contrastive Learning?", arXiv 2205.01789): a latent
class ``c ~ rho`` draws an anchor ``x`` and a positive ``x+`` from the same class; ``K`` negatives
are drawn i.i.d. from the marginal, so their classes ``c_1..c_K`` are i.i.d. from ``rho``. A
representation that is constant on each class, ``f(x) = v_{c(x)}``, has the population loss

    L_K(V) = E_c E_{c_1..c_K} [ -s v_c.v_c + log( e^{s v_c.v_c} + sum_i e^{s v_c.v_{c_i}} ) ]
           = E_c E [ log( 1 + sum_i a_{c c_i} ) ],      a_{cj} = exp(s (v_c.v_j - v_c.v_c)),

with ``s`` an inverse temperature (``scale``). Collisions (``c_i = c``) contribute ``a_cc = 1``.

What we could and could not verify of the paper (searched: the arXiv abstract and the opening of
its introduction, plus a third-party summary; the theorems themselves were not reachable):
- verified (abstract): positive pairs are drawn from a latent class as in Saunshi et al. 2019; the
  downstream performance of the representation that optimises the *population* contrastive loss
  does not degrade with the number of negatives; the paper gives "a structural characterisation
  of the optimal representation" for NCE.
- from a third-party summary only (liner.com review): the structural results assume
  non-overlapping latent classes; the characterisation is "precise" when the class distribution
  is uniform; the optimum can be found by a convex program. Our ``population_loss`` is convex in
  the Gram matrix ``G = V V^T`` (each term is a log-sum-exp of affine functions of ``G``), so the
  problem over ``{G psd, diag(G) = 1}`` or ``{G psd, diag(G) <= 1}`` is convex, consistent with
  that summary.
- NOT verified: the exact norm constraint (unit sphere or unit ball), whether a temperature is
  used, and the exact statement of the optimum's structure (we recall "class vectors on a regular
  simplex"). We therefore support both constraints and any scale ``s > 0``.

Our own argument *(ours)* for the uniform prior: the loss is convex in ``G`` and invariant under
relabelling the classes, so averaging an optimal ``G`` over all permutations gives an optimal
``G = beta I + gamma (11^T - I)``; the loss only depends on ``gamma - beta`` and increases with
it, and ``G psd`` forces ``gamma >= -beta / (C-1)``, so the optimum is ``beta = 1, gamma =
-1/(C-1)``: the regular simplex, for every ``K`` and every ``s``, on the sphere and on the ball,
whenever ``dim >= C - 1``. The numerical optimiser below is tested to find it from random starts.

The exact evaluation (no Monte Carlo): with ``S = sum_i a_{c c_i}`` and
``log x = int_0^inf (e^{-t} - e^{-t x}) / t dt``,

    E log(1 + S) = int_0^inf e^{-t} (1 - phi_c(t)^K) / t dt,    phi_c(t) = sum_j rho_j e^{-t a_cj},

because the ``K`` negative classes are i.i.d. After ``t = e^u`` the integrand is an entire
function of ``u`` that decays like ``e^u`` on the left and double-exponentially on the right and is
bounded in the strip ``|Im u| < pi/2``, so the trapezoid rule on ``u`` converges like
``exp(-pi^2 / h)`` (step ``h = 0.25`` gives about 1e-17; checked against exact enumeration in the
tests). Where ``t max(a) <= 0.1`` (most nodes), ``1 - phi_c(t)`` is summed from its Taylor series
in ``t`` (moments of ``a``), which avoids cancellation and costs ``O(C)`` per node; the remaining
~30 nodes cost ``O(C^2)`` each, whatever ``K``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from negatives.config import check_choice, check_float, check_int, check_probabilities

CONSTRAINTS: tuple[str, ...] = ("sphere", "ball")
DEFAULT_STEP: float = 0.25  # trapezoid step in u = log t; error ~ exp(-pi^2 / step)
_T_MAX: float = 45.0  # e^{-45} < 3e-20: the tail beyond is below float64 resolution
_LOWER_TAIL: float = 1e-18  # left truncation error bound, see _quadrature_nodes
_MAX_ENUMERATED: int = 2_000_000
_SERIES_LIMIT: float = 0.1  # use the Taylor series of 1 - phi(t) where t * max(a) <= this
_SERIES_TERMS: int = 10
_DTYPE = torch.float64


# --------------------------------------------------------------------------- validation


def _check_scale(scale: float) -> float:
    return check_float("scale", scale, 0.0, strict_minimum=True)


def _check_vectors(vectors: torch.Tensor) -> torch.Tensor:
    if not isinstance(vectors, torch.Tensor) or vectors.dim() != 2:
        raise ValueError(f"vectors must be a 2-D tensor (num_classes, dim), got {vectors!r}")
    if vectors.shape[0] < 2:
        raise ValueError(f"vectors must have num_classes >= 2 rows, got {vectors.shape[0]}")
    if not torch.isfinite(vectors).all():
        raise ValueError("vectors must be finite")
    return vectors.to(_DTYPE)


def _class_probs(
    class_probs: Sequence[float] | torch.Tensor | None, num_classes: int
) -> torch.Tensor:
    """``None`` -> uniform; else a strictly positive probability vector of length ``num_classes``."""
    if class_probs is None:
        return torch.full((num_classes,), 1.0 / num_classes, dtype=_DTYPE)
    if isinstance(class_probs, torch.Tensor):
        class_probs = class_probs.detach().cpu().tolist()
    probs = check_probabilities("class_probs", class_probs)
    if len(probs) != num_classes:
        raise ValueError(
            f"class_probs has {len(probs)} entries but there are num_classes={num_classes} classes"
        )
    if min(probs) <= 0.0:
        # A class that never occurs has no anchor and no negative: drop it instead.
        raise ValueError(f"class_probs must be strictly positive, got min {min(probs)!r}")
    return torch.tensor(probs, dtype=_DTYPE)


def _check_num_negatives(num_negatives: int) -> int:
    return check_int("num_negatives", num_negatives, 1)


# --------------------------------------------------------------------------- exact loss


def _quadrature_nodes(num_negatives: int, a_max: float, step: float) -> torch.Tensor:
    """Nodes ``u`` of the trapezoid rule on ``t = e^u``.

    Left of ``u_min`` the integrand is at most ``K * a_max * e^u`` (since ``1 - phi^K <= K t
    max a``), so ``e^{u_min} = 1e-18 / (K a_max)`` bounds the dropped mass by 1e-18.
    """
    u_min = math.log(_LOWER_TAIL / (num_negatives * max(a_max, 1.0)))
    u_max = math.log(_T_MAX)
    n = int(math.ceil((u_max - u_min) / step))
    return u_min + step * torch.arange(n + 1, dtype=_DTYPE)


def _expected_log1p_sum(
    log_a: torch.Tensor, weights: torch.Tensor, num_negatives: int, step: float
) -> torch.Tensor:
    """``E log(1 + sum_{i<=K} a[c, j_i])`` with ``j_i`` i.i.d. from ``weights``, for each row c.

    log_a: (C, M) logs of the positive ratios a, weights: (M,) summing to 1 -> (C,).
    Differentiable in ``log_a``.
    """
    a = torch.exp(log_a)
    a_max = float(a.detach().max())
    u = _quadrature_nodes(num_negatives, a_max, step)
    t = torch.exp(u)  # (N,)
    # x = 1 - phi = sum_j w_j (1 - e^{-t a_cj}). Where t a_max <= 0.1 (most nodes: the left
    # tail is long) its Taylor series in t, sum_k (-1)^(k+1) t^k m_k / k! with the moments
    # m_k = sum_j w_j a_cj^k, is exact to 1e-18 relative after 10 terms, needs only (C, N)
    # work, and avoids the cancellation of 1 - e^{-t a} at small t, where phi ~ 1 and
    # 1 - phi^K ~ K t E[a] would otherwise be lost.
    series = t * a_max <= _SERIES_LIMIT
    t_small, t_large = t[series], t[~series]
    k = torch.arange(1, _SERIES_TERMS + 1, dtype=_DTYPE)  # (T,)
    # a^k as exp(k log a): one exp instead of a (slower) pow over (C, M, T)
    moments = torch.einsum("j,cjk->ck", weights, torch.exp(log_a[:, :, None] * k))  # -> (C, T)
    signs = torch.where(k % 2 == 1, 1.0, -1.0) / torch.exp(torch.lgamma(k + 1))
    coef = t_small[:, None] ** k * signs  # (Ns, T)
    x_small_t = moments @ coef.T  # (C, Ns)
    # elsewhere x >= min_j w_j (1 - e^{-0.1}) is large enough for 1 - exp to be accurate
    x_large_t = torch.einsum("j,cjn->cn", weights, 1.0 - torch.exp(a[:, :, None] * -t_large))
    x = torch.cat([x_small_t, x_large_t], dim=1)  # (C, N), nodes still in increasing order
    small = x <= 0.5
    # x <= 1/2: 1 - phi^K = -expm1(K log1p(-x)), accurate to relative precision. x > 1/2: phi < 1/2
    # is accurate in absolute terms and |d phi^K / d phi| = K phi^(K-1) <= 1 there, so pow is
    # enough. Each branch gets a harmless input where it is not used: torch.where passes a zero
    # gradient to the unused branch, and 0 * inf (log1p at x = 1) would still make a nan.
    x_small = torch.where(small, x, torch.zeros_like(x))
    phi_large = torch.where(small, torch.zeros_like(x), 1.0 - x).clamp_min(0.0)
    one_minus_phi_k = torch.where(
        small, -torch.expm1(num_negatives * torch.log1p(-x_small)), 1.0 - phi_large**num_negatives
    )
    integrand = torch.exp(-t)[None, :] * one_minus_phi_k  # (C, N)
    w = torch.full_like(u, step)
    w[0] = w[-1] = step / 2
    return integrand @ w


def _log_similarity_ratios(vectors: torch.Tensor, scale: float) -> torch.Tensor:
    """``log a_cj = s (v_c.v_j - v_c.v_c)``: (C, d) -> (C, C)."""
    gram = vectors @ vectors.T  # (C, C)
    return scale * (gram - torch.diagonal(gram)[:, None])


def _checked(
    vectors: torch.Tensor,
    num_negatives: int,
    class_probs: Sequence[float] | torch.Tensor | None,
    scale: float,
    step: float,
) -> tuple[torch.Tensor, torch.Tensor, int, float, float]:
    """The population loss's arguments, checked: ``(vectors, rho, K, s, step)``."""
    vectors = _check_vectors(vectors)
    rho = _class_probs(class_probs, vectors.shape[0])
    step = check_float("step", step, 0.0, 1.0, strict_minimum=True)
    return vectors, rho, _check_num_negatives(num_negatives), _check_scale(scale), step


def population_loss_per_class(
    vectors: torch.Tensor,
    num_negatives: int,
    class_probs: Sequence[float] | torch.Tensor | None = None,
    scale: float = 1.0,
    *,
    step: float = DEFAULT_STEP,
) -> torch.Tensor:
    """The conditional loss ``E[loss | anchor class c]`` for every class: (C, d) -> (C,)."""
    vectors, rho, k, s, step = _checked(vectors, num_negatives, class_probs, scale, step)
    return _expected_log1p_sum(_log_similarity_ratios(vectors, s), rho, k, step)


def population_loss(
    vectors: torch.Tensor,
    num_negatives: int,
    class_probs: Sequence[float] | torch.Tensor | None = None,
    scale: float = 1.0,
    *,
    step: float = DEFAULT_STEP,
) -> torch.Tensor:
    """Exact population contrastive loss ``L_K`` of the class vectors (module docstring).

    ``vectors``: (C, d), row c is ``f(x)`` for every ``x`` of class c (no norm constraint is
    imposed here). Returns a float64 scalar tensor, differentiable in ``vectors``. The result
    is deterministic; its quadrature error is about ``exp(-pi^2 / step)``.
    """
    per_class = population_loss_per_class(vectors, num_negatives, class_probs, scale, step=step)
    rho = _class_probs(class_probs, per_class.shape[0])
    return (rho * per_class).sum()


def collision_free_loss(
    vectors: torch.Tensor,
    num_negatives: int,
    class_probs: Sequence[float] | torch.Tensor | None = None,
    scale: float = 1.0,
    *,
    step: float = DEFAULT_STEP,
) -> torch.Tensor:
    """``E[loss | no negative shares the anchor's class]``, exactly (the CURL ``L_sub`` term).

    Given class c and no collision, the negatives are i.i.d. from ``rho`` restricted to the
    other classes; the anchor class has probability ``rho_c (1 - rho_c)^K / (1 - tau_K)``.
    """
    vectors, rho, k, s, step = _checked(vectors, num_negatives, class_probs, scale, step)
    num_classes = vectors.shape[0]
    log_a = _log_similarity_ratios(vectors, s)  # (C, C)
    per_class = []
    with _one_thread():  # C small evaluations: thread start-up would dominate
        for c in range(num_classes):
            others = torch.arange(num_classes) != c
            w = rho[others] / rho[others].sum()
            per_class.append(_expected_log1p_sum(log_a[c : c + 1, others], w, k, step)[0])
    log_weight = torch.log(rho) + k * torch.log1p(-rho)  # rho_c (1 - rho_c)^K, in logs
    weight = torch.softmax(log_weight, dim=0)
    return (weight * torch.stack(per_class)).sum()


# --------------------------------------------------------------------------- references


def _compositions(total: int, parts: int) -> Iterator[tuple[int, ...]]:
    """All tuples of ``parts`` non-negative integers summing to ``total``."""
    if parts == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def population_loss_enumerated(
    vectors: torch.Tensor,
    num_negatives: int,
    class_probs: Sequence[float] | torch.Tensor | None = None,
    scale: float = 1.0,
    *,
    collision_free: bool = False,
) -> float:
    """Slow, obviously correct reference: sum over the multinomial counts of negative classes.

    ``L_K = sum_c rho_c sum_{n_1+..+n_C = K} Mult(n; K, rho) log(1 + sum_j n_j a_cj)``, in plain
    Python floats with ``math.fsum``. With ``collision_free`` it returns ``E[loss | n_c = 0]``.
    Refuses more than 2e6 count vectors (small C and K only).
    """
    vectors = _check_vectors(vectors)
    num_classes = vectors.shape[0]
    rho = _class_probs(class_probs, num_classes).tolist()
    k = _check_num_negatives(num_negatives)
    s = _check_scale(scale)
    if math.comb(k + num_classes - 1, num_classes - 1) > _MAX_ENUMERATED:
        raise ValueError(
            f"num_negatives={k} with {num_classes} classes has too many count vectors to "
            f"enumerate (> {_MAX_ENUMERATED}); use population_loss"
        )
    gram = (vectors @ vectors.T).tolist()
    counts = list(_compositions(k, num_classes))
    log_prob = [
        math.lgamma(k + 1)
        + sum(n * math.log(p) - math.lgamma(n + 1) for n, p in zip(ns, rho, strict=True))
        for ns in counts
    ]
    terms, weights = [], []
    for c in range(num_classes):
        a = [math.exp(s * (gram[c][j] - gram[c][c])) for j in range(num_classes)]
        for ns, lp in zip(counts, log_prob, strict=True):
            if collision_free and ns[c] > 0:
                continue
            p = rho[c] * math.exp(lp)
            terms.append(p * math.log1p(sum(n * aj for n, aj in zip(ns, a, strict=True))))
            weights.append(p)
    return math.fsum(terms) / math.fsum(weights)


@dataclass(frozen=True)
class MonteCarloEstimate:
    """A sample mean and its standard error."""

    mean: float
    standard_error: float


def population_loss_monte_carlo(
    vectors: torch.Tensor,
    num_negatives: int,
    class_probs: Sequence[float] | torch.Tensor | None = None,
    scale: float = 1.0,
    *,
    num_samples: int = 100_000,
    seed: int = 0,
) -> MonteCarloEstimate:
    """Monte-Carlo estimate of ``L_K`` straight from the definition (logits and log-sum-exp).

    Draws the anchor class from ``rho`` and ``K`` negative classes i.i.d. from ``rho``, and
    averages ``-s v_c.v_c + log(e^{s v_c.v_c} + sum_i e^{s v_c.v_{c_i}})``.
    """
    vectors = _check_vectors(vectors).detach()
    num_classes = vectors.shape[0]
    rho = _class_probs(class_probs, num_classes)
    k = _check_num_negatives(num_negatives)
    s = _check_scale(scale)
    n = check_int("num_samples", num_samples, 2)
    gen = torch.Generator().manual_seed(check_int("seed", seed))
    gram = vectors @ vectors.T  # (C, C)
    chunk = max(1, 2_000_000 // k)
    total, total_sq, done = 0.0, 0.0, 0
    while done < n:
        b = min(chunk, n - done)
        anchor = torch.multinomial(rho, b, replacement=True, generator=gen)  # (b,)
        negs = torch.multinomial(rho, b * k, replacement=True, generator=gen).view(b, k)
        pos = s * gram[anchor, anchor]  # (b,)
        neg = s * gram[anchor[:, None], negs]  # (b, K)
        logits = torch.cat([pos[:, None], neg], dim=1)  # (b, 1+K)
        losses = torch.logsumexp(logits, dim=1) - pos
        total += float(losses.sum())
        total_sq += float((losses**2).sum())
        done += b
    mean = total / n
    var = max(total_sq / n - mean**2, 0.0) * n / (n - 1)
    return MonteCarloEstimate(mean=mean, standard_error=math.sqrt(var / n))


def quadrature_check(
    cases: Sequence[tuple[int, int, float]], num_samples: int = 100_000, seed: int = 0
) -> list[dict[str, float]]:
    """The exact integral of :func:`population_loss` against exact enumeration and Monte Carlo.

    One row per case ``(C, K, s)`` (small enough to enumerate, see
    :func:`population_loss_enumerated`): ``C`` class vectors drawn in the unit ball of ``R^C``
    (uniform directions, uniform radii) with a random prior ``rho`` (uniform on [0.1, 1.1],
    normalised), from ``torch.Generator().manual_seed(seed + i)`` for the ``i``-th case. Columns:
    the integral, the enumeration over multinomial counts, their difference, the mean of
    ``num_samples`` Monte-Carlo draws (:func:`population_loss_monte_carlo`, seed ``seed + i``),
    its standard error, the integral's distance from it in standard errors, and the integral's
    wall-clock time.
    """
    rows = []
    for i, (c, k, s) in enumerate(cases):
        gen = torch.Generator().manual_seed(seed + i)
        v = torch.randn(c, c, generator=gen, dtype=_DTYPE)
        v = v / v.norm(dim=1, keepdim=True) * torch.rand(c, 1, generator=gen, dtype=_DTYPE)
        rho = torch.rand(c, generator=gen, dtype=_DTYPE) + 0.1
        rho = (rho / rho.sum()).tolist()
        t0 = time.perf_counter()
        exact = float(population_loss(v, k, rho, s))
        t_exact = time.perf_counter() - t0
        enumerated = population_loss_enumerated(v, k, rho, s)
        mc = population_loss_monte_carlo(v, k, rho, s, num_samples=num_samples, seed=seed + i)
        rows.append(
            {
                "C": c,
                "K": k,
                "scale s": s,
                "integral": exact,
                "enumeration": enumerated,
                "|integral - enumeration|": abs(exact - enumerated),
                "Monte Carlo": mc.mean,
                "MC std. error": mc.standard_error,
                "(integral - MC) / s.e.": (exact - mc.mean) / mc.standard_error,
                "integral time (ms)": 1000 * t_exact,
            }
        )
    return rows


# --------------------------------------------------------------------------- the optimum


def simplex_gram(num_classes: int) -> torch.Tensor:
    """Gram matrix of the regular simplex on the unit sphere: 1 on the diagonal, -1/(C-1) off it."""
    c = check_int("num_classes", num_classes, 2)
    off = -1.0 / (c - 1)
    return torch.full((c, c), off, dtype=_DTYPE) + (1.0 - off) * torch.eye(c, dtype=_DTYPE)


def simplex_distance(gram: torch.Tensor) -> float:
    """Largest absolute entry of ``gram - simplex_gram(C)`` (0 exactly at a unit simplex)."""
    if not isinstance(gram, torch.Tensor) or gram.dim() != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"gram must be a square 2-D tensor, got {getattr(gram, 'shape', gram)!r}")
    if gram.shape[0] < 2:
        raise ValueError(f"gram must be at least 2x2, got {tuple(gram.shape)}")
    return float((gram.to(_DTYPE) - simplex_gram(gram.shape[0])).abs().max())


@dataclass(frozen=True)
class OptimumResult:
    """The best class vectors found for ``L_K`` under a norm constraint, over all restarts."""

    vectors: torch.Tensor  # (C, d), float64
    loss: float  # exact population loss at ``vectors``
    gram: torch.Tensor  # (C, C) = vectors @ vectors.T
    num_negatives: int
    scale: float
    constraint: str
    class_probs: tuple[float, ...]
    restart_losses: tuple[float, ...]  # final loss of every start (init first, if given)
    initial_loss: float  # loss at the start that won
    iterations: int  # L-BFGS-B iterations of the start that won
    gradient_norm: float  # max |projected d loss / d variable| at the end of the winning start

    @property
    def simplex_distance(self) -> float:
        return simplex_distance(self.gram)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block, then restore the previous setting.

    The optimiser's tensors are small (C x C x ~30 nodes); on a shared 2-core machine torch's
    intra-op threads spent ~30x longer synchronising than computing (measured at C = 100).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _to_vectors(u: torch.Tensor, radius: torch.Tensor | None) -> torch.Tensor:
    """Optimiser variables -> class vectors. u: (C, d) free, radius: (C,) in [0, 1] or None.

    Sphere: ``v = u / |u|``. Ball: ``v = r u / |u|`` with the box ``0 <= r <= 1`` handled by
    L-BFGS-B as a bound, so an optimum on the boundary ``|v| = 1`` is an active bound rather
    than a limit at infinity (as a ``tanh`` radius would make it).
    """
    direction = u / u.norm(dim=1, keepdim=True)
    if radius is None:
        return direction
    return radius[:, None] * direction


def optimal_representation(
    num_classes: int,
    num_negatives: int,
    dim: int,
    class_probs: Sequence[float] | torch.Tensor | None = None,
    scale: float = 1.0,
    constraint: str = "sphere",
    seed: int = 0,
    restarts: int = 3,
    *,
    init: torch.Tensor | None = None,
    max_iter: int = 5000,
    step: float = DEFAULT_STEP,
) -> OptimumResult:
    """Minimise the exact ``population_loss`` over class vectors with ``|v_c| = 1`` or ``<= 1``.

    L-BFGS-B (``scipy.optimize.minimize``, gradients by autograd in float64) on ``v = u/|u|``
    (sphere) or ``v = r u/|u|`` with ``0 <= r <= 1`` (ball), diagonally preconditioned by the
    prior, from ``restarts`` random starts (directions uniform on the sphere, ``r`` uniform on
    [0.3, 0.9], seeded with ``seed``, ``seed + 1``, ...) and, if given, from ``init`` (C, d);
    the lowest final loss wins. ``dim`` must be at
    least ``C - 1``, the dimension of the regular simplex: below it the optimum is a different
    (packing) problem that this study does not address. With ``dim >= C`` the factorisation
    ``G = V V^T`` has no rank restriction, the Burer-Monteiro setting of the convex problem in
    ``G``; the chapter uses ``dim = C``.
    """
    from scipy.optimize import minimize

    c = check_int("num_classes", num_classes, 2)
    k = _check_num_negatives(num_negatives)
    d = check_int("dim", dim, 1)
    if d < c - 1:
        raise ValueError(
            f"dim={d} is too small: the regular simplex of num_classes={c} needs dim >= {c - 1}"
        )
    rho = _class_probs(class_probs, c)
    s = _check_scale(scale)
    check_choice("constraint", constraint, CONSTRAINTS)
    check_int("seed", seed)
    n_restarts = check_int("restarts", restarts, 0 if init is not None else 1)
    check_int("max_iter", max_iter, 1)
    ball = constraint == "ball"

    # Diagonal preconditioning: class c's share of the loss, and so its curvature, scales like
    # rho_c. v = u/|u| is invariant to |u_c| while the curvature in u_c scales like 1/|u_c|^2,
    # so rows started at |u_c| = w_c = sqrt(rho_c / max rho) see comparable curvature; the ball
    # radius is r_c = y_c / w_c with the bound 0 <= y_c <= w_c. Identity for a uniform prior;
    # it cuts L-BFGS-B iterations about threefold for skewed priors.
    w = (rho / rho.max()).sqrt()  # (C,)
    starts: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # (u0, radius0) pairs
    if init is not None:
        init = _check_vectors(init).detach()
        if tuple(init.shape) != (c, d):
            raise ValueError(f"init must have shape ({c}, {d}), got {tuple(init.shape)}")
        norms = init.norm(dim=1)
        # a zero row has no direction: give it one along a basis vector
        u0 = torch.where(norms[:, None] > 1e-12, init, torch.eye(c, d, dtype=_DTYPE))
        starts.append((u0, norms.clamp(0.0, 1.0) if ball else None))
    for r in range(n_restarts):
        gen = torch.Generator().manual_seed(seed + r)
        u0 = torch.randn(c, d, generator=gen, dtype=_DTYPE)
        r0 = 0.3 + 0.6 * torch.rand(c, generator=gen, dtype=_DTYPE) if ball else None
        starts.append((u0, r0))

    def unpack(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return z[: c * d].view(c, d), (z[c * d :] / w if ball else None)

    def pack(u0: torch.Tensor, r0: torch.Tensor | None) -> torch.Tensor:
        u0 = u0 / u0.norm(dim=1, keepdim=True) * w[:, None]
        return u0.reshape(-1) if r0 is None else torch.cat([u0.reshape(-1), r0 * w])

    def loss_and_grad(z_np: Any) -> tuple[float, Any]:  # scipy: float64 numpy in and out
        z = torch.from_numpy(z_np).clone().requires_grad_(True)
        loss = population_loss(_to_vectors(*unpack(z)), k, rho, s, step=step)
        loss.backward()
        return float(loss.detach()), z.grad.numpy()

    bounds = [(None, None)] * (c * d) + [(0.0, float(x)) for x in w] if ball else None
    with _one_thread():
        best: OptimumResult | None = None
        finals: list[float] = []
        for u0, r0 in starts:
            z0 = pack(u0, r0)
            initial, _ = loss_and_grad(z0.numpy())
            res = minimize(
                loss_and_grad,
                z0.numpy(),
                jac=True,
                method="L-BFGS-B",
                bounds=bounds,
                options={"maxiter": max_iter, "maxcor": 30, "ftol": 1e-16, "gtol": 1e-11},
            )
            z = torch.from_numpy(res.x)
            vectors = _to_vectors(*unpack(z)).detach()
            loss = float(population_loss(vectors, k, rho, s, step=step))
            finals.append(loss)
            if best is None or loss < best.loss:
                grad = torch.from_numpy(loss_and_grad(res.x)[1])
                if ball:
                    # projected gradient: a radius at a bound may keep a gradient pointing outwards
                    r_final, g_r = z[c * d :], grad[c * d :]
                    g_r = torch.where((r_final >= w) & (g_r < 0), 0.0, g_r)
                    g_r = torch.where((r_final <= 0.0) & (g_r > 0), 0.0, g_r)
                    grad = torch.cat([grad[: c * d], g_r])
                best = OptimumResult(
                    vectors=vectors,
                    loss=loss,
                    gram=vectors @ vectors.T,
                    num_negatives=k,
                    scale=s,
                    constraint=constraint,
                    class_probs=tuple(rho.tolist()),
                    restart_losses=(),
                    initial_loss=initial,
                    iterations=int(res.nit),
                    gradient_norm=float(grad.abs().max()),
                )
    assert best is not None
    return dataclasses.replace(best, restart_losses=tuple(finals))


# --------------------------------------------------------------------------- downstream


@dataclass(frozen=True)
class DownstreamMetrics:
    """Mean-classifier performance of class vectors in the latent-class model.

    ``supervised_loss``: ``E_{c~rho}[-log softmax_j(s v_c.v_j)_c]`` over all C classes (the mean
    classifier's supervised loss of Arora et al. 2019 (= Saunshi et al. 2019), whose class means
    are the ``v_j`` themselves because ``f`` is constant on classes). ``accuracy``: probability
    that ``argmax_j v_c.v_j`` is the true class, ties (within ``tie_tolerance``) broken uniformly
    at random, so two collapsed classes each score 1/2. ``balanced_*``: the same averaged with
    equal class weights. ``min_margin``: ``min_c (v_c.v_c - max_{j != c} v_c.v_j)``, which is
    positive exactly when the mean classifier is right on every class.
    """

    supervised_loss: float
    accuracy: float
    balanced_supervised_loss: float
    balanced_accuracy: float
    min_margin: float


def downstream_metrics(
    vectors: torch.Tensor,
    class_probs: Sequence[float] | torch.Tensor | None = None,
    scale: float = 1.0,
    *,
    tie_tolerance: float = 1e-6,
) -> DownstreamMetrics:
    """Supervised loss, accuracy and margin of the mean classifier on class vectors (C, d)."""
    vectors = _check_vectors(vectors).detach()
    num_classes = vectors.shape[0]
    rho = _class_probs(class_probs, num_classes)
    s = _check_scale(scale)
    tol = check_float("tie_tolerance", tie_tolerance, 0.0)
    scores = vectors @ vectors.T  # (C, C): row c = scores of a class-c point against all means
    own = torch.diagonal(scores)
    per_loss = -torch.diagonal(torch.log_softmax(s * scores, dim=1))  # (C,)
    winners = scores >= scores.max(dim=1, keepdim=True).values - tol  # (C, C)
    per_acc = torch.diagonal(winners).to(_DTYPE) / winners.sum(dim=1).to(_DTYPE)
    others = scores.masked_fill(torch.eye(num_classes, dtype=torch.bool), -math.inf)
    margin = own - others.max(dim=1).values
    return DownstreamMetrics(
        supervised_loss=float((rho * per_loss).sum()),
        accuracy=float((rho * per_acc).sum()),
        balanced_supervised_loss=float(per_loss.mean()),
        balanced_accuracy=float(per_acc.mean()),
        min_margin=float(margin.min()),
    )


# --------------------------------------------------------------------------- CURL view


@dataclass(frozen=True)
class CurlPrediction:
    """The collision-coverage view of Arora et al. 2019 at one ``K``.

    ``collision_probability``: ``tau_K = 1 - sum_c rho_c (1 - rho_c)^K``;
    ``log_no_collision``: ``log(1 - tau_K)``, computed without cancellation;
    ``collision_term``: ``E ln(1 + Col)``, ``Col`` the number of negatives in the anchor's class;
    ``bound``: ``(L_K - E ln(1 + Col)) / (1 - tau_K)`` (may be ``inf``), ``log_bound`` its log.
    """

    num_negatives: int
    collision_probability: float
    log_no_collision: float
    collision_term: float
    bound: float
    log_bound: float


def _log_no_collision(num_negatives: int, rho: torch.Tensor) -> float:
    """``log(1 - tau_K) = log sum_c rho_c (1 - rho_c)^K``, stable when ``tau_K`` is near 1.

    Computed here rather than through ``negatives.bounds.collision_probability`` because
    ``1 - tau_K`` underflows the subtraction long before ``tau_K`` itself is inaccurate.
    """
    return float(torch.logsumexp(torch.log(rho) + num_negatives * torch.log1p(-rho), dim=0))


def _expected_log1p_collisions(num_negatives: int, rho: torch.Tensor) -> float:
    """``E ln(1 + Col)`` with ``Col | c ~ Binomial(K, rho_c)`` and ``c ~ rho``."""
    k = num_negatives
    m = torch.arange(k + 1, dtype=_DTYPE)  # (K+1,)
    log_binom = math.lgamma(k + 1) - torch.lgamma(m + 1) - torch.lgamma(k - m + 1)  # (K+1,)
    total = 0.0
    for p in rho.tolist():
        if p >= 1.0:
            total += math.log1p(k)
            continue
        log_pmf = log_binom + m * math.log(p) + (k - m) * math.log1p(-p)
        total += p * float((torch.exp(log_pmf) * torch.log1p(m)).sum())
    return total


def curl_bound_prediction(
    unsupervised_loss: float,
    num_negatives: int,
    class_probs: Sequence[float] | torch.Tensor | None = None,
    num_classes: int | None = None,
) -> CurlPrediction:
    """The CURL-style upper bound on the collision-free loss ``L_sub`` at ``K`` negatives.

    Splitting ``L_K`` on whether some negative shares the anchor's class (Arora et al. 2019,
    Lemma 4.3 and its K-negative form; the decomposition Nozawa & Sato 2021 write as
    ``L_K >= (1 - tau_K) L_sub + E ln(Col + 1) + d(f)``, where ``d(f) = 0`` for class-constant
    ``f``): each sample's loss is at least ``ln(1 + Col)``, so

        L_sub <= (L_K - E ln(1 + Col)) / (1 - tau_K).

    The factor ``1 / (1 - tau_K)`` grows exponentially in ``K``: this is the "collision" side of
    the trade-off that predicts degradation. ``L_sub`` is the contrastive loss on collision-free
    draws, i.e. the mean classifier's loss on the sampled sub-task; CURL controls downstream
    performance through it. Give ``class_probs``, or ``num_classes`` for the uniform prior.
    """
    k = _check_num_negatives(num_negatives)
    if class_probs is None:
        if num_classes is None:
            raise ValueError("give class_probs or num_classes")
        rho = _class_probs(None, check_int("num_classes", num_classes, 2))
    else:
        n = len(class_probs)
        if num_classes is not None and check_int("num_classes", num_classes, 2) != n:
            raise ValueError(f"num_classes={num_classes} but class_probs has {n} entries")
        rho = _class_probs(class_probs, n)
    loss = check_float("unsupervised_loss", unsupervised_loss, 0.0)
    log_nc = _log_no_collision(k, rho)
    coll = _expected_log1p_collisions(k, rho)
    numerator = loss - coll
    log_bound = math.log(numerator) - log_nc if numerator > 0 else -math.inf
    bound = math.exp(log_bound) if log_bound < 709.0 else math.inf
    return CurlPrediction(
        num_negatives=k,
        collision_probability=float(-math.expm1(log_nc)),
        log_no_collision=log_nc,
        collision_term=coll,
        bound=bound,
        log_bound=log_bound,
    )


# --------------------------------------------------------------------------- one optimum, reported


def optimum(
    num_classes: int,
    num_negatives: int,
    dim: int,
    class_probs: Sequence[float],
    scale: float,
    constraint: str,
    seed: int,
    restarts: int,
) -> dict[str, Any]:
    """One population optimum and everything reported about it, as plain numbers (JSON).

    The minimiser of ``L_K`` (:func:`optimal_representation`), whose downstream performance
    Awasthi, Dikkala & Kamath (2022) find does not degrade with ``K``: its ``loss``, its
    ``simplex distance`` (:func:`simplex_distance`), the mean classifier's prior-weighted and
    balanced supervised loss and accuracy and its smallest margin (:func:`downstream_metrics`),
    the smallest and largest class-vector norm; the CURL view at it
    (:func:`curl_bound_prediction`, Arora et al. 2019, Lemma 4.3): ``tau_K``,
    ``log10 (1 - tau_K)``, the collision term ``E ln(1 + Col)`` and ``log10 CURL bound`` on the
    collision-free loss, with the exact ``collision-free loss`` (:func:`collision_free_loss`)
    beside it; and the optimiser's ``restarts``, ``restart spread`` (largest minus smallest final
    loss), ``gradient norm``, ``iterations`` and wall-clock ``seconds``.
    """
    t0 = time.perf_counter()
    res = optimal_representation(
        num_classes,
        num_negatives,
        dim,
        class_probs,
        scale=scale,
        constraint=constraint,
        seed=seed,
        restarts=restarts,
    )
    seconds = time.perf_counter() - t0
    m = downstream_metrics(res.vectors, class_probs, scale)
    curl = curl_bound_prediction(res.loss, num_negatives, class_probs)
    norms = res.vectors.norm(dim=1)
    return {
        "C": num_classes,
        "K": num_negatives,
        "scale": scale,
        "constraint": constraint,
        "loss": res.loss,
        "simplex distance": res.simplex_distance,
        "supervised loss": m.supervised_loss,
        "accuracy": m.accuracy,
        "balanced supervised loss": m.balanced_supervised_loss,
        "balanced accuracy": m.balanced_accuracy,
        "min margin": m.min_margin,
        "min norm": float(norms.min()),
        "max norm": float(norms.max()),
        "tau_K": curl.collision_probability,
        "log10 (1 - tau_K)": curl.log_no_collision / math.log(10),
        "collision term": curl.collision_term,
        "collision-free loss": float(
            collision_free_loss(res.vectors, num_negatives, class_probs, scale)
        ),
        "log10 CURL bound": curl.log_bound / math.log(10),
        "restarts": len(res.restart_losses),
        "restart spread": max(res.restart_losses) - min(res.restart_losses),
        "gradient norm": res.gradient_norm,
        "iterations": res.iterations,
        "seconds": seconds,
    }


__all__ = [
    "CONSTRAINTS",
    "CurlPrediction",
    "DownstreamMetrics",
    "MonteCarloEstimate",
    "OptimumResult",
    "collision_free_loss",
    "curl_bound_prediction",
    "downstream_metrics",
    "optimal_representation",
    "optimum",
    "population_loss",
    "population_loss_enumerated",
    "population_loss_monte_carlo",
    "population_loss_per_class",
    "quadrature_check",
    "simplex_distance",
    "simplex_gram",
]
