"""Scans of the population-optimal representation over class counts, negatives and priors.

:func:`negatives.theory.optimum` solves the latent-class contrastive loss exactly for one
``(C, K, prior, scale, constraint)``; Awasthi, Dikkala & Kamath (2022) ask how that optimum
moves with K. A :class:`Scan` holds what every optimum of a scan shares (the K grid, the Zipf
exponent of the skewed prior, the dimension, the restarts) and computes grids of optima,
cached in a run store (:meth:`negatives.runs.RunStore.cached`) by their arguments:

* :meth:`Scan.grid`: one row per C x K x prior x scale x constraint;
* :meth:`Scan.skew`: how the prior's skew changes the K-dependence;
* :meth:`Scan.grams`: Gram matrices of the optimum beside the regular simplex's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from negatives import config as cfg
from negatives import theory
from negatives.data import zipf_probs
from negatives.runs import RunStore

PRIORS: tuple[str, ...] = ("uniform", "zipf")
CACHE_VERSION = 1  # bump when theory's numbers change, so that cached scans are recomputed


@dataclass(frozen=True)
class Scan:
    """What the optima of one scan share.

    ``num_negatives``: the K grid; ``zipf_exponent``: the exponent of the ``"zipf"`` prior
    (``"uniform"`` is the exponent 0); ``dim``: the representation's dimension (None: d = C);
    ``seed`` and ``restarts`` of the optimiser (:func:`negatives.theory.optimum`).
    """

    num_negatives: tuple[int, ...]
    zipf_exponent: float
    dim: int | None
    seed: int
    restarts: int

    def exponent(self, prior: str) -> float:
        cfg.check_choice("prior", prior, PRIORS)
        return 0.0 if prior == "uniform" else self.zipf_exponent

    def prior_label(self, prior: str) -> str:
        """``"uniform"`` or ``"Zipf a=1.2"``."""
        exponent = self.exponent(prior)
        return "uniform" if exponent == 0.0 else f"Zipf a={exponent:g}"

    def dim_for(self, num_classes: int) -> int:
        return num_classes if self.dim is None else self.dim

    def optimum(
        self,
        store: RunStore,
        num_classes: int,
        num_negatives: int,
        prior: str,
        scale: float,
        constraint: str,
    ) -> dict[str, Any]:
        """:func:`negatives.theory.optimum` under ``prior``, cached in ``store``; the row
        starts with ``C, K, prior``."""
        row = store.cached(
            "optimum",
            theory.optimum,
            version=CACHE_VERSION,
            num_classes=num_classes,
            num_negatives=num_negatives,
            dim=self.dim_for(num_classes),
            class_probs=list(zipf_probs(num_classes, self.exponent(prior))),
            scale=scale,
            constraint=constraint,
            seed=self.seed,
            restarts=self.restarts,
        )
        return {"C": row["C"], "K": row["K"], "prior": prior, **row}

    def grid(
        self,
        store: RunStore,
        num_classes: Iterable[int],
        priors: Iterable[str],
        scales: Iterable[float],
        constraints: Iterable[str],
    ) -> pd.DataFrame:
        """:meth:`optimum` over the product of the arguments and :attr:`num_negatives`."""
        rows = [
            self.optimum(store, c, k, prior, s, con)
            for prior in priors
            for con in constraints
            for s in scales
            for c in num_classes
            for k in self.num_negatives
        ]
        return pd.DataFrame(rows)

    def skew(
        self,
        store: RunStore,
        num_classes: int,
        exponents: Iterable[float],
        scale: float,
        constraint: str,
    ) -> pd.DataFrame:
        """How the Zipf exponent changes the K-dependence at C = ``num_classes``: the optimum at
        the smallest and the largest K, one row per exponent."""
        k_lo, k_hi = min(self.num_negatives), max(self.num_negatives)
        rows = []
        for a in exponents:
            scan = replace(self, zipf_exponent=a)
            lo = scan.optimum(store, num_classes, k_lo, "zipf", scale, constraint)
            hi = scan.optimum(store, num_classes, k_hi, "zipf", scale, constraint)
            rho = zipf_probs(num_classes, a)
            sup, bal = "supervised loss", "balanced supervised loss"
            rows.append(
                {
                    "Zipf exponent a": a,
                    "rho_max / rho_min": rho[0] / rho[-1],
                    "simplex distance (K min)": lo["simplex distance"],
                    "simplex distance (K max)": hi["simplex distance"],
                    "supervised loss (K min)": lo[sup],
                    "supervised loss (K max)": hi[sup],
                    "change (%)": 100 * (hi[sup] / lo[sup] - 1),
                    "balanced sup. loss (K min)": lo[bal],
                    "balanced sup. loss (K max)": hi[bal],
                    "balanced change (%)": 100 * (hi[bal] / lo[bal] - 1),
                    "min accuracy": min(lo["accuracy"], hi["accuracy"]),
                }
            )
        return pd.DataFrame(rows)

    def grams(self, num_classes: int, scale: float, constraint: str) -> dict[str, np.ndarray]:
        """Gram matrices ``(C, C)`` at the largest K: the regular simplex and the optimum under
        each prior (not cached: one optimisation per prior)."""
        k = max(self.num_negatives)
        out = {"regular simplex": theory.simplex_gram(num_classes).numpy()}
        for prior in PRIORS:
            res = theory.optimal_representation(
                num_classes,
                k,
                self.dim_for(num_classes),
                zipf_probs(num_classes, self.exponent(prior)),
                scale=scale,
                constraint=constraint,
                seed=self.seed,
                restarts=self.restarts,
            )
            out[f"optimum, {self.prior_label(prior)}"] = res.gram.numpy()
        return out


def endpoints(grid: pd.DataFrame) -> pd.DataFrame:
    """For each prior x constraint x scale of a :meth:`Scan.grid`: the metrics at the smallest
    and the largest K."""
    rows = []
    for (prior, con, s), g in grid.groupby(["prior", "constraint", "scale"], sort=False):
        g = g.sort_values("K")
        first, last = g.iloc[0], g.iloc[-1]
        rows.append(
            {
                "prior": prior,
                "constraint": con,
                "scale s": s,
                "K range": f"{int(first['K'])}-{int(last['K'])}",
                "simplex distance (K min)": first["simplex distance"],
                "simplex distance (K max)": last["simplex distance"],
                "supervised loss (K min)": first["supervised loss"],
                "supervised loss (K max)": last["supervised loss"],
                "balanced sup. loss (K min)": first["balanced supervised loss"],
                "balanced sup. loss (K max)": last["balanced supervised loss"],
                "min accuracy over K": g["accuracy"].min(),
                "min norm over K": g["min norm"].min(),
            }
        )
    return pd.DataFrame(rows)


def timing(grid: pd.DataFrame) -> pd.DataFrame:
    """Seconds per optimisation (all restarts) by C, as measured when the grid was computed."""
    return (
        grid.groupby("C")["seconds"]
        .agg(["mean", "max", "count"])
        .rename(columns={"mean": "mean s", "max": "max s", "count": "optimisations"})
        .reset_index()
    )
