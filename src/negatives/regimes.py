"""Negative regimes by name: one grammar for every chapter that trains under one.

A regime is what a run does with an anchor's negatives, written as the book writes it and
mapped to :class:`~negatives.trainconfig.TrainConfig` fields (a mask or weights over the
logits, :mod:`negatives.filters` and :mod:`negatives.losses`):

* ``"all"``: every negative (the reference of chapters 2 and 5);
* difficulty bands of each anchor's negatives ranked hardest first (Cai & Frankle 2020):
  ``"hardest P%"``, ``"easiest P%"``, ``"all but hardest P%"``, or any band ``"[A%, B%)"``;
* ``"no same-class"``: the oracle without the anchor's class among its negatives;
* ``"debiased tau+=X/C"`` (or an absolute ``"debiased tau+=0.05"``): Chuang et al. (2020);
* ``"hard beta=B"`` (at tau+ = 1/C) or ``"hard beta=B tau+=X/C"``: Robinson et al. (2021).

>>> parse("treatments", "hardest 5%").band
(0.0, 0.05)
>>> name_of(parse("t", "easiest 95%").apply(TrainConfig(method="moco"), 10))
'easiest 95%'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from negatives.trainconfig import TrainConfig

REFERENCE = "all"
ORACLE = "no same-class"
# Cai & Frankle's four conditions, hardest first: the names a band prefers (name_of).
PAPER_BANDS: tuple[str, ...] = ("all", "hardest 5%", "easiest 95%", "all but hardest 0.1%")

_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_SIDE = re.compile(rf"^(hardest|easiest|all but hardest) {_NUMBER}%$")
_RANGE = re.compile(rf"^\[{_NUMBER}%, {_NUMBER}%\)$")
_PRIOR = rf"tau\+={_NUMBER}(/C)?"
_DEBIASED = re.compile(rf"^debiased {_PRIOR}$")
_HARD = re.compile(rf"^hard beta={_NUMBER}(?: {_PRIOR})?$")
GRAMMAR = (
    "'all', 'hardest P%', 'easiest P%', 'all but hardest P%', '[A%, B%)', 'no same-class', "
    "'debiased tau+=X/C' (or an absolute 'debiased tau+=0.05'), 'hard beta=B' (at tau+ = 1/C) "
    "or 'hard beta=B tau+=X/C'"
)


@dataclass(frozen=True)
class Regime:
    """What a regime changes in a config: ``negatives`` (with its band), ``tau_plus`` (a
    number, or ``per_class`` multiples of 1/C) and ``beta``; ``kind`` names its family."""

    name: str
    kind: str  # reference, band, oracle, debiased, hard
    negatives: str = "all"
    band: tuple[float, float] = (0.0, 1.0)
    tau_plus: float = 0.0
    per_class: bool = False
    beta: float = 0.0

    def apply(self, base: TrainConfig, num_classes: int) -> TrainConfig:
        """``base`` under this regime (``tau_plus`` resolved with the data's C)."""
        tau = self.tau_plus / num_classes if self.per_class else self.tau_plus
        if self.negatives == "band":
            return base.replace(negatives="band", band_low=self.band[0], band_high=self.band[1])
        return base.replace(negatives=self.negatives, tau_plus=tau, beta=self.beta)

    @property
    def label(self) -> str:
        """How figures and tables name it (τ⁺ and β as the papers write them)."""
        prior = f"{self.tau_plus:g}/C" if self.per_class else f"{self.tau_plus:g}"
        if self.kind == "debiased":
            return f"debiased, τ⁺ = {prior}"
        if self.kind == "hard":
            return f"hard, β = {self.beta:g}, τ⁺ = {prior}"
        return self.name


def band_label(band: tuple[float, float]) -> str:
    """``(0.05, 0.1)`` -> ``"[5%, 10%)"`` (rank percentiles, hardest first)."""
    return f"[{100 * band[0]:g}%, {100 * band[1]:g}%)"


def band(low: float, high: float) -> Regime:
    """The regime keeping ranks ``[low, high)`` (fractions, hardest first); ``(0, 1)`` is all
    negatives, trained without the sort. Named as the paper names it where it can be."""
    if (low, high) == (0.0, 1.0):
        return Regime(REFERENCE, "reference")
    return Regime(band_name((low, high)), "band", negatives="band", band=(low, high))


def band_name(b: tuple[float, float], names: Iterable[str] = PAPER_BANDS) -> str:
    """The first of ``names`` whose band is ``b``, else :func:`band_label`."""
    named = [n for n in names if parse("names", n).band == b]
    return named[0] if named else band_label(b)


def _band_of(name: str, text: str, low: float, high: float) -> tuple[float, float]:
    if not 0 <= low < high <= 1:
        raise ValueError(
            f"{name}={text!r}: a band needs 0 <= A < B <= 100 (percent, hardest first)"
        )
    return low, high


def parse(name: str, text: Any, *, noun: str = "negative regime") -> Regime:
    """A regime from its name (see :data:`GRAMMAR`); ``name`` is the parameter and ``noun``
    what the page calls a regime, for errors."""
    if not isinstance(text, str):
        raise ValueError(f"{name}={text!r} must be the name of a {noun}: {GRAMMAR}")
    t = " ".join(text.split())
    if t == REFERENCE:
        return Regime(t, "reference")
    if t == ORACLE:
        return Regime(t, "oracle", negatives="no-same-class")
    if m := _SIDE.match(t):
        side, p = m.group(1), float(m.group(2))
        if not 0 < p < 100:
            raise ValueError(f"{name}={text!r}: the percentage must lie strictly between 0 and 100")
        # (100 - p) / 100, not 1 - p / 100: "easiest 95%" starts at exactly 0.05
        b = {"hardest": (0.0, p / 100), "easiest": ((100 - p) / 100, 1.0)}.get(side, (p / 100, 1.0))
        return Regime(t, "band", negatives="band", band=b)
    if m := _RANGE.match(t):
        b = _band_of(name, text, float(m.group(1)) / 100, float(m.group(2)) / 100)
        return Regime(t, "band", negatives="band", band=b) if b != (0.0, 1.0) else band(*b)
    m, hard = _DEBIASED.match(t), _HARD.match(t)
    if m or hard:
        if hard:
            beta = float(hard.group(1))
            value, per_class = (hard.group(2), hard.group(3)) if hard.group(2) else ("1", "/C")
        else:
            beta, (value, per_class) = 0.0, (m.group(1), m.group(2))  # type: ignore[union-attr]
        tau = float(value)
        if per_class is None and not 0 <= tau < 1:
            raise ValueError(f"{name}={text!r}: tau+ must be in [0, 1) (the class prior)")
        if hard and beta <= 0:
            raise ValueError(f"{name}={text!r}: beta must be > 0 (beta = 0 is 'debiased ...')")
        if not hard and tau <= 0:
            raise ValueError(f"{name}={text!r}: tau+ must be > 0 (tau+ = 0 is 'all')")
        kind = "hard" if hard else "debiased"
        return Regime(t, kind, tau_plus=tau, per_class=per_class is not None, beta=beta)
    raise ValueError(f"{name}={text!r} is not a {noun}; allowed: {GRAMMAR}")


def band_of(config: TrainConfig) -> tuple[float, float] | None:
    """The rank band ``[low, high)`` a run keeps (``(0, 1)`` for all, ``None`` otherwise)."""
    if config.negatives == "all":
        return (0.0, 1.0)
    if config.negatives == "band":
        assert config.band_low is not None and config.band_high is not None
        return (config.band_low, config.band_high)
    return None


def name_of(config: TrainConfig, names: Iterable[str] = PAPER_BANDS) -> str:
    """The name of the band or the oracle a run trains under, read from its config: the first
    of ``names`` that matches, else the band's :func:`band_label`."""
    b = band_of(config)
    if config.tau_plus or config.beta or (b is None and config.negatives != "no-same-class"):
        raise ValueError(
            f"name_of: negatives={config.negatives!r}, tau_plus={config.tau_plus}, "
            f"beta={config.beta} is neither a band nor the oracle"
        )
    return ORACLE if b is None else band_name(b, names)
