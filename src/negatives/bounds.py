"""The coupon collector's view of negatives and the bound terms of Nozawa & Sato (2021).

Two halves, both pure functions:

* Coupon collector (Nozawa & Sato 2021, sections 3-4): the probability ``υ`` that ``K+1`` i.i.d.
  class draws cover every class, the expected number of draws to cover them, and the CURL
  collision probability ``τ_K`` (Arora et al. 2019). Computed exactly or with a certified error:
  the alternating inclusion-exclusion sum that the paper writes down cancels catastrophically in
  float64 (at C = 100, N = 128 it is wrong by many orders of magnitude), see
  :func:`naive_coverage_probability` and :func:`alternating_sum_largest_term`.
* Bound terms (Nozawa & Sato 2021, section 5): the CURL lower bound and the proposed coupon
  collector lower bound on the InfoNCE loss, each term estimated as the authors' ``bound.py``
  does, on shuffled test batches of size ``K+1``; :func:`bound_inputs` takes the features they
  need from a trained encoder and :func:`terms_from_inputs` evaluates them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from scipy import integrate, special
from torch import Tensor

from negatives import config as cfg
from negatives import probes
from negatives.data import Dataset, sample_same_class

if TYPE_CHECKING:
    from negatives.train import TrainConfig

# Entries of the positive series below exp(-700) ~ 1e-304 are dropped; they cannot change a
# result above ~1e-280 (every dropped term is multiplied by numbers <= 1), so the relative
# accuracy claim of coverage_probability holds for results above that.
_LOG_TINY = -700.0

# Half an ulp of 1.0 below it: every real number in (1 - 2^-54, 1] rounds to 1.0 in float64.
# The log of the union bound below is computed to ~1e-15 relative; the margin absorbs that.
_LOG_HALF_ULP_OF_ONE = -54.0 * math.log(2.0) - 1e-9


# --------------------------------------------------------------------------------------------
# Coupon collector
# --------------------------------------------------------------------------------------------


def _prior(num_classes: int | None, class_probs: Sequence[float] | None) -> np.ndarray | int:
    """Validate the exactly-one-of pair; an int C for a uniform prior, else the probabilities."""
    if (num_classes is None) == (class_probs is None):
        raise ValueError(
            "give exactly one of num_classes (uniform prior) and class_probs (a distribution); "
            f"got num_classes={num_classes!r}, class_probs={class_probs!r}"
        )
    if num_classes is not None:
        return cfg.check_int("num_classes", num_classes, minimum=1)
    probs = np.asarray(cfg.check_probabilities("class_probs", class_probs), dtype=np.float64)
    if np.all(probs == probs[0]):
        return len(probs)  # uniform after all: take the exact integer route
    return probs / math.fsum(probs)  # remove the <= 1e-9 slack that check_probabilities allows


# The exact uniform sum holds C integers of N log2 C bits: C N log2 C = 1e9 takes ~15 s on one
# core (C = 3000, N = 30000), and the cost grows faster than linearly beyond.
MAX_EXACT_WORK: float = 1e9


def _uniform_surjections(num_draws: int, num_classes: int) -> int:
    """C! S(N, C): the number of length-N sequences over C classes that use every class.

    Inclusion-exclusion Σ_m (-1)^m C(C, m) (C - m)^N, in exact Python integers.
    """
    n, c = num_draws, num_classes
    if n < c:
        return 0
    return sum((-1) ** m * math.comb(c, m) * (c - m) ** n for m in range(c + 1))


def _ratio(num: int, den: int) -> float:
    """num / den for huge non-negative ints, to within ~1 ulp, without quadratic-time division.

    Both are cut to >= 256 significant bits first (relative change < 2^-255), then divided
    (int / int is correctly rounded in CPython).
    """
    shift = max(0, min(num.bit_length(), den.bit_length()) - 256)
    return (num >> shift) / (den >> shift)


def _stirlerr(k: np.ndarray) -> np.ndarray:
    """log(k!) - [(k + 1/2) log k - k + log(2π)/2], the Stirling error, for k >= 1."""
    out = np.empty_like(k)
    small = k <= 15
    ks = k[small]
    out[small] = (
        special.gammaln(ks + 1) - (ks + 0.5) * np.log(ks) + ks - 0.5 * math.log(2 * math.pi)
    )
    s = 1.0 / k[~small]
    s2 = s * s
    out[~small] = s * (1 / 12 - s2 * (1 / 360 - s2 * (1 / 1260 - s2 * (1 / 1680 - s2 / 1188))))
    return out


def _poisson_logpmf(k: np.ndarray, mu: float) -> np.ndarray:
    """log P(Poisson(mu) = k) for integers k >= 1, without the cancellation of k log mu - log k!.

    Loader's saddle-point form: -stirlerr(k) - bd0(k, mu) - log(2πk)/2 with
    bd0 = k log(k/mu) + mu - k = mu h((k - mu)/mu), h(e) = (1+e) log1p(e) - e. The naive form
    subtracts numbers of size k log k and loses ~1e-12 per entry at k ~ 10^3; this one's
    absolute error is ~1e-16 x bd0 for the entries that do not underflow.
    """
    k = k.astype(np.float64)
    e = (k - mu) / mu
    bd0 = mu * ((1 + e) * np.log1p(e) - e)
    return -_stirlerr(k) - bd0 - 0.5 * np.log(2 * math.pi * k)


def _coverage_poissonized(num_draws: int, probs: np.ndarray) -> float:
    """υ(N) for any prior by de-Poissonisation: a certified positive-term dynamic programme.

    With X_c ~ Poisson(ρ_c N) independent, Σ X_c ~ Poisson(N) and, given Σ X_c = N, the X_c are
    multinomial(N, ρ). Hence υ(N) = P(all X_c >= 1, Σ X_c = N) / P(Σ X_c = N), i.e.
    N! [t^N] Π_c (e^{ρ_c t} - 1) scaled by e^{-N} N^N. The numerator is the N-th entry of the
    convolution of the zero-truncated Poisson pmfs, computed class by class (truncated at N).
    Every number is non-negative, so there is no cancellation: with u = 2^-53 the relative error
    is at most about C (N + 1) u plus C times the pmf error (~1e-15), i.e. < 1e-10 for C = 100,
    N = 2000. Cost ~ N x (widths of the pmfs), a few ms for C = 100, N = 2000.
    """
    n = num_draws
    if np.any(probs <= 0.0) or n < len(probs):
        return 0.0
    k_all = np.arange(1, n + 1)
    acc, acc_off = np.ones(1), 0  # acc[i] = P(partial sums of X = acc_off + i, all X >= 1)
    for rho in np.sort(probs):
        mu = rho * n
        logpmf = _poisson_logpmf(k_all, mu)
        keep = np.nonzero(logpmf > _LOG_TINY)[0]
        if keep.size == 0:  # mass only beyond N: cannot happen for rho <= 1, kept for safety
            return 0.0
        lo, hi = keep[0], keep[-1]
        factor = np.exp(logpmf[lo : hi + 1])
        acc = np.convolve(acc, factor)
        acc_off += lo + 1
        acc = acc[: n - acc_off + 1]  # entries above N are never needed
        if acc.size == 0:
            return 0.0
        big = np.nonzero(acc > math.exp(_LOG_TINY))[0]
        if big.size == 0:
            return 0.0
        acc_off += big[0]
        acc = acc[big[0] : big[-1] + 1]
    if not acc_off <= n < acc_off + acc.size:
        return 0.0
    numerator = acc[n - acc_off]
    log_denominator = _poisson_logpmf(np.array([n]), float(n))[0]
    return float(min(1.0, numerator / math.exp(log_denominator)))


def coverage_probability(
    num_draws: int,
    num_classes: int | None = None,
    class_probs: Sequence[float] | None = None,
) -> float:
    """υ: probability that ``num_draws`` i.i.d. class draws contain every class.

    Nozawa & Sato (2021), section 4: with N = K+1 samples per batch, υ is the probability that
    the batch covers all C latent classes (the coupon collector's problem). Give exactly one of
    ``num_classes`` (uniform prior ρ_c = 1/C) and ``class_probs`` (any prior ρ).

    Uniform prior: exact, υ = C! S(N, C) / C^N = Σ_m (-1)^m C(C, m) (1 - m/C)^N evaluated in
    Python integers, then rounded once to float64 (so the only error is the final rounding).
    Other priors: de-Poissonisation, a sum of non-negative terms with relative error < 1e-10 for
    C <= 100 and N <= 2000 (see ``_coverage_poissonized``); results below ~1e-280 are only
    accurate in absolute terms. A class with ρ_c = 0 can never be drawn, so υ = 0.

    Where the union bound 1 - υ <= Σ_c (1 - ρ_c)^N (uniform: C (1 - 1/C)^N) is below half an
    ulp of 1.0 (2^-54), υ rounds to 1.0 and 1.0 is returned without the sums, whose cost grows
    with N (the uniform one holds integers of N log2 C bits): υ(10^6) for C = 100 is immediate.
    """
    n = cfg.check_int("num_draws", num_draws, minimum=1)
    prior = _prior(num_classes, class_probs)
    if _missing_class_bound_log(n, prior) < _LOG_HALF_ULP_OF_ONE:
        return 1.0  # the rounding of the exact value; the exact sum costs ~ C N log C bits
    if isinstance(prior, int):
        work = prior * n * math.log2(prior)
        if work > MAX_EXACT_WORK:
            raise ValueError(
                f"num_draws={n}, num_classes={prior}: the exact sum needs C N log2 C = "
                f"{work:.2g} bit operations, over the cap of {MAX_EXACT_WORK:.0e} (about 15 s); "
                f"υ here is below 1 - 2^-54, so no float64 shortcut applies: use fewer classes "
                f"or draws, or raise negatives.bounds.MAX_EXACT_WORK"
            )
        return _ratio(_uniform_surjections(n, prior), prior**n)
    return _coverage_poissonized(n, prior)


def _missing_class_bound_log(num_draws: int, prior: np.ndarray | int) -> float:
    """log of the union bound 1 - υ(N) = P(some class is missing) <= Σ_c (1 - ρ_c)^N.

    C (1 - 1/C)^N for a uniform prior; -inf for a single class (υ = 1 for every N). In log
    space (log-sum-exp), so that neither the bound nor its terms underflow.
    """
    if isinstance(prior, int):
        if prior == 1:
            return -math.inf
        return math.log(prior) + num_draws * math.log1p(-1.0 / prior)
    with np.errstate(divide="ignore"):  # ρ_c = 1 (all other classes 0): log (1 - 1)^N = -inf
        logs = num_draws * np.log1p(-prior)  # (C,): log (1 - ρ_c)^N
    top = float(logs.max())
    if top == -math.inf:
        return -math.inf
    return top + math.log(math.fsum(np.exp(logs - top)))


def naive_coverage_probability(num_draws: int, num_classes: int, form: str = "notebook") -> float:
    """υ for a uniform prior in plain float64, as published: kept to show the trap.

    ``form="notebook"``: the authors' public ``coupon.ipynb``: υ(N) = Σ_{n=C}^{N} max(0, p_n) with
    p_n = Σ_{m=0}^{C-2} (-1)^m C(C-1, m) exp((n-1) log(1 - (m+1)/C)) = P(cover first at draw n).
    ``form="direct"``: the paper's formula Σ_{m=0}^{C} (-1)^m C(C, m) (1 - m/C)^N.
    Both are exact in real arithmetic; in float64 the terms reach ~C(C, C/2) 2^-N while υ is far
    smaller, so for C = 100 and N ~ 100-300 the result is rounding noise (orders of magnitude
    off). Use :func:`coverage_probability` for real numbers.
    """
    n = cfg.check_int("num_draws", num_draws, minimum=1)
    c = cfg.check_int("num_classes", num_classes, minimum=1)
    cfg.check_choice("form", form, ("notebook", "direct"))
    if form == "direct":
        m = np.arange(c + 1)
        signs = np.where(m % 2 == 0, 1.0, -1.0)
        return float(np.sum(signs * special.comb(c, m) * (1.0 - m / c) ** n))
    if n < c or c < 2:
        return float(c == 1)
    m = np.arange(c - 1)[None, :]  # (1, C-1)
    draws = np.arange(c, n + 1)[:, None]  # (N-C+1, 1)
    terms = special.comb(c - 1, m) * (-1.0) ** m * np.exp((draws - 1) * np.log(1.0 - (m + 1) / c))
    p = terms.sum(axis=1)
    return float(np.sum(np.maximum(p, 0.0)))


def alternating_sum_largest_term(num_draws: int, num_classes: int) -> float:
    """max_m C(C, m) (1 - m/C)^N: the largest term of the uniform alternating sum for υ.

    Float64 keeps ~16 significant digits of this number, so whenever it exceeds υ by more
    than ~10^13 the float64 sum of :func:`naive_coverage_probability` is noise. Evaluated in
    log space (lgamma), so it does not overflow.
    """
    n = cfg.check_int("num_draws", num_draws, minimum=1)
    c = cfg.check_int("num_classes", num_classes, minimum=1)
    m = np.arange(c)  # m = C contributes 0^N = 0
    log_terms = (
        special.gammaln(c + 1) - special.gammaln(m + 1) - special.gammaln(c - m + 1)
    ) + n * np.log1p(-m / c)
    return float(np.exp(log_terms.max()))


def min_draws_for_coverage(
    probability: float,
    num_classes: int | None = None,
    class_probs: Sequence[float] | None = None,
) -> int:
    """Smallest N with υ(N) >= ``probability`` (υ is non-decreasing in N): bracket, then bisect."""
    target = cfg.check_float("probability", probability, 0.0, 1.0, strict_minimum=True)
    if target >= 1.0:
        raise ValueError(f"probability={probability} must be < 1 (υ reaches 1 only as N -> ∞)")
    prior = _prior(num_classes, class_probs)
    if isinstance(prior, int):
        kwargs: dict = {"num_classes": prior}
        size = prior
    else:
        if np.any(prior <= 0.0):
            raise ValueError("class_probs has a zero entry: that class is never drawn")
        kwargs = {"class_probs": prior.tolist()}
        size = len(prior)
    if size == 1:
        return 1
    lo, hi = size - 1, size  # υ(C - 1) = 0 < target
    while coverage_probability(hi, **kwargs) < target:
        lo, hi = hi, 2 * hi
    while hi - lo > 1:  # invariant: υ(lo) < target <= υ(hi)
        mid = (lo + hi) // 2
        if coverage_probability(mid, **kwargs) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def expected_draws_to_cover(
    num_classes: int | None = None, class_probs: Sequence[float] | None = None
) -> float:
    """E[number of i.i.d. draws until every class has appeared] (Nozawa & Sato 2021, Table 3).

    Uniform: C H_C = Σ_{k=1}^{C} C/k, summed with ``math.fsum``. Any prior: the Poissonisation
    identity E = ∫_0^∞ (1 - Π_c (1 - e^{-ρ_c t})) dt (Flajolet, Gardy & Thimonier 1992); the
    integrand is evaluated as -expm1(Σ_c log1p(-e^{-ρ_c t})) so that neither end of the range
    loses digits, and integrated piecewise with adaptive quadrature (relative error ~1e-12,
    checked against C H_C in the tests). A class with ρ_c = 0 is never drawn: E = inf.
    """
    prior = _prior(num_classes, class_probs)
    if isinstance(prior, int):
        return math.fsum(prior / k for k in range(1, prior + 1))
    if np.any(prior <= 0.0):
        return math.inf

    def integrand(t: float) -> float:
        return -math.expm1(float(np.sum(np.log1p(-np.exp(-prior * t)))))

    # The integrand is ~1 until t ~ log(C)/ρ_max-ish and decays like e^{-ρ_min t} after
    # t ~ log(C)/ρ_min; break points on the scale 1/ρ_min keep quad's subintervals informative.
    scale = 1.0 / float(prior.min())
    edges = [0.0] + [scale * x for x in (0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)]
    total = 0.0
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        total += integrate.quad(integrand, a, b, epsabs=0.0, epsrel=1e-13, limit=200)[0]
    total += integrate.quad(integrand, edges[-1], math.inf, epsabs=0.0, epsrel=1e-13)[0]
    return total


def collision_probability(
    num_negatives: int,
    num_classes: int | None = None,
    class_probs: Sequence[float] | None = None,
) -> float:
    """τ_K = 1 - Σ_c ρ_c (1 - ρ_c)^K: probability that one of K negatives shares the anchor's class.

    Arora et al. (2019)'s collision probability, as used by Nozawa & Sato (2021, section 3).
    Evaluated as Σ_c ρ_c (1 - (1 - ρ_c)^K) = Σ_c ρ_c (-expm1(K log1p(-ρ_c))), a sum of
    non-negative terms, so small τ keeps its relative accuracy.
    """
    k = cfg.check_int("num_negatives", num_negatives, minimum=0)
    prior = _prior(num_classes, class_probs)
    probs = np.full(prior, 1.0 / prior) if isinstance(prior, int) else prior
    if k == 0:
        return 0.0
    with np.errstate(divide="ignore"):  # ρ = 1 gives log1p(-1) = -inf, and (1-1)^K = 0
        miss = -np.expm1(k * np.log1p(-probs))
    return float(math.fsum(probs * miss))


# --------------------------------------------------------------------------------------------
# Bounds for every K (Bao, Nagano & Nozawa 2022) beside the earlier ones, at the optimum
# --------------------------------------------------------------------------------------------
# Read from the authors' public code (github nzw0301/gap-contrastive-and-supervised-losses,
# scripts/plot_k_msuploss.py and scripts/compare_upper_bound.py), which evaluates them for a
# uniform class prior and representations of norm at most b; the paper's text was not read here.


def _binomial_mean(num_negatives: int, p: float, values: np.ndarray) -> float:
    """E[values[m]] for m ~ Binomial(K, p): how many of K negatives share the anchor's class."""
    m = np.arange(num_negatives + 1)
    return float(
        math.fsum(special.binom(num_negatives, m) * p**m * (1 - p) ** (num_negatives - m) * values)
    )


def min_contrastive_loss(num_negatives: int, num_classes: int, norm_bound: float = 1.0) -> float:
    """R*_cont: E_m log(1 + m + (K - m) e^{-2 b^2}), m ~ Binomial(K, 1/C) negatives of the
    anchor's class, the InfoNCE loss of the best representation of norm <= b (the authors'
    ``nceloss_min``)."""
    k = cfg.check_int("num_negatives", num_negatives, 1)
    c = cfg.check_int("num_classes", num_classes, 2)
    b = cfg.check_float("norm_bound", norm_bound, 0.0, strict_minimum=True)
    m = np.arange(k + 1)
    return _binomial_mean(k, 1 / c, np.log1p(m + (k - m) * np.exp(-2 * b * b)))


def min_supervised_loss(num_classes: int, norm_bound: float = 1.0) -> float:
    """R*_μ-supv = log(1 + (C - 1) e^{-2 b^2}): the mean classifier's loss at the same optimum
    (the authors' ``suploss_min``)."""
    c = cfg.check_int("num_classes", num_classes, 2)
    b = cfg.check_float("norm_bound", norm_bound, 0.0, strict_minimum=True)
    return math.log1p((c - 1) * math.exp(-2 * b * b))


def collision_term(num_negatives: int, num_classes: int) -> float:
    """E_m log(1 + m), m ~ Binomial(K, 1/C): the loss that K negatives of the anchor's class
    cost whatever the representation, subtracted in the earlier bounds (the authors'
    ``collision_term``)."""
    k = cfg.check_int("num_negatives", num_negatives, 1)
    c = cfg.check_int("num_classes", num_classes, 2)
    return _binomial_mean(k, 1 / c, np.log1p(np.arange(k + 1, dtype=float)))


def surrogate_gap_bounds(
    num_negatives: int, class_probs: Sequence[float], norm_bound: float = 1.0
) -> tuple[float, float]:
    """Bao, Nagano & Nozawa (2022)'s intercepts ``(Γ, Δ_U)`` for K negatives, a class prior π
    and representations of norm at most b, as the authors' code computes them
    (``lb_intercept``, ``ub_intercept``):

    Γ = H(π) + log K - 2 log(1 + K) - 2 log cosh(b^2),  Δ_U = log(π_max C^2 cosh(b^2)^2 / K).

    Their figures plot ``R*_cont + Δ_U`` against ``R*_μ-supv``: unlike the bounds of Arora et
    al. and Nozawa & Sato (:func:`earlier_bound_coefficients`), these hold for every K.
    """
    k = cfg.check_int("num_negatives", num_negatives, 1)
    probs = np.asarray(cfg.check_probabilities("class_probs", class_probs))
    b = cfg.check_float("norm_bound", norm_bound, 0.0, strict_minimum=True)
    c = probs.size
    log_cosh = math.log(math.cosh(b * b))
    entropy = -math.fsum(float(p * math.log(p)) for p in probs if p > 0)
    gamma = entropy + math.log(k) - 2 * math.log1p(k) - 2 * log_cosh
    delta = math.log(float(probs.max()) * c * c / k) + 2 * log_cosh
    return gamma, delta


def earlier_bound_coefficients(num_negatives: int, num_classes: int) -> dict[str, float]:
    """The factor on the contrastive loss in each earlier upper bound of the supervised loss, as
    the authors' comparison script writes them (uniform prior; Bao et al.'s own is 1):
    Arora et al. 1 / ((1 - τ_K) υ), Nozawa & Sato 2 / υ, Ash et al.
    2 max(1, 2 (C - 1) H_{C-1} / K) / (1 - τ_K), with υ = υ(K+1) (:func:`coverage_probability`)
    and τ_K (:func:`collision_probability`); infinite where K + 1 < C (υ = 0). H_{C-1} is the
    harmonic number, exact here (the script approximates it by log(C - 1) + 0.577)."""
    k = cfg.check_int("num_negatives", num_negatives, 1)
    c = cfg.check_int("num_classes", num_classes, 2)
    upsilon = coverage_probability(k + 1, num_classes=c)
    no_collision = 1 - collision_probability(k, num_classes=c)
    harmonic = math.fsum(1 / i for i in range(1, c))

    def inverse(x: float) -> float:  # 1 / x, infinite where x rounds to 0 (tau_K -> 1)
        return 1.0 / x if x > 0 else math.inf

    return {
        "bao": 1.0,
        "arora": inverse(no_collision * upsilon),
        "nozawa_sato": 2.0 * inverse(upsilon),
        "ash": 2 * max(1.0, 2 * (c - 1) * harmonic / k) * inverse(no_collision),
    }


def ash_sup_upper_bound(
    info_loss: float, collision: float, tau: float, num_negatives: int, num_classes: int
) -> float:
    """Ash et al. (2022)'s upper bound on the supervised loss as Bao, Nagano & Nozawa's notebook
    (``code/notebooks/bound.ipynb``, ``ash``) evaluates it on a trained encoder:
    2 max(1, 2 (C - 1) H_{C-1} / K) / (1 - τ) * (L_Info - E ln(Col + 1)), with the harmonic
    number exact (the notebook: log(C - 1) + 0.577). ``tau`` and ``collision`` are measured on
    the same batches as ``info_loss`` here (the notebook puts in their uniform-prior values);
    infinite where 1 - τ = 0 and the numerator is >= 0 (:func:`sup_upper_bound`)."""
    k = cfg.check_int("num_negatives", num_negatives, 1)
    c = cfg.check_int("num_classes", num_classes, 2)
    harmonic = math.fsum(1 / i for i in range(1, c))
    factor = 2 * max(1.0, 2 * (c - 1) * harmonic / k)
    return sup_upper_bound(factor * (info_loss - collision), 1.0 - tau)


def surrogate_gap_sup_bounds(
    info_loss: float, num_negatives: int, class_probs: Sequence[float], norm_bound: float
) -> tuple[float, float]:
    """Bao, Nagano & Nozawa (2022)'s lower and upper bounds on the mean classifier's supervised
    loss from a measured contrastive loss: ``(L_Info + Γ, L_Info + Δ_U)``
    (:func:`surrogate_gap_bounds`). The upper one is their notebook's ``ours`` (``loss +
    ub_intercept``); the lower one adds ``lb_intercept`` the same way (the direction read from
    the two functions' names; both hold at the optimum, :func:`min_contrastive_loss` and
    :func:`min_supervised_loss`, which ``tests/test_bounds.py`` checks over C, K and b). With
    unit features and temperature t the scores are bounded by 1 / t, so ``norm_bound`` is
    1 / sqrt(t) for the book's encoders."""
    gamma, delta = surrogate_gap_bounds(num_negatives, class_probs, norm_bound)
    return info_loss + gamma, info_loss + delta


def every_sup_bound(terms: dict[str, float], class_probs: Sequence[float]) -> dict[str, float]:
    """The bounds of Ash et al. and of Bao, Nagano & Nozawa on one encoder's supervised loss
    from its measured terms (a row of :func:`terms_from_inputs`: ``info_loss``,
    ``collision_term``, ``tau``, ``num_negatives``, ``temperature``) and the test set's class
    frequencies: ``ash_sup_upper_bound``, ``bao_sup_lower_bound``, ``bao_sup_upper_bound``."""
    k = int(terms["num_negatives"])
    loss = float(terms["info_loss"])
    lower, upper = surrogate_gap_sup_bounds(
        loss, k, class_probs, 1.0 / math.sqrt(float(terms["temperature"]))
    )
    ash = ash_sup_upper_bound(
        loss, float(terms["collision_term"]), float(terms["tau"]), k, len(class_probs)
    )
    return {"ash_sup_upper_bound": ash, "bao_sup_lower_bound": lower, "bao_sup_upper_bound": upper}


# --------------------------------------------------------------------------------------------
# Bound terms (Nozawa & Sato 2021, section 5)
# --------------------------------------------------------------------------------------------


def mean_classifier_weights(features: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Mean classifier weights μ_c = mean of class c's features, (N, D) -> (C, D).

    Arora et al. (2019), Nozawa & Sato (2021) section 2: the mean classifier scores x by
    f(x)·μ_c. As in the authors' code the means are of the (already normalised, augmentation-
    averaged) features and are not renormalised. A class without samples raises.
    """
    c = cfg.check_int("num_classes", num_classes, minimum=1)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {tuple(features.shape)}")
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"labels must be (N,) with N = {features.shape[0]}, got shape {tuple(labels.shape)}"
        )
    labels = labels.to(features.device).long()
    if labels.numel() and (labels.min() < 0 or labels.max() >= c):
        raise ValueError(f"labels must lie in [0, num_classes={c})")
    counts = torch.bincount(labels, minlength=c)
    if bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"labels has no sample of class(es) {missing}: μ_c is undefined")
    sums = torch.zeros(c, features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, labels, features)  # (C, D)
    return sums / counts.to(features.dtype)[:, None]


def evaluation_batches(num_samples: int, batch_size: int, num_passes: int, seed: int) -> Tensor:
    """Indices of the shuffled evaluation batches -> (num_passes, num_batches, batch_size).

    One fresh permutation per pass, the last incomplete batch dropped (the authors' DataLoader
    with ``shuffle=True, drop_last=True``), drawn from a CPU ``torch.Generator`` seeded with
    ``seed`` so that the batches do not depend on the device.
    """
    n = cfg.check_int("num_samples", num_samples, minimum=1)
    b = cfg.check_int("batch_size", batch_size, minimum=1, maximum=n)
    p = cfg.check_int("num_passes", num_passes, minimum=1)
    gen = torch.Generator().manual_seed(cfg.check_int("seed", seed))
    per_pass = n // b
    perms = torch.stack([torch.randperm(n, generator=gen)[: per_pass * b] for _ in range(p)])
    return perms.view(p, per_pass, b)


def _safe_div(num: float, den: float) -> float:
    """A conditional mean ``num / den``: undefined (nan) when the event has probability 0."""
    return num / den if den > 0 else math.nan


def sup_upper_bound(rhs: float, weight: float) -> float:
    """L_sup <= rhs / weight, the upper bound on the supervised loss from ``weight · L_sup <= rhs``.

    ``weight`` is υ (Nozawa & Sato) or 1 - τ (CURL). Where it is 0 in the sample the inequality
    constrains nothing: for rhs >= 0 it holds for every L_sup, so the bound is +inf (vacuous,
    and so plotted and counted); for rhs < 0 no L_sup satisfies it and the bound is -inf. A
    negative weight (float64 noise around 0) counts as 0.
    """
    if weight > 0:
        return rhs / weight
    return math.inf if rhs >= 0 else -math.inf


def bound_terms(
    z: Tensor,
    z_bar: Tensor,
    labels: Tensor,
    class_means: Tensor,
    temperature: float,
    num_negatives: int,
    num_passes: int,
    seed: int,
    *,
    z_positive: Tensor | None = None,
) -> dict[str, float]:
    """Terms of the CURL bound and of the proposed bound (Nozawa & Sato 2021, section 5).

    Follows the authors' ``bound.py`` (``eval_bound``): the test set is cut into shuffled
    batches of ``K+1`` samples (``num_passes`` passes, last partial batch dropped); each sample
    is an anchor once per pass; its K negatives are the other batch members. All expectations
    are averages over anchors, accumulated in float64.

    Inputs: ``z`` (N, D) normalised projection of one augmented view of each test sample (the
    anchor f(a(x)); renormalised here, which changes nothing for unit rows); ``z_bar`` (N, D)
    mean over several augmentations of the normalised projections (f̄(x) in d(f)); ``labels`` (N,); ``class_means`` (C, D) mean classifier μ from
    the training set (:func:`mean_classifier_weights`); ``temperature`` t. ``z_positive`` (N, D)
    is a second augmented view (f(a'(x)), normalised here) that supplies the positive and the
    negatives of L_Info, as in the authors' code. Not in the brief's interface, hence keyword-
    only: when it is None, ``z_bar`` plays that role (the augmentation-averaged key that the
    proof's Jensen step replaces it with); L_Info is then a slightly different number.

    Per anchor i of class y with batch B (ℓ = cross-entropy, s = z_i·μ/t):

    * ``info_loss``  L_Info: ℓ over the K+1 logits z_i·z⁺_j / t, target j = i.
    * ``sup_loss``  L_sup: ℓ(s over all C classes, y): the mean classifier's supervised loss.
    * ``sub_loss``  L_sub: ℓ(s over the classes present in B, y).
    * ``upsilon``  υ: fraction of anchors whose batch covers all C classes.
    * ``tau``  τ: fraction of anchors whose class appears among their K negatives.
    * ``collision_term``  E[ln(Col + 1)], Col = number of negatives of the anchor's class.
    * ``d_f``  d(f) = E[min(0, z_i·(μ_y - z̄_i)) / t] (<= 0; the authors' "assumption value").
    * ``sup_term`` = E[1{B covers} L_sup] (= υ L_sup), ``sub_term`` = E[1{not} L_sub]
      (= (1-υ) L_sub), ``curl_sub_term`` = E[1{no collision} L_sub] (= (1-τ) L_sub^{no col}),
      as joint averages exactly as the authors accumulate them; ``sup_loss_covered`` =
      sup_term / υ and ``sub_loss_uncovered`` = sub_term / (1-υ) are the conditional means.
    * ``proposed_bound`` = ½ [sup_term + sub_term + collision_term] + d_f (the paper's main
      theorem, section 4: L_Info >= ½{υ L_sup + (1-υ) L_sub + E ln(Col+1)} + d(f)).
    * ``curl_bound`` = curl_sub_term + collision_term + d_f (Arora et al. 2019's bound for
      InfoNCE as restated in the paper's section 3: L_Info >= (1-τ) L_sub^{no col} +
      E ln(Col+1) + d(f)).
    * Upper bounds on the supervised loss (their Figure 1), each inequality solved for it:
      ``proposed_sup_upper_bound`` = (2 (L_Info - d_f) - sub_term - collision_term) / υ;
      ``proposed_sup_upper_bound_exact_upsilon`` the same with the exact υ (their bound notebook
      substitutes a theoretical υ where the empirical one is 0);
      (the authors' ``bound.ipynb`` subtracts only sub_term / 2, halving the sub term before
      solving; we keep the algebra above);
      ``curl_sup_upper_bound`` = (L_Info - d_f - collision_term - E[1{no col, not covered}
      L_sub]) / (1 - τ), as their notebook (the covered, collision-free part stands for
      (1-τ) L_sup). A zero υ or 1-τ gives ±inf (:func:`sup_upper_bound`);
      ``proposed_sup_rhs`` / ``curl_sup_rhs`` are the right-hand sides before the division.
    * ``upsilon_exact`` / ``tau_exact``: :func:`coverage_probability` (K+1 draws) and
      :func:`collision_probability` (K) under the empirical class frequencies of ``labels``
      (batches are drawn without replacement from a finite set, so these differ slightly).
    * ``centroid_accuracy``: the mean classifier's test accuracy in % (argmax_c z̄_i·μ_c == y),
      the authors' ``centroid_accuracy``.
    * bookkeeping: ``num_negatives``, ``num_passes``, ``num_batches``, ``num_anchors``,
      ``temperature``, and ``sub_loss_no_collision_uncovered`` (the numerator piece of
      ``curl_sup_upper_bound``).
    """
    k = cfg.check_int("num_negatives", num_negatives, minimum=1)
    t = cfg.check_float("temperature", temperature, 0.0, strict_minimum=True)
    passes = cfg.check_int("num_passes", num_passes, minimum=1)
    if z.ndim != 2:
        raise ValueError(f"z must be (N, D), got shape {tuple(z.shape)}")
    n, d = z.shape
    if z_bar.shape != z.shape:
        raise ValueError(f"z_bar must have z's shape {tuple(z.shape)}, got {tuple(z_bar.shape)}")
    if z_positive is not None and z_positive.shape != z.shape:
        raise ValueError(
            f"z_positive must have z's shape {tuple(z.shape)}, got {tuple(z_positive.shape)}"
        )
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"labels must be (N,) with N = {n}, got shape {tuple(labels.shape)}")
    if class_means.ndim != 2 or class_means.shape[1] != d:
        raise ValueError(f"class_means must be (C, {d}), got shape {tuple(class_means.shape)}")
    c = class_means.shape[0]
    if k + 1 > n:
        raise ValueError(f"num_negatives={k} needs batches of K+1 = {k + 1} <= N = {n} samples")

    device = z.device
    f64 = torch.float64
    z = torch.nn.functional.normalize(z.to(f64), dim=1)  # idempotent for normalised input
    z_bar = z_bar.to(device, f64)  # a mean of unit vectors: deliberately not renormalised
    if z_positive is None:
        key = z_bar
    else:
        key = torch.nn.functional.normalize(z_positive.to(device, f64), dim=1)
    mu = class_means.to(device, f64)
    y = labels.to(device).long()
    if y.min() < 0 or y.max() >= c:
        raise ValueError(f"labels must lie in [0, C={c}) where C = class_means.shape[0]")

    # Per-sample quantities that do not depend on the batch.
    scores = z @ mu.T / t  # (N, D) x (D, C) -> (N, C)
    sup_per = torch.logsumexp(scores, dim=1) - scores.gather(1, y[:, None]).squeeze(1)  # (N,)
    gap = (z * (mu[y] - z_bar)).sum(dim=1) / t  # (N,)
    d_per = torch.clamp(gap, max=0.0)
    accuracy = 100.0 * ((z_bar @ mu.T).argmax(dim=1) == y).to(f64).mean().item()  # (N, C) -> %

    batches = evaluation_batches(n, k + 1, passes, seed).to(device)  # (P, nb, B)
    _, nb, b = batches.shape
    sums = dict.fromkeys(
        (
            "info",
            "sup",
            "sub",
            "cover",
            "col",
            "logcol",
            "d",
            "sup_cov",
            "sub_unc",
            "curl_sub",
            "curl_nc",
        ),
        0.0,
    )
    arange_b = torch.arange(b, device=device)
    for idx in batches:  # idx: (nb, B), one pass
        yb = y[idx]  # (nb, B)
        # L_Info: anchors z (nb, B, D) against keys (nb, B, D) -> logits (nb, B, B), target = diagonal
        logits = torch.einsum("nid,njd->nij", z[idx], key[idx]) / t
        info = torch.logsumexp(logits, dim=2) - logits[:, arange_b, arange_b]  # (nb, B)
        counts = torch.zeros(nb, c, dtype=f64, device=device)
        counts.scatter_add_(1, yb, torch.ones_like(yb, dtype=f64))  # (nb, C) class counts
        present = counts > 0  # (nb, C)
        covered = present.all(dim=1)[:, None].expand(nb, b)  # (nb, B)
        same = counts.gather(1, yb)  # (nb, B): Col + 1
        collide = same > 1
        # L_sub: scores over the classes present in the anchor's batch only.
        s = scores[idx].masked_fill(~present[:, None, :], -math.inf)  # (nb, B, C)
        sub = torch.logsumexp(s, dim=2) - scores[idx].gather(2, yb[..., None]).squeeze(2)
        sup = sup_per[idx]
        cov, ncov = covered.to(f64), (~covered).to(f64)
        nocol = (~collide).to(f64)
        sums["info"] += info.sum().item()
        sums["sup"] += sup.sum().item()
        sums["sub"] += sub.sum().item()
        sums["cover"] += cov.sum().item()
        sums["col"] += collide.to(f64).sum().item()
        sums["logcol"] += torch.log(same).sum().item()
        sums["d"] += d_per[idx].sum().item()  # averaged over the anchors, as the authors do
        sums["sup_cov"] += (cov * sup).sum().item()
        sums["sub_unc"] += (ncov * sub).sum().item()
        sums["curl_sub"] += (nocol * sub).sum().item()
        sums["curl_nc"] += (nocol * ncov * sub).sum().item()

    anchors = passes * nb * b
    mean = {name: v / anchors for name, v in sums.items()}
    d_f = mean["d"]
    upsilon, tau = mean["cover"], mean["col"]
    info_loss, collision = mean["info"], mean["logcol"]
    sup_term, sub_term = mean["sup_cov"], mean["sub_unc"]

    freq = torch.bincount(y, minlength=c).to(f64) / n
    probs = (freq / freq.sum()).tolist()
    upsilon_exact = coverage_probability(k + 1, class_probs=probs)
    tau_exact = collision_probability(k, class_probs=probs)

    proposed_rhs = 2.0 * (info_loss - d_f) - sub_term - collision
    curl_rhs = info_loss - d_f - collision - mean["curl_nc"]
    return {
        "num_negatives": float(k),
        "num_passes": float(passes),
        "num_batches": float(passes * nb),
        "num_anchors": float(anchors),
        "temperature": t,
        "info_loss": info_loss,
        "sup_loss": mean["sup"],
        "sub_loss": mean["sub"],
        "sup_loss_covered": _safe_div(sup_term, upsilon),
        "sub_loss_uncovered": _safe_div(sub_term, 1.0 - upsilon),
        "upsilon": upsilon,
        "upsilon_exact": upsilon_exact,
        "tau": tau,
        "tau_exact": tau_exact,
        "collision_term": collision,
        "d_f": d_f,
        "sup_term": sup_term,
        "sub_term": sub_term,
        "curl_sub_term": mean["curl_sub"],
        "sub_loss_no_collision_uncovered": mean["curl_nc"],
        "proposed_bound": 0.5 * (sup_term + sub_term + collision) + d_f,
        "curl_bound": mean["curl_sub"] + collision + d_f,
        "proposed_sup_rhs": proposed_rhs,
        "curl_sup_rhs": curl_rhs,
        "proposed_sup_upper_bound": sup_upper_bound(proposed_rhs, upsilon),
        "proposed_sup_upper_bound_exact_upsilon": sup_upper_bound(proposed_rhs, upsilon_exact),
        "curl_sup_upper_bound": sup_upper_bound(curl_rhs, 1.0 - tau),
        "centroid_accuracy": accuracy,
    }


# --------------------------------------------------------------------------------------------
# The bound terms of a trained encoder
# --------------------------------------------------------------------------------------------

MAX_AUGMENTATIONS = 100


def bound_inputs(
    model: torch.nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    num_augmentations: int,
    seed: int,
    device: str = "cpu",
) -> dict[str, Tensor]:
    """The feature sets :func:`bound_terms` needs, from one trained encoder.

    All features are L2-normalised projections z (the space the InfoNCE loss is computed in).

    * Images (Nozawa & Sato's ``bound.py``): the anchor ``z`` and the positive ``z_positive``
      are two fresh augmented views of each test image; ``z_bar`` averages
      ``num_augmentations`` further views (f̄(x) = E_a f(a(x)) in d(f)); the mean classifier
      μ_c averages the training features over ``num_augmentations`` views, then over class c.
    * Latent-class vectors (positives drawn from the class, Saunshi et al. 2019): no
      augmentation. ``z = f(x)``; ``z_positive = f(x⁺)`` with x⁺ a random training sample of
      the same class (an independent draw from D_c, as the trainer draws positives); μ_c is
      the mean training feature of class c. The positive depends on x only through its class,
      so f̄(x) = E[f(x⁺) | c] is the class mean: ``z_bar = μ_y`` and d(f) = 0 by construction.

    ``config`` supplies the views (``strength``, ``min_scale``, ``flip``) and which kind of
    positives the encoder was trained with (``positives``). Returns ``z``, ``z_positive``,
    ``z_bar`` (N_test, D), ``labels`` (N_test,), ``class_means`` (C, D) and ``z_classify``
    (N_test, D): the features the mean classifier scores for its accuracy (images: z̄, as the
    authors' ``centroid_accuracy``; latent-class vectors: z itself, since z̄ = μ_y would
    classify every sample correctly by construction).
    """
    a = cfg.check_int("num_augmentations", num_augmentations, 1, MAX_AUGMENTATIONS)
    seed = cfg.check_int("seed", seed, 0)
    c = data.num_classes
    aug = dict(strength=config.strength, min_scale=config.min_scale, flip=config.flip)
    if config.positives == "latent-class":
        z_train = probes.extract_features(
            model, data.train_images, which="projection", device=device
        )
        z_test = probes.extract_features(model, data.test_images, which="projection", device=device)
        z_train, z_test = F.normalize(z_train, dim=1), F.normalize(z_test, dim=1)
        class_means = mean_classifier_weights(z_train, data.train_labels, c)  # (C, D)
        gen = torch.Generator().manual_seed(seed)
        # x⁺ ~ D_c drawn from the training set, as in training: an independent draw of the
        # anchor's class that exists even for a class with a single test sample.
        partner = sample_same_class(data.test_labels, data.train_labels, gen)  # (N,)
        return {
            "z": z_test,
            "z_positive": z_train[partner],
            "z_bar": class_means[data.test_labels],
            "labels": data.test_labels,
            "class_means": class_means,
            "z_classify": z_test,
        }
    # train: (N, A, D) -> augmentation mean (N, D) -> class means (C, D)
    train_views = probes.augmented_features(
        model, data.train_images, a, seed=seed, device=device, **aug
    )
    class_means = mean_classifier_weights(train_views.mean(dim=1), data.train_labels, c)
    # test: (N, 2 + A, D): view 0 = anchor, view 1 = positive, views 2.. = z̄
    test_views = probes.augmented_features(
        model, data.test_images, 2 + a, seed=seed + 1, device=device, **aug
    )
    return {
        "z": test_views[:, 0],
        "z_positive": test_views[:, 1],
        "z_bar": test_views[:, 2:].mean(dim=1),
        "labels": data.test_labels,
        "class_means": class_means,
        "z_classify": test_views[:, 2:].mean(dim=1),
    }


def terms_from_inputs(
    inputs: dict[str, Tensor],
    *,
    temperature: float,
    num_negatives: int,
    num_passes: int,
    seed: int,
) -> dict[str, float]:
    """:func:`bound_terms` (Nozawa & Sato 2021, section 5) on :func:`bound_inputs`, plus the
    quantities their figures set beside it.

    Extras: ``centroid_accuracy`` (the mean classifier's test accuracy in %, argmax_c
    f·μ_c on ``inputs["z_classify"]``, z̄ when absent, as the authors' ``centroid_accuracy``),
    ``upsilon_uniform`` (υ(K+1) exactly, uniform prior over the C classes), ``upsilon_naive``
    (the same in float64 with the authors' notebook formula, see
    :func:`naive_coverage_probability`), and ``proposed_sup_upper_bound_naive_upsilon``: the
    proposed upper bound on L_sup divided by that float64 υ, i.e. what the authors' figure
    computes where the empirical υ is 0. Upper bounds whose weight (υ or 1 - τ) is 0 in the
    sample are ±inf, as :func:`sup_upper_bound` defines them.
    """
    c = inputs["class_means"].shape[0]
    out = bound_terms(
        inputs["z"],
        inputs["z_bar"],
        inputs["labels"],
        inputs["class_means"],
        temperature,
        num_negatives,
        num_passes,
        seed,
        z_positive=inputs["z_positive"],
    )
    k = int(num_negatives)
    scored = inputs.get("z_classify", inputs["z_bar"]).double()
    pred = (scored @ inputs["class_means"].double().T).argmax(dim=1)  # (N, D) x (D, C) -> (N,)
    out["centroid_accuracy"] = 100.0 * (pred == inputs["labels"]).double().mean().item()
    out["upsilon_uniform"] = coverage_probability(k + 1, num_classes=c)
    out["upsilon_naive"] = naive_coverage_probability(k + 1, c, "notebook")
    # what the authors' figure computes where the empirical υ is 0: the float64 υ instead
    out["proposed_sup_upper_bound_naive_upsilon"] = sup_upper_bound(
        out["proposed_sup_rhs"], out["upsilon_naive"]
    )
    return out
