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

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from negatives import config as cfg
from negatives import probes
from negatives.data import DATASETS, Dataset, load_dataset
from negatives.runs import RunStore
from negatives.train import Run, TrainConfig, sweep

MODES = ("batch", "mask")
PROBE_VERSION = 2  # bump when the probes change, so that cached probe results are redone
# How the learning rate follows the batch size B: Nozawa & Sato (authors' code) use LARC SGD with
# lr = base * B / 256, the linear scaling rule; "sqrt" (base * sqrt(B / 256)) is the rule usually
# argued for Adam; "none" keeps lr = base at every B.
LR_SCALINGS = ("linear", "sqrt", "none")
REFERENCE_BATCH = 256

# The book profile's image scan trains the recipe study's knee (benchmarks/recipe.py: width 48,
# one epoch of all 60,000 images); K+1 = 16 ... 256 keeps the fixed batch at 256.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "smoke": dict(
        dataset="digits",
        train_size=None,
        test_size=None,
        arch="cnn-small",
        width=16,
        epochs=2,
        probe_train_size=None,
        lr_scaling="linear",
        warmup_epochs=0.0,
        optimizer="adamw",
        lr=2e-3,
        weight_decay=1e-4,
        temperature=0.5,
        strength=0.5,
        num_negatives=(3, 15, 63),
        modes=("batch", "mask"),
        seeds=2,
        latent_classes=20,
        latent_dim=16,
        latent_noise=0.3,
        latent_train_size=2000,
        latent_test_size=500,
        latent_num_negatives=(3, 15, 63, 255),
        latent_modes=("mask",),
        latent_epochs=3,
        device="auto",
        precision="auto",
    ),
    "book": dict(
        dataset="fashion-mnist",
        train_size=None,
        test_size=None,
        arch="cnn-small",
        width=48,
        epochs=1,
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
        seeds=3,
        latent_classes=100,
        latent_dim=32,
        latent_noise=0.3,
        latent_train_size=10000,  # 20000 cost ~45 s per run (training + probes) on one core
        latent_test_size=5000,
        latent_num_negatives=(7, 31, 127, 511, 1023),
        latent_modes=("mask",),
        latent_epochs=10,
        device="auto",
        precision="auto",
    ),
    # Nozawa & Sato's CIFAR-10 setting (ResNet-18, t = 0.5, K + 1 = 32 ... 512); 500 epochs in
    # the paper, 200 here by default (override with -p epochs 500).
    "full": dict(
        dataset="cifar10",
        train_size=None,
        test_size=None,
        arch="resnet18-cifar",
        width=64,
        epochs=200,
        probe_train_size=None,
        lr_scaling="linear",
        warmup_epochs=10.0,
        optimizer="sgd",
        lr=0.5,
        weight_decay=1e-6,
        temperature=0.5,
        strength=0.5,
        num_negatives=(31, 63, 127, 255, 511),
        modes=("batch", "mask"),
        seeds=3,
        latent_classes=100,
        latent_dim=64,
        latent_noise=0.3,
        latent_train_size=50000,
        latent_test_size=10000,
        latent_num_negatives=(7, 31, 127, 511, 1023, 2047),
        latent_modes=("batch", "mask"),
        latent_epochs=50,
        device="auto",
        precision="auto",
    ),
}


@dataclass(frozen=True)
class KScanParams:
    """The K-scan's papermill parameters (see :data:`PROFILE_DEFAULTS` for each profile)."""

    profile: str
    dataset: str
    train_size: int | None
    test_size: int | None
    arch: str
    width: int
    epochs: int
    probe_train_size: int | None
    lr_scaling: str
    warmup_epochs: float
    optimizer: str
    lr: float
    weight_decay: float
    temperature: float
    strength: float
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
    device: str
    precision: str
    data_root: str | None = None
    results_dir: str = "results"

    @classmethod
    def from_profile(cls, profile: str = "book", **overrides: Any) -> KScanParams:
        values = cfg.merge_profile(
            profile, PROFILE_DEFAULTS, overrides, passthrough=("data_root", "results_dir")
        )
        return cls(profile=profile, **values)

    def __post_init__(self) -> None:
        cfg.check_choice("dataset", self.dataset, DATASETS)
        object.__setattr__(
            self, "num_negatives", cfg.check_int_list("num_negatives", self.num_negatives, 1)
        )
        object.__setattr__(
            self,
            "latent_num_negatives",
            cfg.check_int_list("latent_num_negatives", self.latent_num_negatives, 1),
        )
        for name in ("modes", "latent_modes"):
            value = getattr(self, name)
            value = (value,) if isinstance(value, str) else tuple(value)
            if not value:
                raise ValueError(f"{name} must list at least one of {list(MODES)}")
            for v in value:
                cfg.check_choice(name, v, MODES)
            object.__setattr__(self, name, value)
        cfg.check_int("seeds", self.seeds, 1)
        cfg.check_int("latent_classes", self.latent_classes, 2)
        cfg.check_int("latent_dim", self.latent_dim, 1)
        cfg.check_float("latent_noise", self.latent_noise, 0.0)
        for name in ("train_size", "test_size", "probe_train_size"):
            if getattr(self, name) is not None:
                cfg.check_int(name, getattr(self, name), 1)
        cfg.check_choice("lr_scaling", self.lr_scaling, LR_SCALINGS)
        # TrainConfig validates the rest (lr, temperature, ...) when the configs are built.
        self.configs()
        self.latent_configs()

    # -- configs ---------------------------------------------------------------------------
    def _base(self) -> TrainConfig:
        return TrainConfig(
            method="simclr",
            arch=self.arch,
            width=self.width,
            epochs=self.epochs,
            optimizer=self.optimizer,
            lr=self.lr,
            weight_decay=self.weight_decay,
            temperature=self.temperature,
            strength=self.strength,
            device=self.device,
            precision=self.precision,
            warmup_epochs=self.warmup_epochs,
        )

    def lr_at(self, batch_size: int) -> float:
        """The learning rate at ``batch_size``: ``lr`` is the one at batch 256, scaled by
        ``lr_scaling`` (linear, as the paper: lr = lr_256 * B / 256)."""
        ratio = batch_size / REFERENCE_BATCH
        factor = {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[self.lr_scaling]
        return self.lr * factor

    def configs(self) -> list[tuple[str, int, int, TrainConfig]]:
        """``(mode, K, seed, config)`` for the image data set."""
        return _scan(self._base(), self.num_negatives, self.modes, self.seeds, self.lr_at)

    def latent_configs(self) -> list[tuple[str, int, int, TrainConfig]]:
        """``(mode, K, seed, config)`` for the latent-class data (positives from the class)."""
        base = self._base().replace(
            arch="mlp",
            width=max(self.width, 128),
            positives="latent-class",
            epochs=self.latent_epochs,
            strength=0.5,
        )
        return _scan(base, self.latent_num_negatives, self.latent_modes, self.seeds, self.lr_at)

    # -- data ------------------------------------------------------------------------------
    def load_data(self) -> Dataset:
        """The images the encoders train on (``train_size`` of them) and the test images."""
        return load_dataset(
            self.dataset, self.data_root, train_size=self.train_size, test_size=self.test_size
        )

    def load_probe_data(self) -> Dataset:
        """The images the probes are fitted on (``probe_train_size``, None: all) and scored on
        (the same test images as :meth:`load_data`)."""
        return load_dataset(
            self.dataset,
            self.data_root,
            train_size=self.probe_train_size,
            test_size=self.test_size,
        )

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


def _scan(
    base: TrainConfig,
    ks: tuple[int, ...],
    modes: tuple[str, ...],
    seeds: int,
    lr_at: Callable[[int], float],
) -> list[tuple[str, int, int, TrainConfig]]:
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
                out.append((mode, k, seed, c))
    return out


def run_scan(
    scan: list[tuple[str, int, int, TrainConfig]],
    data: Dataset,
    store: RunStore,
    *,
    desc: str,
    probe_data: Dataset | None = None,
) -> tuple[list[Run], pd.DataFrame]:
    """Train (or reuse) every run of ``scan`` on ``data``; one row per run with the probes.

    The probes (:func:`negatives.probes.evaluate_model`, backbone features) are fitted on
    ``probe_data``'s training images (default: ``data``'s) and scored on its test images;
    each row has their accuracies and which test samples each got right (``*_correct``).
    """
    probe_data = data if probe_data is None else probe_data
    runs_ = sweep([c for *_, c in scan], data, store, desc=desc)
    device = cfg.resolve_device(scan[0][3].device) if scan else "cpu"
    rows = []
    for (mode, k, seed, config), r in zip(scan, runs_, strict=True):

        def compute(r: Run = r) -> dict[str, Any]:
            return probes.evaluate_model(r.load_model(device), probe_data, device=device)

        metrics = r.evaluate(
            "probes", {"data": probe_data.fingerprint, "version": PROBE_VERSION}, compute
        )
        rows.append(
            {
                "mode": mode,
                "K": k,
                "seed": seed,
                "batch_size": config.batch_size,
                "lr": config.lr,
                "run_id": r.run_id,
                "train_seconds": r.result["seconds"],
                **metrics,
            }
        )
    return runs_, pd.DataFrame(rows)


def params_table(params: Any) -> pd.DataFrame:
    """A chapter's resolved parameters as a two-column table (for the book)."""
    # str() per value: pandas' astype(str) would print None as "nan"
    return pd.DataFrame(
        [(f.name, str(getattr(params, f.name))) for f in dataclasses.fields(params)],
        columns=["parameter", "value"],
    )
