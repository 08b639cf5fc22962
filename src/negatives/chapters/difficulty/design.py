"""Chapter 2's design: the papermill parameters, the profiles and every run of the chapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from negatives import config as cfg
from negatives import regimes
from negatives.chapters.params import (
    MAX_SEEDS,
    ChapterParams,
    Execution,
    ImageData,
    check_optional_int,
)
from negatives.data import DATASETS, Dataset
from negatives.regimes import ORACLE, PAPER_BANDS, REFERENCE, band_of, name_of
from negatives.trainconfig import TrainConfig

# The paper's four conditions (negatives.regimes names them), as [low, high) fractions of each
# query's ranked queue (hardest first). ``all`` is trained with negatives="all" (no sort).
MAIN_BANDS: dict[str, tuple[float, float]] = {
    n: regimes.parse("MAIN_BANDS", n).band for n in PAPER_BANDS
}


# "Nearly full accuracy" (the paper's latest abstract) read as within 0.7 points of all
# negatives: the paper's ImageNet result for the hardest 5%, as the study's notes report it. The
# margin separates "as good as all negatives" from "clearly worse" in the verdicts.
MARGIN: float = 0.7


GROUPS: tuple[str, ...] = ("main", "fine", "oracle", "rescaled")


# Every main condition at MoCo's two temperatures (MoCo v1's 0.07 and MoCo v2's 0.2).
ALL_MAIN: tuple[tuple[str, float], ...] = tuple((c, t) for t in (0.07, 0.2) for c in MAIN_BANDS)


# The book profile's design, from a pilot of 3 seeds and a first build of 5 (the closing note of
# the experiments issue): the four conditions at MoCo v2's T = 0.2, and at T = 0.07 the two that
# the claims about the hardest 0.1% need there (they are judged at both temperatures: "sometimes"
# holds where one reproduces them). Seeds go where the claims need them: 5 seeds left the
# intervals of the hardest 5% (-1.14 [-1.70, -0.57]) and the easiest 95% (-0.23 [-0.73, +0.26])
# straddling the chapter's 0.7-point margin, so those two and their reference get 8 (a 95% t
# interval about 0.7 times as wide); the hardest 0.1% decided at 5. The hardest 5% and the
# easiest 95% at T = 0.07 would cost 10 more runs. On the speedrun's encoder (the build of
# 2026-12-04) this design decided every claim but "removing the hardest 0.1% helps at T = 0.07"
# (then judged at T = 0.07 alone), whose estimate sat on its boundary (no affordable number of
# seeds decided it).
BOOK_MAIN: tuple[tuple[str, float] | tuple[str, float, int], ...] = (
    ("all", 0.2, 8),
    ("hardest 5%", 0.2, 8),
    ("easiest 95%", 0.2, 8),
    ("all but hardest 0.1%", 0.2),
    ("all", 0.07),
    ("all but hardest 0.1%", 0.07),
)


@dataclass(frozen=True)
class Params(ChapterParams, ImageData, Execution):
    """The chapter's papermill parameters (each profile in ``Params.profiles``).

    * ``main_conditions``: ``[condition, temperature]`` pairs of the paper's conditions
      (:data:`MAIN_BANDS`) to train, each with ``seeds`` seeds, or ``[condition, temperature,
      seeds]`` triples with their own; each temperature must include ``"all"`` (the reference),
      with at least as many seeds as any other condition at that temperature.
    * ``fine_temperature`` (of the fine band sweep, the oracle and the rescaled band) defaults
      to the highest main temperature (0.2 is MoCo v2's) and must be one of them.
    * ``extra_seeds``: seeds of those three groups (None: ``seeds``), which are our analyses,
      not the paper's claims.
    * ``train_size`` images train the encoders; the probes are fitted on ``probe_train_size``
      training images (None: all) and scored on ``test_size`` test images (None: all).
    """

    profile: str
    dataset: str
    train_size: int | None
    test_size: int | None
    probe_train_size: int | None
    arch: str
    width: int
    feature_grid: int
    min_scale: float
    epochs: int
    batch_size: int
    queue_size: int
    momentum: float
    bn_groups: int | None
    optimizer: str
    lr: float
    weight_decay: float
    warmup_epochs: float
    main_conditions: tuple[tuple[str, float, int], ...]
    seeds: int
    fine_bands: tuple[tuple[float, float], ...]
    fine_temperature: float | None
    extra_seeds: int | None
    consistency_keys: int
    consistency_queries: int
    consistency_top_fraction: float
    data_root: str | None

    def __post_init__(self) -> None:
        cfg.check_profile(self.profile)
        self.check_execution()
        # latent-class vectors have no views to augment: instance discrimination needs images
        cfg.check_choice("dataset", self.dataset, [d for d in DATASETS if d != "latent-class"])
        cfg.check_int("seeds", self.seeds, 1, MAX_SEEDS)
        if self.extra_seeds is not None:
            cfg.check_int("extra_seeds", self.extra_seeds, 0, MAX_SEEDS)
        for name in ("train_size", "test_size", "probe_train_size"):
            check_optional_int(name, getattr(self, name))
        self.set("main_conditions", _check_main(self.main_conditions, self.seeds))
        temps = self.temperatures
        fine_t = max(temps) if self.fine_temperature is None else self.fine_temperature
        fine_t = cfg.check_float("fine_temperature", fine_t, 0.0, strict_minimum=True)
        if fine_t not in temps:
            raise ValueError(
                f"fine_temperature={fine_t} must be one of the main temperatures {list(temps)} "
                "(its runs are compared with the 'all negatives' runs at the same temperature)"
            )
        self.set("fine_temperature", fine_t)
        if isinstance(self.fine_bands, str) or not isinstance(self.fine_bands, list | tuple):
            raise ValueError(f"fine_bands={self.fine_bands!r} must be a list of pairs [low, high]")
        bands = []
        for i, band in enumerate(self.fine_bands):
            if not isinstance(band, list | tuple) or len(band) != 2:
                raise ValueError(
                    f"fine_bands[{i}]={band!r} must be a pair [low, high] of fractions in [0, 1]"
                )
            low = cfg.check_float(f"fine_bands[{i}][0]", band[0], 0.0, 1.0)
            high = cfg.check_float(f"fine_bands[{i}][1]", band[1], 0.0, 1.0)
            if low >= high:
                raise ValueError(
                    f"fine_bands[{i}]={list(band)}: low must be < high (hardest first)"
                )
            bands.append((low, high))
        self.set("fine_bands", tuple(bands))
        cfg.check_int("consistency_keys", self.consistency_keys, 2)
        cfg.check_int("consistency_queries", self.consistency_queries, 1)
        cfg.check_float(
            "consistency_top_fraction", self.consistency_top_fraction, 0.0, 1.0, strict_minimum=True
        )
        if self.consistency_top_fraction >= 1.0:
            raise ValueError(
                f"consistency_top_fraction={self.consistency_top_fraction} must be < 1 (every key "
                "would be in every query's top set)"
            )
        if (
            self.train_size is not None
            and self.consistency_keys + self.consistency_queries > self.train_size
        ):
            raise ValueError(
                f"consistency_keys + consistency_queries = "
                f"{self.consistency_keys + self.consistency_queries} exceeds train_size={self.train_size} "
                "(keys and queries are disjoint training images)"
            )
        self.conditions()  # TrainConfig validates the rest (lr, batch_size, device, ...)

    @property
    def temperatures(self) -> tuple[float, ...]:
        """The temperatures of the main conditions, in the order they first appear."""
        return tuple(dict.fromkeys(t for _, t, _ in self.main_conditions))

    @property
    def num_classes(self) -> int:
        """C of the data set (known without loading it)."""
        return 100 if self.dataset == "cifar100" else 10

    def base_config(self) -> TrainConfig:
        return TrainConfig(
            method="moco",
            arch=self.arch,
            width=self.width,
            feature_grid=self.feature_grid,
            min_scale=self.min_scale,
            epochs=self.epochs,
            batch_size=self.batch_size,
            queue_size=self.queue_size,
            momentum=self.momentum,
            bn_groups=self.bn_groups,
            optimizer=self.optimizer,
            lr=self.lr,
            weight_decay=self.weight_decay,
            device=self.device,
            precision=self.precision,
            warmup_epochs=self.warmup_epochs,
        )

    def conditions(self) -> list[dict[str, Any]]:
        """Every training run of the chapter: ``{group, config}`` plus the labels read from the
        config (:func:`describe`: ``condition, band, temperature, seed``).

        Groups: ``main`` (:attr:`main_conditions`), ``fine`` (a sweep of bands at
        ``fine_temperature``), ``oracle`` (same-class negatives removed) and ``rescaled`` (all
        but the hardest 1/C: on a C-class data set 1/C is the same-class rate that 0.1% is on
        ImageNet). A band ``(0, 1)`` is trained with ``negatives="all"``. Within a seed every
        condition shares the initialisation, the data order and the augmentations
        (:func:`negatives.train.stream_generator`), so differences between conditions are paired.
        """
        base = self.base_config()
        extra = self.seeds if self.extra_seeds is None else self.extra_seeds
        design: list[tuple[str, tuple[float, float] | None, float, int]] = [
            ("main", MAIN_BANDS[name], t, seeds) for name, t, seeds in self.main_conditions
        ]
        t = self.fine_temperature
        assert t is not None
        if extra > 0:
            design += [("fine", band, t, extra) for band in self.fine_bands]
            design += [
                ("oracle", None, t, extra),
                ("rescaled", (1 / self.num_classes, 1.0), t, extra),
            ]
        return [
            {"group": group, **describe(c), "config": c}
            for group, band, temperature, seeds in design
            for c in (_config(base, band, temperature, seed) for seed in range(seeds))
        ]

    def plan(self) -> list[TrainConfig]:
        """Every training run of the chapter, once (a run in two groups is trained once)."""
        return list(dict.fromkeys(c["config"] for c in self.conditions()))


def _check_main(pairs: Any, seeds: int) -> tuple[tuple[str, float, int], ...]:
    """``main_conditions`` as ``((condition, temperature, seeds), ...)``, validated; an entry
    without its own seed count gets ``seeds``."""
    if isinstance(pairs, str) or not isinstance(pairs, list | tuple) or not pairs:
        raise ValueError(
            f"main_conditions={pairs!r} must be a non-empty list of [condition, temperature] "
            f"or [condition, temperature, seeds] entries, conditions from {list(MAIN_BANDS)}"
        )
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, list | tuple) or len(pair) not in (2, 3):
            raise ValueError(
                f"main_conditions[{i}]={pair!r} must be a [condition, temperature] pair or a "
                "[condition, temperature, seeds] triple"
            )
        name = cfg.check_choice(f"main_conditions[{i}][0]", pair[0], MAIN_BANDS)
        t = cfg.check_float(f"main_conditions[{i}][1]", pair[1], 0.0, strict_minimum=True)
        n = cfg.check_int(f"main_conditions[{i}][2]", pair[2], 1) if len(pair) == 3 else seeds
        out.append((name, t, n))
    keys = [(name, t) for name, t, _ in out]
    if len(set(keys)) != len(keys):
        raise ValueError(f"main_conditions={[list(p) for p in out]} lists a condition twice")
    for t in dict.fromkeys(t for _, t in keys):
        if (REFERENCE, t) not in keys:
            raise ValueError(
                f"main_conditions: temperature {t:g} has no {REFERENCE!r} condition, the "
                "reference its other conditions are compared with"
            )
        # differences are paired by seed: the reference needs every seed of the others
        ref = next(n for name, tt, n in out if (name, tt) == (REFERENCE, t))
        most = max(n for _, tt, n in out if tt == t)
        if ref < most:
            raise ValueError(
                f"main_conditions: {REFERENCE!r} at T = {t:g} has {ref} seeds, fewer than the "
                f"{most} of another condition at that temperature (differences are paired by "
                "seed, so the reference needs at least as many)"
            )
    return tuple(out)


def _config(
    base: TrainConfig, band: tuple[float, float] | None, temperature: float, seed: int
) -> TrainConfig:
    """The run of one band (``None``: the same-class oracle) at one temperature and seed."""
    regime = regimes.parse("band", ORACLE) if band is None else regimes.band(*band)
    return regime.apply(base.replace(temperature=temperature, seed=seed), num_classes=1)


def describe(config: TrainConfig) -> dict[str, Any]:
    """A run's labels, read from its config: ``condition`` (:func:`negatives.regimes.name_of`),
    ``band`` (``None`` for the oracle), ``temperature``, ``seed``."""
    return {"condition": name_of(config), "band": band_of(config),
            "temperature": config.temperature, "seed": config.seed}  # fmt: skip


BOOK = Params(
    profile="book",
    **cfg.BOOK_ENCODER,
    train_size=None,
    test_size=None,
    probe_train_size=None,
    batch_size=256,
    queue_size=4096,
    momentum=0.99,
    bn_groups=None,
    optimizer="adamw",
    lr=2e-3,
    weight_decay=1e-4,
    warmup_epochs=0.0,
    main_conditions=BOOK_MAIN,
    seeds=5,
    fine_bands=(),
    fine_temperature=None,
    extra_seeds=0,
    consistency_keys=4096,
    consistency_queries=10000,
    consistency_top_fraction=0.05,
    data_root=None,
)


Params.profiles = {
    "smoke": BOOK.replace(
        profile="smoke",
        **cfg.SMOKE_ENCODER,
        batch_size=64,
        queue_size=512,
        bn_groups=4,
        main_conditions=ALL_MAIN,
        seeds=2,
        fine_bands=((0.0, 0.01), (0.05, 0.1), (0.5, 1.0)),
        extra_seeds=None,
        consistency_keys=200,
        consistency_queries=400,
    ),
    "book": BOOK,
    # MoCo v2 on CIFAR-10 (ResNet-18, queue 4096, m = 0.99, SGD lr 0.06, wd 5e-4, 200 epochs).
    "full": BOOK.replace(
        profile="full",
        **cfg.FULL_ENCODER,
        optimizer="sgd",
        lr=0.06,
        weight_decay=5e-4,
        warmup_epochs=10.0,
        main_conditions=ALL_MAIN,
        seeds=3,
        fine_bands=((0.0, 0.01), (0.05, 0.1), (0.1, 0.2), (0.2, 0.5), (0.5, 1.0)),
        extra_seeds=None,
        consistency_queries=20000,
    ),
}


def plan(P: Params) -> list[tuple[TrainConfig, Dataset]]:
    """Every training run of the chapter with the data it trains on (:mod:`negatives.sweep`)."""
    data = P.load_data()
    return [(c, data) for c in P.plan()]


def check(P: Params, planned: list[tuple[TrainConfig, Dataset]]) -> None:
    """What only the data tell, checked before anything trains (:func:`negatives.sweep.
    check_plan`): the consistency test's keys and queries fit in the training images."""
    n = planned[0][1].train_images.shape[0] if planned else 0
    need = P.consistency_keys + P.consistency_queries
    if need > n:
        raise ValueError(
            f"consistency_keys + consistency_queries = {need} exceeds the {n} training images "
            "(keys and queries are disjoint training images)"
        )
