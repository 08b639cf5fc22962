"""Chapter 2: are all negatives created equal? (Cai & Frankle 2020, MoCo v2 difficulty bands)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from negatives import config as cfg
from negatives.data import DATASETS, Dataset, load_dataset
from negatives.train import TrainConfig

# The paper's four conditions, as [low, high) fractions of each query's ranked queue (hardest
# first). ``all`` is trained with negatives="all" (the same set, without the sort).
MAIN_BANDS: dict[str, tuple[float, float]] = {
    "all": (0.0, 1.0),
    "hardest 5%": (0.0, 0.05),
    "easiest 95%": (0.05, 1.0),
    "all but hardest 0.1%": (0.001, 1.0),
}

PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "smoke": dict(
        dataset="digits", train_size=None, test_size=None, arch="cnn-small", width=16, epochs=2,
        batch_size=64, queue_size=512, momentum=0.99, optimizer="adamw", lr=2e-3,
        weight_decay=1e-4, temperatures=(0.07, 0.2), seeds=2,
        fine_bands=((0.0, 0.01), (0.05, 0.1), (0.5, 1.0)), fine_temperature=0.2, device="auto",
    ),
    "book": dict(
        dataset="fashion-mnist", train_size=5000, test_size=2000, arch="cnn-small", width=32,
        epochs=4, batch_size=256, queue_size=2048, momentum=0.99, optimizer="adamw", lr=2e-3,
        weight_decay=1e-4, temperatures=(0.07, 0.2), seeds=3,
        fine_bands=((0.0, 0.01), (0.05, 0.1), (0.1, 0.2), (0.2, 0.5), (0.5, 1.0)),
        fine_temperature=0.2, device="auto",
    ),
    # MoCo v2 on CIFAR-10 (ResNet-18, queue 4096, m = 0.99, SGD lr 0.06, wd 5e-4, 200 epochs).
    "full": dict(
        dataset="cifar10", train_size=None, test_size=None, arch="resnet18-cifar", width=64,
        epochs=200, batch_size=256, queue_size=4096, momentum=0.99, optimizer="sgd", lr=0.06,
        weight_decay=5e-4, temperatures=(0.07, 0.2), seeds=3,
        fine_bands=((0.0, 0.01), (0.05, 0.1), (0.1, 0.2), (0.2, 0.5), (0.5, 1.0)),
        fine_temperature=0.2, device="auto",
    ),
}


@dataclass(frozen=True)
class DifficultyParams:
    """The chapter's papermill parameters (see :data:`PROFILE_DEFAULTS` for each profile)."""

    profile: str
    dataset: str
    train_size: int | None
    test_size: int | None
    arch: str
    width: int
    epochs: int
    batch_size: int
    queue_size: int
    momentum: float
    optimizer: str
    lr: float
    weight_decay: float
    temperatures: tuple[float, ...]
    seeds: int
    fine_bands: tuple[tuple[float, float], ...]
    fine_temperature: float
    device: str
    data_root: str | None = None
    results_dir: str = "results"

    @classmethod
    def from_profile(cls, profile: str = "book", **overrides: Any) -> DifficultyParams:
        extra = {k: overrides.pop(k) for k in ("data_root", "results_dir") if k in overrides}
        values = cfg.merge_profile(profile, PROFILE_DEFAULTS, overrides)
        return cls(profile=profile, **values, **{k: v for k, v in extra.items() if v is not None})

    def __post_init__(self) -> None:
        # latent-class vectors have no views to augment: instance discrimination needs images
        cfg.check_choice("dataset", self.dataset, [d for d in DATASETS if d != "latent-class"])
        cfg.check_int("seeds", self.seeds, 1)
        temps = self.temperatures
        temps = (temps,) if isinstance(temps, int | float) else tuple(temps)
        if not temps:
            raise ValueError("temperatures must list at least one temperature > 0")
        temps = tuple(cfg.check_float(f"temperatures[{i}]", t, 0.0, strict_minimum=True) for i, t in enumerate(temps))
        object.__setattr__(self, "temperatures", temps)
        cfg.check_float("fine_temperature", self.fine_temperature, 0.0, strict_minimum=True)
        bands = []
        for i, band in enumerate(self.fine_bands):
            if not isinstance(band, list | tuple) or len(band) != 2:
                raise ValueError(f"fine_bands[{i}]={band!r} must be a pair [low, high] of fractions in [0, 1]")
            low = cfg.check_float(f"fine_bands[{i}][0]", band[0], 0.0, 1.0)
            high = cfg.check_float(f"fine_bands[{i}][1]", band[1], 0.0, 1.0)
            if low >= high:
                raise ValueError(f"fine_bands[{i}]={list(band)}: low must be < high")
            bands.append((low, high))
        object.__setattr__(self, "fine_bands", tuple(bands))
        self.conditions()  # TrainConfig validates the rest

    def base_config(self) -> TrainConfig:
        return TrainConfig(
            method="moco", arch=self.arch, width=self.width, epochs=self.epochs,
            batch_size=self.batch_size, queue_size=self.queue_size, momentum=self.momentum,
            optimizer=self.optimizer, lr=self.lr, weight_decay=self.weight_decay, device=self.device,
            warmup_epochs=min(10.0, self.epochs / 20) if self.profile == "full" else 0.0,
        )

    def conditions(self) -> list[dict[str, Any]]:
        """Every training run of the chapter: ``{group, condition, band, temperature, seed, config}``.

        Groups: ``main`` (the paper's four conditions at each temperature), ``fine`` (a sweep of
        bands at ``fine_temperature``), ``oracle`` (same-class negatives removed) and ``rescaled``
        (all but the hardest 1/C: on a C-class data set 1/C is the same-class rate that 0.1% is
        on ImageNet).
        """
        base = self.base_config()
        out: list[dict[str, Any]] = []

        def add(group: str, name: str, band: tuple[float, float] | None, t: float, regime: str) -> None:
            for seed in range(self.seeds):
                if regime == "band" and band == (0.0, 1.0):
                    regime_, kw = "all", {}
                elif regime == "band":
                    assert band is not None
                    regime_, kw = "band", {"band_low": band[0], "band_high": band[1]}
                else:
                    regime_, kw = regime, {}
                c = base.replace(temperature=t, seed=seed, negatives=regime_, **kw)
                out.append({"group": group, "condition": name, "band": band, "temperature": t, "seed": seed, "config": c})

        for t in self.temperatures:
            for name, band in MAIN_BANDS.items():
                add("main", name, band, t, "band")
        for band in self.fine_bands:
            add("fine", f"[{band[0]:g}, {band[1]:g})", band, self.fine_temperature, "band")
        add("oracle", "no same-class", None, self.fine_temperature, "no-same-class")
        num_classes = _num_classes(self.dataset)
        add("rescaled", f"all but hardest 1/C = {1 / num_classes:.3g}", (1 / num_classes, 1.0), self.fine_temperature, "band")
        return out

    def load_data(self) -> Dataset:
        return load_dataset(self.dataset, self.data_root, train_size=self.train_size, test_size=self.test_size)


def _num_classes(dataset: str) -> int:
    return {"cifar100": 100}.get(dataset, 10)
