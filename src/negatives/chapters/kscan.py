"""The K-scan shared by the Nozawa & Sato and the Awasthi et al. chapters.

SimCLR-style encoders trained with K negatives per query, K varied two ways:

* ``batch``: as Nozawa & Sato (2021), through the batch size, K + 1 = B (which also changes
  batch-norm statistics and the number of optimiser steps);
* ``mask``: a fixed batch of ``max(K) + 1`` and a random K-subset of the in-batch negatives per
  query (:func:`negatives.filters.random_subset_mask`), so only K changes.

Both chapters build the same configs from the same parameters, so the run cache trains each
encoder once and the second chapter reuses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from negatives import config as cfg
from negatives.chapters.params import (
    MAX_EPOCHS,
    MAX_LATENT_SIZE,
    MAX_SEEDS,
    ChapterParams,
    Execution,
    ImageData,
    check_list,
    check_optional_int,
)
from negatives.data import DATASETS, Dataset, load_dataset
from negatives.experiment import train_and_probe
from negatives.runner import Run, Workers
from negatives.runs import RunStore
from negatives.trainconfig import TrainConfig

MODES = ("batch", "mask")
# How each mode is named in figures and sentences.
MODE_NAMES: dict[str, str] = {
    "batch": "K+1 = batch size (as the paper)",
    "mask": "fixed batch with a random K-subset",
}
# The EqCo arms (chapter 3): a mode's runs with the loss held at the scale of max(K) negatives
# (:attr:`negatives.TrainConfig.eqco_alpha`), named by the prefix and the mode they rescale.
EQCO_PREFIX = "eqco-"
MODE_NAMES[EQCO_PREFIX + "mask"] = "fixed batch with a random K-subset, EqCo's α/K"
MODE_NAMES[EQCO_PREFIX + "batch"] = "K+1 = batch size, EqCo's α/K"
# How the learning rate follows the batch size B: Nozawa & Sato (authors' code) use LARC SGD with
# lr = base * B / 256, the linear scaling rule; "sqrt" (base * sqrt(B / 256)) is the rule usually
# argued for Adam; "none" keeps lr = base at every B.
LR_SCALINGS = ("linear", "sqrt", "none")
REFERENCE_BATCH = 256


def _scan(
    base: TrainConfig,
    ks: tuple[int, ...],
    modes: tuple[str, ...],
    seeds: int,
    lr_at: Callable[[int], float],
) -> list[tuple[str, TrainConfig]]:
    """Every run of a scan. In ``batch`` mode K + 1 is the batch size; in ``mask`` mode the
    batch is max(K) + 1 and each anchor keeps a random K-subset. Either way the learning rate
    is ``lr_at(batch size)``, so the largest K is one run shared by both modes."""
    out = []
    fixed_batch = max(ks) + 1
    for mode in modes:
        for k in sorted(ks):
            for seed in range(seeds):
                if mode == "batch" or k + 1 == fixed_batch:
                    c = base.replace(batch_size=k + 1, seed=seed, lr=lr_at(k + 1))
                else:
                    c = base.replace(
                        batch_size=fixed_batch,
                        negatives="random-k",
                        num_negatives=k,
                        seed=seed,
                        lr=lr_at(fixed_batch),
                    )
                out.append((mode, c))
    return out


def _eqco_scan(
    base: TrainConfig,
    ks: tuple[int, ...],
    modes: tuple[str, ...],
    seeds: int,
    lr_at: Callable[[int], float],
) -> list[tuple[str, TrainConfig]]:
    """Each of ``modes``' scans with EqCo's rescaling at alpha = max(K): each K's negatives
    are summed at the weight of max(K) of them, rows named ``"eqco-<mode>"``. At K = max(K)
    the shift is log 1 = 0: that run is the mode's own (no ``eqco_alpha``), shared through the
    cache."""
    alpha = max(ks)
    out = []
    for mode in modes:
        for _, c in _scan(base, ks, (mode,), seeds, lr_at):
            eqco = c if c.negatives_per_query == alpha else c.replace(eqco_alpha=alpha)
            out.append((EQCO_PREFIX + mode, eqco))
    return out


@dataclass(frozen=True)
class Params(ChapterParams, ImageData, Execution):
    """The K-scan's parameters: papermill parameters of chapters 3 and 4, which embed it.

    ``lr`` is the learning rate at batch 256, scaled to each batch size by ``lr_scaling``;
    ``num_negatives`` / ``modes`` are the image scan's K values and how K is varied, the
    ``latent_*`` fields the same for the synthetic latent-class data.
    """

    profile: str
    dataset: str
    data_root: str | None
    train_size: int | None
    test_size: int | None
    probe_train_size: int | None
    arch: str
    width: int
    feature_grid: int
    epochs: int
    lr_scaling: str
    warmup_epochs: float
    optimizer: str
    lr: float
    weight_decay: float
    temperature: float
    strength: float
    min_scale: float
    num_negatives: tuple[int, ...]
    modes: tuple[str, ...]
    seeds: int
    latent_classes: int
    latent_dim: int
    latent_noise: float
    latent_train_size: int
    latent_test_size: int
    latent_num_negatives: tuple[int, ...]
    latent_modes: tuple[str, ...]
    latent_epochs: int

    def __post_init__(self) -> None:
        cfg.check_profile(self.profile)
        self.check_execution()
        cfg.check_choice("dataset", self.dataset, DATASETS)
        for name in ("num_negatives", "latent_num_negatives"):
            self.set(name, cfg.check_int_list(name, getattr(self, name), 1))
        for name in ("modes", "latent_modes"):
            self.set(name, check_list(name, getattr(self, name), _check_mode))
        cfg.check_int("seeds", self.seeds, 1, MAX_SEEDS)
        cfg.check_int("latent_classes", self.latent_classes, 2, MAX_LATENT_SIZE)
        cfg.check_int("latent_dim", self.latent_dim, 1, MAX_LATENT_SIZE)
        cfg.check_float("latent_noise", self.latent_noise, 0.0)
        cfg.check_int("latent_train_size", self.latent_train_size, 1)
        cfg.check_int("latent_test_size", self.latent_test_size, 1)
        cfg.check_int("latent_epochs", self.latent_epochs, 1, MAX_EPOCHS)
        cfg.check_float("warmup_epochs", self.warmup_epochs, 0.0)
        if self.warmup_epochs > self.latent_epochs:
            raise ValueError(
                f"latent_epochs={self.latent_epochs} must be >= warmup_epochs="
                f"{self.warmup_epochs:g}: the latent-class runs warm up as the image runs do"
            )
        for name in ("train_size", "test_size", "probe_train_size"):
            check_optional_int(name, getattr(self, name))
        cfg.check_choice("lr_scaling", self.lr_scaling, LR_SCALINGS)
        self.plan()  # TrainConfig checks the rest (lr, temperature, epochs, ...)

    def lr_at(self, batch_size: int) -> float:
        """The learning rate at ``batch_size``: ``lr`` is the one at batch 256, scaled by
        ``lr_scaling`` (linear, as the paper: lr = lr_256 * B / 256)."""
        ratio = batch_size / REFERENCE_BATCH
        factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[self.lr_scaling]
        return self.lr * factor

    def base_config(self) -> TrainConfig:
        return TrainConfig(
            method="simclr",
            arch=self.arch,
            width=self.width,
            feature_grid=self.feature_grid,
            epochs=self.epochs,
            optimizer=self.optimizer,
            lr=self.lr,
            weight_decay=self.weight_decay,
            temperature=self.temperature,
            strength=self.strength,
            min_scale=self.min_scale,
            device=self.device,
            precision=self.precision,
            warmup_epochs=self.warmup_epochs,
        )

    def configs(self) -> list[tuple[str, TrainConfig]]:
        """``(mode, config)`` of the image scan."""
        return _scan(self.base_config(), self.num_negatives, self.modes, self.seeds, self.lr_at)

    def eqco_configs(self, modes: tuple[str, ...]) -> list[tuple[str, TrainConfig]]:
        """``("eqco-<mode>", config)`` of the image scan's EqCo arms (:func:`_eqco_scan`), for
        the ``modes`` the image scan has."""
        own = tuple(m for m in modes if m in self.modes)
        return _eqco_scan(self.base_config(), self.num_negatives, own, self.seeds, self.lr_at)

    def latent_eqco_configs(self, modes: tuple[str, ...]) -> list[tuple[str, TrainConfig]]:
        """``("eqco-<mode>", config)`` of the latent-class scan's EqCo arms, for the ``modes``
        the latent scan has (``latent_modes``)."""
        own = tuple(m for m in modes if m in self.latent_modes)
        base = self.latent_base_config()
        return _eqco_scan(base, self.latent_num_negatives, own, self.seeds, self.lr_at)

    def latent_base_config(self) -> TrainConfig:
        """The recipe on the latent-class vectors: an MLP, positives from the class."""
        return self.base_config().replace(
            arch="mlp",
            width=max(self.width, 128),
            feature_grid=1,
            positives="latent-class",
            epochs=self.latent_epochs,
            strength=0.5,  # vectors have no views: the image recipe's crops and jitter do not
            min_scale=0.2,  # enter the latent runs' identity
        )

    def latent_configs(self) -> list[tuple[str, TrainConfig]]:
        """``(mode, config)`` of the latent-class scan (positives from the class)."""
        base = self.latent_base_config()
        return _scan(base, self.latent_num_negatives, self.latent_modes, self.seeds, self.lr_at)

    def plan(self) -> list[TrainConfig]:
        """Every training run of the scan, once (the largest K is shared by both modes)."""
        return list(dict.fromkeys(c for _, c in self.configs() + self.latent_configs()))

    def load_latent_data(self) -> Dataset:
        return load_dataset(
            "latent-class",
            num_classes=self.latent_classes,
            dim=self.latent_dim,
            noise=self.latent_noise,
            train_size=self.latent_train_size,
            test_size=self.latent_test_size,
            seed=0,
        )


def _check_mode(name: str, value: Any) -> str:
    return cfg.check_choice(name, value, MODES)


# The book profile's image scan trains the book's encoder (config.BOOK_ENCODER, the speedrun's
# recipe: benchmarks/speedrun.py), one epoch of all 60,000 images; K+1 = 16 ... 256 keeps the
# fixed batch at 256. Seeds by the power rule (negatives.verdicts.seeds_to_decide): at 3 seeds the
# mean classifier's slopes in the mask mode (images and latent-class data) needed 4; the linear
# probe's slope in the batch mode sits on the 0.25-point boundary, which no seed count decides.
BOOK = Params(
    profile="book",
    **cfg.BOOK_ENCODER,
    data_root=None,
    train_size=None,
    test_size=None,
    probe_train_size=None,
    lr_scaling="linear",
    warmup_epochs=0.0,
    optimizer="adamw",
    lr=2e-3,
    weight_decay=1e-4,
    temperature=0.5,
    strength=0.5,
    num_negatives=(15, 63, 255),
    modes=("batch", "mask"),
    seeds=4,
    latent_classes=100,
    latent_dim=32,
    latent_noise=0.3,
    latent_train_size=10000,  # 20000 cost ~45 s per run (training + probes) on one core
    latent_test_size=5000,
    latent_num_negatives=(7, 31, 127, 511, 1023),
    latent_modes=("mask",),
    latent_epochs=10,
)
Params.profiles = {
    "smoke": BOOK.replace(
        profile="smoke",
        **cfg.SMOKE_ENCODER,
        num_negatives=(3, 15, 63),
        seeds=2,
        latent_classes=20,
        latent_dim=16,
        latent_train_size=2000,
        latent_test_size=500,
        latent_num_negatives=(3, 15, 63, 255),
        latent_epochs=3,
    ),
    "book": BOOK,
    # Nozawa & Sato's CIFAR-10 setting (ResNet-18, t = 0.5, K + 1 = 32 ... 512); 500 epochs in
    # the paper, 200 here by default (override with -p epochs 500).
    "full": BOOK.replace(
        profile="full",
        **cfg.FULL_ENCODER,
        warmup_epochs=10.0,
        optimizer="sgd",
        lr=0.5,
        weight_decay=1e-6,
        num_negatives=(31, 63, 127, 255, 511),
        latent_dim=64,
        latent_train_size=50000,
        latent_test_size=10000,
        latent_num_negatives=(7, 31, 127, 511, 1023, 2047),
        latent_modes=("batch", "mask"),
        latent_epochs=50,
    ),
}


def plan(P: Params) -> list[tuple[TrainConfig, Dataset]]:
    """Every run of the scan with the data it trains on: the image scan on :meth:`Params.
    load_data`, the latent-class scan on :meth:`Params.load_latent_data`."""
    image, latent = P.load_data(), P.load_latent_data()
    return [(c, image) for _, c in P.configs()] + [(c, latent) for _, c in P.latent_configs()]


def check_scan(P: Params) -> None:
    """Every K against the data it trains on, named as the user wrote it: a batch of K + 1
    samples (SimCLR's negatives are the batch's other samples) cannot exceed the training set
    (``num_negatives`` against the image data, ``latent_negatives`` against
    ``latent_train_size``), before the trainer would name it ``batch_size``."""
    n_image = P.load_data().train_images.shape[0]
    for name, ks, n, size in (
        ("num_negatives", P.num_negatives, n_image, f"train_size={P.train_size}"),
        ("latent_num_negatives", P.latent_num_negatives, P.latent_train_size,
         f"latent_train_size={P.latent_train_size}"),
    ):  # fmt: skip
        for i, k in enumerate(ks):
            if k + 1 > n:
                raise ValueError(
                    f"{name}[{i}]={k}: a batch of K + 1 = {k + 1} samples is more than the {n} "
                    f"training samples it would be drawn from ({size}); at most K = {n - 1}"
                )


def check_embedded(P: Any, planned: list[tuple[TrainConfig, Dataset]]) -> None:
    """The ``check`` of a chapter that embeds the scan as ``P.scan`` (chapters 3 and 4;
    :func:`negatives.sweep.check_plan`): :func:`check_scan`, before anything trains."""
    check_scan(P.scan)


def run_scan(
    scan: list[tuple[str, TrainConfig]],
    data: Dataset,
    store: RunStore,
    *,
    desc: str,
    probe_data: Dataset | None = None,
    workers: Workers | None = None,
) -> tuple[list[Run], pd.DataFrame]:
    """Train (or reuse) every run of ``scan`` on ``data``; one row per run with the probes.

    The probes (:func:`negatives.probes.evaluate_model`, backbone features) are fitted on
    ``probe_data``'s training images (default: ``data``'s) and scored on its test images;
    each row has their accuracies and which test samples each got right (``*_correct``).
    ``workers``: the executor's workers that trained the runs (:func:`negatives.sweep.execute`;
    None: this process trains them).
    """
    labelled = [
        ({"mode": mode, "K": c.negatives_per_query, "batch_size": c.batch_size, "lr": c.lr}, c)
        for mode, c in scan
    ]
    return train_and_probe(labelled, data, store, probe_data=probe_data, desc=desc, workers=workers)


def scan_rows(
    kind: str,
    scan: list[tuple[str, TrainConfig]],
    data: Dataset,
    store: RunStore,
    *,
    desc: str,
    probe_data: Dataset | None = None,
    workers: Workers | None = None,
) -> pd.DataFrame:
    """:func:`run_scan`'s rows with what names their data in front: ``data`` (``kind``:
    ``"image"`` or ``"latent"``), ``dataset`` and ``num_classes``."""
    _, df = run_scan(scan, data, store, desc=desc, probe_data=probe_data, workers=workers)
    df.insert(0, "data", kind)
    df.insert(1, "dataset", data.name)
    df.insert(2, "num_classes", data.num_classes)
    return df


def data_label(rows: pd.DataFrame, kind: str) -> str:
    """How a data kind of a scan's rows is named in figures, tables and verdicts:
    ``"<dataset> (C=<classes>)"``."""
    g = rows[rows["data"] == kind]
    if len(g) == 0:
        raise ValueError(f"kind={kind!r} has no rows; present: {sorted(set(rows['data']))}")
    return f"{g['dataset'].iloc[0]} (C={int(g['num_classes'].iloc[0])})"
