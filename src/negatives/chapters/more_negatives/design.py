"""Chapter 4's design: the papermill parameters, the profiles and the runs of the chapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from negatives import config as cfg
from negatives import theory
from negatives.chapters import kscan
from negatives.chapters.params import ChapterParams, check_list
from negatives.data import Dataset
from negatives.population import Scan
from negatives.train import TrainConfig

MAX_CLASSES = 200  # C = 100 takes ~1-2 s per random start on one idle CPU core


MAX_NEGATIVES = 2**16
# The quadrature check's Monte Carlo draws (K x dim floats each): 10^7 take ~1 min, 10^12 never end.
MAX_QUADRATURE_SAMPLES = 10**7


SIMPLEX_TOLERANCE = 1e-4  # max |G - G_simplex| below which we call an optimum "the simplex"


FLAT_TOLERANCE = 1e-6  # change of the optimum's supervised loss (nats) that counts as none


PAPER = "Awasthi, Dikkala & Kamath (2022)"


QUADRATURE_CASES: tuple[tuple[int, int, float], ...] = (
    (2, 9, 10.0),
    (3, 5, 1.0),
    (4, 7, 3.0),
    (3, 40, 1.0),
    (5, 12, 2.0),
    (6, 6, 0.5),
)  # (C, K, scale s) of the quadrature check: small enough to enumerate


@dataclass(frozen=True)
class Params(ChapterParams):
    """Chapter 4 parameters, each one a papermill parameter of ``notebooks/more_negatives.ipynb``.

    * ``num_classes``: the class counts C of the main scan (uniform and Zipf priors).
    * ``population_num_negatives``: the K values of every population scan.
    * ``dim``: representation dimension; ``None`` uses ``d = C`` for each C (must be >= C - 1).
    * ``scales``: inverse temperatures s; the first is the main scan's.
    * ``constraints``: ``"sphere"`` (|v| = 1) and/or ``"ball"`` (|v| <= 1); the first is the
      main scan's. The paper's constraint could not be checked, hence both.
    * ``zipf_exponent``: the non-uniform prior rho_c proportional to c^-a (ours, not the paper's).
    * ``skew_exponents``: Zipf exponents of the skew sweep (C = ``variant_num_classes``, main
      scale and constraint, smallest and largest K).
    * ``variant_num_classes``: C of the constraint x scale x prior comparison.
    * ``heatmap_num_classes``: C of the Gram-matrix heatmaps.
    * ``restarts``: random starts per optimisation (the lowest loss is kept).
    * ``seed``: seed of the random starts and of the Monte-Carlo check.
    * ``accuracy_margin``: accuracy points within which a drop at the largest K counts as "no
      degradation" in :func:`k_comparison`'s verdict rule.
    * ``quadrature_cases``, ``quadrature_samples``: how many of :data:`QUADRATURE_CASES` the
      quadrature check runs, with how many Monte-Carlo samples.
    * ``scan``: the K-scan shared with chapter 3 (:class:`negatives.chapters.kscan.Params`,
      its parameters flat in the notebook under chapter 3's names), so both chapters train
      the same encoders; its ``results_dir`` also caches the population scans.
    """

    profile: str
    num_classes: tuple[int, ...]
    population_num_negatives: tuple[int, ...]
    dim: int | None
    scales: tuple[float, ...]
    constraints: tuple[str, ...]
    zipf_exponent: float
    skew_exponents: tuple[float, ...]
    variant_num_classes: int
    heatmap_num_classes: int
    restarts: int
    seed: int
    accuracy_margin: float
    quadrature_cases: int
    quadrature_samples: int
    scan: kscan.Params

    def __post_init__(self) -> None:
        cfg.check_profile(self.profile)
        num_classes = cfg.check_int_list("num_classes", self.num_classes, minimum=2)
        if max(num_classes) > MAX_CLASSES:
            raise ValueError(f"num_classes={list(num_classes)}: each must be <= {MAX_CLASSES}")
        self.set("num_classes", tuple(sorted(set(num_classes))))
        name = "population_num_negatives"
        ks = cfg.check_int_list(name, self.population_num_negatives, minimum=1)
        if max(ks) > MAX_NEGATIVES:
            raise ValueError(f"{name}={list(ks)}: each must be <= {MAX_NEGATIVES}")
        self.set(name, tuple(sorted(set(ks))))
        cfg.check_int("variant_num_classes", self.variant_num_classes, 2, MAX_CLASSES)
        cfg.check_int("heatmap_num_classes", self.heatmap_num_classes, 2, 30)
        if self.dim is not None:
            # the simplex needs C - 1 dimensions; more only add cost
            cfg.check_int("dim", self.dim, 1, MAX_CLASSES)
            needed = max(*self.num_classes, self.variant_num_classes, self.heatmap_num_classes) - 1
            if self.dim < needed:
                raise ValueError(
                    f"dim={self.dim} is too small: the regular simplex of the largest class count "
                    f"needs dim >= {needed} (or leave dim=None for d = C)"
                )
        self.set("scales", check_list("scales", self.scales, _check_scale))
        self.set("constraints", check_list("constraints", self.constraints, _check_constraint))
        self.set("zipf_exponent", cfg.check_float("zipf_exponent", self.zipf_exponent, 0.0, 3.0))
        skew = check_list("skew_exponents", self.skew_exponents, _check_exponent)
        self.set("skew_exponents", tuple(sorted(set(skew))))
        cfg.check_int("restarts", self.restarts, 1, 20)
        cfg.check_int("seed", self.seed, minimum=0)
        cfg.check_float("accuracy_margin", self.accuracy_margin, 0.0, 100.0)
        cfg.check_int("quadrature_cases", self.quadrature_cases, 1, len(QUADRATURE_CASES))
        cfg.check_int("quadrature_samples", self.quadrature_samples, 100, MAX_QUADRATURE_SAMPLES)

    @property
    def main_scale(self) -> float:
        return self.scales[0]

    @property
    def main_constraint(self) -> str:
        return self.constraints[0]

    @property
    def population(self) -> Scan:
        """What every population optimum of the chapter shares (:class:`negatives.population.Scan`)."""
        return Scan(self.population_num_negatives, self.zipf_exponent, self.dim, self.seed,
                    self.restarts)  # fmt: skip


def _check_scale(name: str, value: Any) -> float:
    return cfg.check_float(name, value, 0.0, 1000.0, strict_minimum=True)


def _check_constraint(name: str, value: Any) -> str:
    return cfg.check_choice(name, value, theory.CONSTRAINTS)


def _check_exponent(name: str, value: Any) -> float:
    return cfg.check_float(name, value, 0.0, 3.0)


BOOK = Params(
    profile="book",
    num_classes=(2, 3, 5, 10, 30, 100),
    # log-spaced up to 1024 at about a minute of CPU for C = 100
    population_num_negatives=(1, 2, 4, 16, 64, 256, 1024),
    dim=None,
    scales=(1.0, 10.0),
    constraints=("sphere", "ball"),
    zipf_exponent=1.0,
    skew_exponents=(0.5, 1.0, 1.5, 2.0),
    variant_num_classes=10,
    heatmap_num_classes=6,
    restarts=2,
    seed=0,
    accuracy_margin=1.0,
    quadrature_cases=6,
    quadrature_samples=100_000,
    scan=kscan.BOOK,
)


Params.profiles = {
    "smoke": BOOK.replace(
        profile="smoke",
        num_classes=(2, 4),
        population_num_negatives=(1, 32),
        variant_num_classes=3,
        heatmap_num_classes=4,
        skew_exponents=(1.0, 2.0),
        restarts=1,
        quadrature_cases=3,
        quadrature_samples=20_000,
        scan=kscan.Params.profiles["smoke"],
    ),
    "book": BOOK,
    "full": BOOK.replace(
        profile="full",
        num_classes=(2, 3, 5, 10, 20, 30, 50, 100),
        population_num_negatives=tuple(2**i for i in range(13)),
        variant_num_classes=30,
        heatmap_num_classes=10,
        restarts=3,
        scan=kscan.Params.profiles["full"],
    ),
}


SCAN_KINDS: tuple[str, ...] = ("latent", "image")


# The probes of negatives.probes.evaluate_model (backbone features) that the chapter reports.
METRICS: dict[str, str] = {"linear_accuracy": "linear probe", "mean_accuracy": "mean classifier"}


MODE_NAMES = kscan.MODE_NAMES


def plan(P: Params) -> list[tuple[TrainConfig, Dataset]]:
    """Every training run of the chapter with its data: the K-scan's (:func:`kscan.plan`); the
    population optima are computed in the notebook's process."""
    return kscan.plan(P.scan)


# the scan's K against its data, before anything trains
check = kscan.check_embedded
