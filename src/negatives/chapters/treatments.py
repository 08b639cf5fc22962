"""Chapter 5: one bench of negative treatments, and what the three papers say together.

Every treatment acts on the same mechanism, a negative that shares the anchor's class, and is a
regime of the one trainer (a mask or per-negative weights over the logits, static shapes) on
the recipes of chapters 2 and 3, so the runs they share come from the run cache:

* the difficulty bands of Cai & Frankle (2020): ``"hardest 5%"``, ``"all but hardest 0.1%"``
  (any ``"hardest p%"`` / ``"all but hardest p%"``);
* the same-class oracle, ``"no same-class"``: what perfect knowledge of false negatives buys;
* debiased contrastive learning (Chuang et al. 2020), ``"debiased tau+=1/C"`` (or ``=x/C``,
  or an absolute ``=0.05``): :func:`negatives.losses.debiased_info_nce` with its clamp;
* hard-negative reweighting (Robinson et al. 2021), ``"hard beta=1"``: weights
  ``exp(beta s / T)`` on top of debiasing at ``tau+ = 1/C`` (``"hard beta=1 tau+=x/C"``).

A *bench* is ``(method, data, K)``: MoCo v2 with a queue of K (chapter 2's recipe) or SimCLR
with K negatives per anchor (chapter 3's), on the chapter's images or on the latent-class
vectors. SimCLR benches of one data set share one batch, their largest K + 1; a smaller K is a
negative group of K + 1 instances (:attr:`negatives.train.TrainConfig.negative_groups`), so
that K changes and the optimiser's steps do not.

:func:`run` trains (or reuses) every run, probes it, and builds the tables: accuracy and the
paired difference to all negatives with both intervals (:func:`summarize`), the share of the
softmax's negative weight that falls on same-class negatives (logged in training,
:func:`negatives.filters.same_class_weight`), the verdicts (:func:`claims`) and the synthesis
of the whole book's verdicts (:func:`synthesis`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from negatives import config as cfg
from negatives import probes, stats
from negatives import verdicts as vd
from negatives.bounds import collision_probability
from negatives.chapters import difficulty, kscan
from negatives.chapters.params import (
    ChapterParams,
    Execution,
    ImageData,
    check_list,
    check_optional_int,
)
from negatives.data import DATASETS, Dataset
from negatives.experiment import train_and_probe
from negatives.runner import Run, Workers
from negatives.runs import RunStore
from negatives.sweep import execute
from negatives.trainconfig import TrainConfig

METHODS = ("moco", "simclr")
DATA_KINDS = ("image", "latent")
REFERENCE = "all"
ORACLE = difficulty.ORACLE  # "no same-class"
CHAPTER = "treatments"

_NUMBER = r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_BAND = re.compile(rf"^(all but )?hardest {_NUMBER}%$")
_PRIOR = rf"tau\+={_NUMBER}(/C)?"
_DEBIASED = re.compile(rf"^debiased {_PRIOR}$")
_HARD = re.compile(rf"^hard beta={_NUMBER}(?: {_PRIOR})?$")
GRAMMAR = (
    "'all', 'hardest P%', 'all but hardest P%', 'no same-class', 'debiased tau+=X/C' (or an "
    "absolute 'debiased tau+=0.05'), 'hard beta=B' (at tau+ = 1/C) or 'hard beta=B tau+=X/C'"
)


@dataclass(frozen=True)
class Treatment:
    """What a treatment changes in a config: ``negatives`` (with its band), ``tau_plus`` (a
    number, or ``per_class`` multiples of 1/C) and ``beta``; ``kind`` names its family."""

    name: str
    kind: str  # reference, band, oracle, debiased, hard
    negatives: str = "all"
    band: tuple[float, float] = (0.0, 1.0)
    tau_plus: float = 0.0
    per_class: bool = False
    beta: float = 0.0

    def apply(self, base: TrainConfig, num_classes: int) -> TrainConfig:
        """``base`` under this treatment (``tau_plus`` resolved with the data's C)."""
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


def parse_treatment(name: str, text: Any) -> Treatment:
    """A treatment from its name (see :data:`GRAMMAR`); ``name`` is the parameter, for errors."""
    if not isinstance(text, str):
        raise ValueError(f"{name}={text!r} must be a treatment name: {GRAMMAR}")
    t = " ".join(text.split())
    if t == REFERENCE:
        return Treatment(t, "reference")
    if t == ORACLE:
        return Treatment(t, "oracle", negatives="no-same-class")
    m = _BAND.match(t)
    if m:
        p = float(m.group(2)) / 100
        if not 0 < p < 1:
            raise ValueError(f"{name}={text!r}: the percentage must lie strictly between 0 and 100")
        band = (p, 1.0) if m.group(1) else (0.0, p)
        return Treatment(t, "band", negatives="band", band=band)
    m = _DEBIASED.match(t)
    hard = _HARD.match(t)
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
        return Treatment(t, kind, tau_plus=tau, per_class=per_class is not None, beta=beta)
    raise ValueError(f"{name}={text!r} is not a treatment; allowed: {GRAMMAR}")


def _check_treatments(name: str, values: Any) -> tuple[str, ...]:
    names = check_list(name, values, lambda n, v: parse_treatment(n, v).name)
    if REFERENCE not in names:
        raise ValueError(f"{name}={list(names)} must include {REFERENCE!r}, the reference")
    if len(set(names)) != len(names):
        raise ValueError(f"{name}={list(names)} lists a treatment twice")
    return names


def _check_bench(name: str, value: Any) -> tuple[str, str, int]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ValueError(
            f"{name}={value!r} must be a [method, data, K] triple, e.g. ['moco', 'image', 4096] "
            f"(method in {list(METHODS)}, data in {list(DATA_KINDS)})"
        )
    method = cfg.check_choice(f"{name}[0]", value[0], METHODS)
    kind = cfg.check_choice(f"{name}[1]", value[1], DATA_KINDS)
    return method, kind, cfg.check_int(f"{name}[2]", value[2], 1)


def bench_label(bench: tuple[str, str, int], data_name: str) -> str:
    """``"MoCo v2, fashion-mnist (C=10), K = 4096"``."""
    method = {"moco": "MoCo v2", "simclr": "SimCLR"}[bench[0]]
    return f"{method}, {data_name}, K = {bench[2]}"


@dataclass(frozen=True)
class Params(ChapterParams, ImageData, Execution):
    """The chapter's papermill parameters (each profile in ``Params.profiles``).

    * ``benches``: ``[method, data, K]`` triples (``data``: ``image`` is ``dataset``,
      ``latent`` the latent-class vectors with ``latent_classes`` classes).
    * ``treatments``: the treatments of every latent bench, ``image_treatments`` of every
      image bench (see :data:`GRAMMAR`); both include ``"all"``, the reference.
    * ``seeds`` / ``latent_seeds``: seeds per treatment on the image / latent benches; every
      difference to ``"all"`` is paired by seed.
    * The recipe (architecture, optimiser, batch, queue momentum, learning-rate scaling) is
      chapter 2's for MoCo and chapter 3's for SimCLR, of the same profile; ``epochs`` and
      ``latent_epochs`` override theirs.
    * ``margin``: points within which a treatment counts as "as good as all negatives" (the
      0.7 of chapter 2).
    """

    profile: str
    dataset: str
    data_root: str | None
    train_size: int | None
    test_size: int | None
    probe_train_size: int | None
    epochs: int
    latent_classes: int
    latent_epochs: int
    benches: tuple[tuple[str, str, int], ...]
    treatments: tuple[str, ...]
    image_treatments: tuple[str, ...]
    seeds: int
    latent_seeds: int
    moco_temperature: float
    simclr_temperature: float
    margin: float
    device: str
    precision: str
    results_dir: str
    executor: str
    workers: int | None
    wait: bool
    executor_options: dict[str, Any] | None

    def __post_init__(self) -> None:
        cfg.check_profile(self.profile)
        self.check_execution()
        cfg.check_choice("dataset", self.dataset, [d for d in DATASETS if d != "latent-class"])
        for name in ("train_size", "test_size", "probe_train_size"):
            check_optional_int(name, getattr(self, name))
        cfg.check_int("epochs", self.epochs, 1)
        cfg.check_int("latent_epochs", self.latent_epochs, 1)
        cfg.check_int("latent_classes", self.latent_classes, 2)
        cfg.check_int("seeds", self.seeds, 2)  # an interval needs two seeds
        cfg.check_int("latent_seeds", self.latent_seeds, 2)
        for name in ("moco_temperature", "simclr_temperature"):
            cfg.check_float(name, getattr(self, name), 0.0, strict_minimum=True)
        cfg.check_float("margin", self.margin, 0.0)
        self.set("benches", check_list("benches", self.benches, _check_bench))
        if len(set(self.benches)) != len(self.benches):
            raise ValueError(f"benches={[list(b) for b in self.benches]} lists a bench twice")
        for name in ("treatments", "image_treatments"):
            self.set(name, _check_treatments(name, getattr(self, name)))
        for kind in DATA_KINDS:
            ks = [k for m, d, k in self.benches if m == "simclr" and d == kind]
            for k in ks:
                if (max(ks) + 1) % (k + 1):
                    raise ValueError(
                        f"benches: SimCLR on {kind} data at K = {k}: K + 1 must divide the "
                        f"batch {max(ks) + 1} (the largest K + 1 of its SimCLR benches; a smaller "
                        "K is a negative group of K + 1 instances of that batch)"
                    )
        self.runs()  # TrainConfig checks the rest (a band with no negative left, ...)

    # -- the recipes of chapters 2 and 3 ---------------------------------------------------

    def _moco(self) -> difficulty.Params:
        return difficulty.Params.profiles[self.profile]

    def _simclr(self) -> kscan.Params:
        return kscan.Params.profiles[self.profile].replace(latent_classes=self.latent_classes)

    def treatments_of(self, kind: str) -> tuple[str, ...]:
        return self.image_treatments if kind == "image" else self.treatments

    def seeds_of(self, kind: str) -> int:
        return self.seeds if kind == "image" else self.latent_seeds

    def num_classes(self, kind: str) -> int:
        """C of a bench's data (known without loading it)."""
        if kind == "latent":
            return self.latent_classes
        return 100 if self.dataset == "cifar100" else 10

    def base_config(self, bench: tuple[str, str, int]) -> TrainConfig:
        """The bench's config under all negatives, seed 0."""
        method, kind, k = bench
        run = {"device": self.device, "precision": self.precision}
        if method == "moco":
            base = (
                self._moco()
                .base_config()
                .replace(temperature=self.moco_temperature, queue_size=k, **run)
            )
            if kind == "latent":  # chapter 3's latent recipe: an MLP, positives from the class
                latent = self._simclr().latent_base_config()
                base = base.replace(
                    arch=latent.arch,
                    width=latent.width,
                    feature_grid=latent.feature_grid,
                    positives=latent.positives,
                    strength=latent.strength,
                )
            return base.replace(epochs=self.epochs if kind == "image" else self.latent_epochs)
        s = self._simclr()
        batch = 1 + max(kk for m, d, kk in self.benches if m == "simclr" and d == kind)
        base = s.base_config() if kind == "image" else s.latent_base_config()
        return base.replace(
            batch_size=batch,
            lr=s.lr_at(batch),
            negative_groups=batch // (k + 1),
            temperature=self.simclr_temperature,
            epochs=self.epochs if kind == "image" else self.latent_epochs,
            **run,
        )

    def runs(self) -> list[dict[str, Any]]:
        """Every run of the chapter: ``{bench, kind, treatment, seed, config}``; within a bench
        and seed every treatment shares the initialisation, data order and augmentations.

        A treatment gets ``seeds`` (``latent_seeds``) seeds, and every further seed whose run
        chapter 2 or 3 trains (:meth:`other_chapters_plan`): a claim judged on another
        chapter's runs is judged on all of them, so it gets the same verdict in both."""
        others = self.other_chapters_plan()
        out = []
        for bench in self.benches:
            kind = bench[1]
            base, c = self.base_config(bench), self.num_classes(kind)
            for name in self.treatments_of(kind):
                t = parse_treatment("treatment", name)
                seed = 0
                while True:
                    config = t.apply(base, c).replace(seed=seed)
                    if seed >= self.seeds_of(kind) and config not in others:
                        break
                    out.append(
                        {"bench": bench, "kind": kind, "treatment": t.name, "seed": seed,
                         "config": config}
                    )  # fmt: skip
                    seed += 1
        return out

    def other_chapters_plan(self) -> set[TrainConfig]:
        """The runs that chapters 2 and 3 of this profile train (their default parameters)."""
        plan = set(difficulty.Params.profiles[self.profile].plan())
        return plan | set(kscan.Params.profiles[self.profile].plan())

    def load_latent_data(self) -> Dataset:
        return self._simclr().load_latent_data()


# The book profile's design, from measured costs on the 2-core machine (the closing note of the
# chapter's issue): a MoCo v2 run of chapter 2's recipe costs about 115 s with its probes, a
# latent-class run about 6 s at 3 epochs. Chapter 2 trained the bands; the oracle and debiasing
# at 1/C are the image bench's new runs (6). A first design with the oracle, a second prior and a
# second weight on the latent bench at 5 epochs took 17 minutes, with the oracle at 3 epochs 15
# (at C = 100 it removes 1% of the negatives); the smoke and full profiles keep all of them.
# Seeds by the power rule (negatives.verdicts.seeds_to_decide) on the speedrun's encoder: at 3
# seeds the image bench's "no same-class" and debiasing needed 7 and 4, the latent bench's hard
# weights at K = 511 9 (the build of 2026-12-04); so 8 image seeds, chapter 2's for its bands,
# and 9 latent ones (a latent run costs seconds).
BOOK_TREATMENTS: tuple[str, ...] = ("all", "debiased tau+=1/C", "hard beta=1")
BOOK_IMAGE_TREATMENTS: tuple[str, ...] = (
    "all",
    "hardest 5%",
    "all but hardest 0.1%",
    "no same-class",
    "debiased tau+=1/C",
)
# Every treatment of the issue: both bands, the oracle, two priors, two weights.
ALL_TREATMENTS: tuple[str, ...] = (
    *BOOK_IMAGE_TREATMENTS,
    "debiased tau+=2/C",
    "hard beta=0.5",
    "hard beta=1",
)

BOOK = Params(
    profile="book",
    dataset=cfg.BOOK_ENCODER["dataset"],  # the recipes are chapters 2 and 3's
    data_root=None,
    train_size=None,
    test_size=None,
    probe_train_size=None,
    epochs=cfg.BOOK_ENCODER["epochs"],
    latent_classes=100,
    latent_epochs=3,  # chapter 3 trains 10; 3 keeps the bench within its budget
    # K = 31 and 511 on C = 100: a collision among the negatives is likely (27%) or certain
    benches=(("moco", "image", 4096), ("simclr", "latent", 31), ("simclr", "latent", 511)),
    treatments=BOOK_TREATMENTS,
    image_treatments=BOOK_IMAGE_TREATMENTS,
    seeds=8,
    latent_seeds=9,
    moco_temperature=0.2,  # chapter 2's MoCo v2 temperature
    simclr_temperature=0.5,  # chapter 3's (Nozawa & Sato's)
    margin=difficulty.PAPER_MARGIN,
    device="auto",
    precision="auto",
    results_dir="results",
    executor="local",
    workers=None,
    wait=True,
    executor_options=None,
)
Params.profiles = {
    "smoke": BOOK.replace(
        profile="smoke",
        dataset=cfg.SMOKE_ENCODER["dataset"],
        epochs=cfg.SMOKE_ENCODER["epochs"],
        latent_classes=20,
        latent_epochs=3,
        benches=(
            ("moco", "image", 512),
            ("simclr", "image", 63),
            ("simclr", "latent", 15),
            ("simclr", "latent", 63),
        ),  # fmt: skip
        treatments=ALL_TREATMENTS,
        image_treatments=ALL_TREATMENTS,
        seeds=2,
        latent_seeds=2,
    ),
    "book": BOOK,
    # The papers' scale: ResNet-18 on CIFAR-10 (-p dataset cifar100 for C = 100), both methods at
    # two K each, every treatment on every bench.
    "full": BOOK.replace(
        profile="full",
        dataset=cfg.FULL_ENCODER["dataset"],
        epochs=cfg.FULL_ENCODER["epochs"],
        latent_epochs=50,
        benches=(
            ("moco", "image", 4096),
            ("moco", "image", 16384),
            ("simclr", "image", 127),
            ("simclr", "image", 511),
            ("simclr", "latent", 31),
            ("simclr", "latent", 511),
        ),
        treatments=ALL_TREATMENTS,
        image_treatments=ALL_TREATMENTS,
    ),
}


def plan(P: Params) -> list[tuple[TrainConfig, Dataset]]:
    """Every training run of the chapter with the data it trains on (:mod:`negatives.sweep`)."""
    kinds = {r["kind"] for r in P.runs()}
    data = {"image": P.load_data() if "image" in kinds else None}
    data["latent"] = P.load_latent_data() if "latent" in kinds else None
    seen: dict[TrainConfig, Dataset] = {}
    for r in P.runs():
        seen.setdefault(r["config"], data[r["kind"]])  # type: ignore[arg-type]
    return list(seen.items())


# -- training, probes, summaries -------------------------------------------------------------


def run_bench(
    P: Params,
    store: RunStore,
    data: dict[str, Dataset],
    probe_data: dict[str, Dataset],
    workers: Workers | None = None,
) -> tuple[list[Run], pd.DataFrame]:
    """Train (or reuse) every run of :meth:`Params.runs` and probe it (cached with the run).

    One row per run: ``bench`` (its label), ``method, kind, K, treatment, seed, run_id,
    train_seconds``, the probes' accuracies (%) and per-image results, and from the last epoch
    ``loss``, ``negatives_used``, ``same_class_kept`` (share of kept negatives of the anchor's
    class) and ``same_class_weight`` (share of the softmax's negative weight on them);
    ``shared``: whether chapter 2 or 3 trains the same run.
    """
    shared = shared_runs(P)
    runs_: list[Run] = []
    tables = []
    for kind in DATA_KINDS:  # one progress bar per data set (sweep trains on one)
        mine = [r for r in P.runs() if r["kind"] == kind]
        if not mine:
            continue
        labelled = [
            ({"bench": bench_label(r["bench"], _data_name(data[kind])), "method": r["bench"][0],
              "kind": kind, "K": r["bench"][2], "num_classes": data[kind].num_classes,
              "treatment": r["treatment"], "shared": r["config"] in shared}, r["config"])
            for r in mine
        ]  # fmt: skip
        got, table = train_and_probe(
            labelled, data[kind], store, probe_data=probe_data[kind], desc=f"{kind} bench",
            workers=workers,
        )  # fmt: skip
        runs_ += got
        tables.append(table)
    return runs_, pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def _data_name(data: Dataset) -> str:
    return f"{data.name} (C={data.num_classes})"


def summarize(per_run: pd.DataFrame, metric: str = "linear_accuracy") -> pd.DataFrame:
    """Per ``(bench, treatment)``: the mean and 95% interval of ``metric`` over seeds, the
    difference to ``"all"`` paired by seed with its interval over seeds (``diff_*``) and over
    the test images (``diff_test_low/high``, :func:`negatives.stats.paired_bootstrap`), the
    binomial standard error ``se`` of one accuracy, and the seed means of ``negatives_used``,
    ``same_class_kept`` and ``same_class_weight`` (as fractions)."""
    column = f"{metric.removesuffix('_accuracy')}_correct"
    rows = []
    for (bench, name), g in per_run.groupby(["bench", "treatment"], sort=False):
        ref = per_run[(per_run["bench"] == bench) & (per_run["treatment"] == REFERENCE)]
        ref = ref.set_index("seed")
        mine = g.set_index("seed")
        seeds = [s for s in mine.index if s in ref.index]
        mean, low, high = stats.mean_interval(g[metric].tolist())
        diffs = [float(mine.loc[s, metric] - ref.loc[s, metric]) for s in seeds]
        dmean, dlow, dhigh = stats.mean_interval(diffs)
        _, tlow, thigh = stats.paired_bootstrap(
            probes.correct_matrix(mine.loc[seeds], column),
            probes.correct_matrix(ref.loc[seeds], column),
        )
        first = g.iloc[0]
        rows.append(
            {
                "bench": bench,
                "label": parse_treatment("treatment", name).label,
                "method": first["method"],
                "kind": first["kind"],
                "K": int(first["K"]),
                "num_classes": int(first["num_classes"]),
                "treatment": name,
                "n": len(g),
                "mean": mean,
                "low": low,
                "high": high,
                "se": stats.binomial_se(mean, int(first["num_test"])),
                "diff_mean": dmean,
                "diff_low": dlow,
                "diff_high": dhigh,
                "diff_test_low": tlow,
                "diff_test_high": thigh,
                **{c: float(g[c].mean()) for c in
                   ("negatives_used", "same_class_kept", "same_class_weight")},
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def collisions(P: Params) -> pd.DataFrame:
    """Per bench: τ_K, the chance that one of K negatives shares the anchor's class (uniform
    classes, :func:`negatives.bounds.collision_probability`), and the expected same-class
    share of the negatives, 1/C."""
    rows = []
    for method, kind, k in P.benches:
        c = P.num_classes(kind)
        rows.append(
            {"method": method, "kind": kind, "K": k, "num_classes": c,
             "tau_K": collision_probability(k, c), "base_rate": 1 / c}
        )  # fmt: skip
    return pd.DataFrame(rows)


# -- verdicts --------------------------------------------------------------------------------

DELTA = "Δ linear-probe accuracy vs all negatives, paired by seed"
CHUANG = "Chuang et al. (2020)"
ROBINSON = "Robinson et al. (2021)"


def paper_claims(margin: float) -> dict[str, vd.Claim]:
    """The claims this chapter tests, by treatment family (statements in our words)."""
    return {
        "debiased": vd.Claim(
            "debiasing helps",
            CHUANG,
            "correcting the negative term for same-class negatives improves on the standard loss",
            DELTA,
            vd.above(0.0),
            " pts",
        ),
        "oracle": vd.Claim(
            "removing same-class negatives helps",
            CHUANG,
            "contrasting only with negatives of other classes (true labels) improves on the "
            "standard loss",
            DELTA,
            vd.above(0.0),
            " pts",
        ),
        "hard": vd.Claim(
            "hard-negative weights help",
            ROBINSON,
            "weighting negatives towards the harder ones (with debiasing) improves on the "
            "standard loss",
            DELTA,
            vd.above(0.0),
            " pts",
        ),
        "hardest": vd.Claim(
            "hardest 5% are sufficient",
            difficulty.PAPER,
            f"training on the hardest 5% alone comes within {margin:g} points of all negatives",
            DELTA,
            vd.above(-margin),
            " pts",
        ),
        "all but": vd.Claim(
            "hardest 0.1% are unnecessary",
            difficulty.PAPER,
            "removing the hardest 0.1% does not hurt",
            DELTA,
            vd.above(-margin),
            " pts",
        ),
    }


def _family(name: str) -> str | None:
    t = parse_treatment("treatment", name)
    if t.kind == "band":
        if t.band == (0.0, 0.05):
            return "hardest"
        return "all but" if t.band == (0.001, 1.0) else None
    return {"oracle": "oracle", "debiased": "debiased", "hard": "hard"}.get(t.kind)


def claims(T: dict[str, Any], margin: float = difficulty.PAPER_MARGIN) -> pd.DataFrame:
    """One verdict row per (bench, treatment) that a paper makes a claim about (:func:`paper_
    claims`; other bands are shown, not judged), decided by the book's one rule."""
    C = paper_claims(margin)
    rows = []
    for r in T["summary"].itertuples():
        family = _family(r.treatment)
        if family is None:
            continue
        row = vd.judge(
            C[family],
            r.diff_mean,
            r.diff_low,
            r.diff_high,
            setting=f"{r.bench}: {parse_treatment('treatment', r.treatment).label}",
            seeds=int(r.n),
            test_set=(float(r.diff_test_low), float(r.diff_test_high)),
        )
        rows.append({**row, "bench": r.bench, "treatment": r.treatment})
    return vd.verdict_table(rows)


# -- the synthesis: every chapter's verdicts --------------------------------------------------


def book_verdicts(root: str | Path = ".", own: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every claim of the book with its verdict: each executed chapter's glued verdicts
    (:func:`negatives.glue.verdict_summary`, in reading order; chapters not executed in this
    build are absent), this chapter's own from ``own`` (this run's, not an earlier build's)."""
    from negatives.glue import verdict_summary

    # outside a book (no table of contents, as in an interactive session): this chapter alone
    table = verdict_summary(root) if (Path(root) / "_toc.yml").is_file() else pd.DataFrame()
    if len(table):
        table = table[~table["chapter"].str.contains(f'href="{CHAPTER}.html"', regex=False)]
    if own is not None and len(own):
        mine = own[list(vd.RECORD_COLUMNS)].assign(chapter="this chapter")
        table = pd.concat([table, mine], ignore_index=True)
    return table.reset_index(drop=True)


def synthesis(summary: pd.DataFrame) -> pd.DataFrame:
    """Per bench: the treatments whose paired difference to all negatives is clearly positive,
    clearly negative, or not told apart from zero by the 95% interval over seeds."""
    rows = []
    for bench, g in summary[summary["treatment"] != REFERENCE].groupby("bench", sort=False):
        label = {t: parse_treatment("t", t).label for t in g["treatment"]}
        better = [label[r.treatment] for r in g.itertuples() if r.diff_low > 0]
        worse = [label[r.treatment] for r in g.itertuples() if r.diff_high < 0]
        same = [label[r.treatment] for r in g.itertuples() if r.diff_low <= 0 <= r.diff_high]
        best = g.loc[g["diff_mean"].idxmax()]
        rows.append(
            {"bench": bench, "better": better, "worse": worse, "unclear": same,
             "best": label[best["treatment"]], "best_diff": float(best["diff_mean"])}
        )  # fmt: skip
    return pd.DataFrame(rows)


# -- the whole chapter -----------------------------------------------------------------------


def run(P: Params, store: RunStore | None = None, *, root: str | Path = ".") -> dict[str, Any]:
    """Every computation of the chapter, in the notebook's order, as a dict of tables:
    ``per_run`` (:func:`run_bench`), ``baselines`` (raw pixels and a random encoder of the first
    image bench, or None), ``summary``, ``collisions``, ``verdicts``, ``synthesis`` and
    ``book_verdicts`` (read from the executed chapters under ``root``)."""
    store = store or RunStore(P.results_dir)
    workers = execute(P, CHAPTER, plan, store)
    kinds = {kind for _, kind, _ in P.benches}
    data: dict[str, Dataset] = {}
    probe_data: dict[str, Dataset] = {}
    if "image" in kinds:
        data["image"] = P.load_data()
        same = P.probe_train_size == P.train_size  # the probes' data are the training data
        probe_data["image"] = data["image"] if same else P.load_probe_data()
    if "latent" in kinds:
        data["latent"] = probe_data["latent"] = P.load_latent_data()
    runs_, per_run = run_bench(P, store, data, probe_data, workers)
    # what the image benches' encoders are measured against (chapter 2's, from the cache)
    image = [b for b in P.benches if b[1] == "image"]
    baselines = (
        probes.baselines(P.base_config(image[0]), probe_data["image"], store) if image else None
    )
    T: dict[str, Any] = {"data": data, "runs": runs_, "per_run": per_run, "baselines": baselines}
    T["summary"] = summarize(per_run)
    T["collisions"] = collisions(P)
    T["verdicts"] = claims(T, P.margin)
    T["synthesis"] = synthesis(T["summary"])
    T["book_verdicts"] = book_verdicts(root, T["verdicts"])
    return T


def shared_runs(P: Params) -> set[TrainConfig]:
    """The chapter's runs that chapter 2 or 3 of the same profile also trains (from the cache)."""
    return {r["config"] for r in P.runs()} & P.other_chapters_plan()


def _list(items: list[str], empty: str = "none") -> str:
    return ", ".join(items) if items else empty


def numbers(P: Params, T: dict[str, Any]) -> dict[str, Any]:
    """Every number and generated sentence the page quotes, by its glue name."""
    out: dict[str, Any] = {}
    put = out.__setitem__
    per_run, summary, verdicts = T["per_run"], T["summary"], T["verdicts"]
    coll, syn, book = T["collisions"], T["synthesis"], T["book_verdicts"]
    unique = per_run.drop_duplicates("run_id")
    new = unique[~unique["shared"]]
    put("treatments_num_runs", len(unique))
    put("treatments_new_runs", len(new))
    put("treatments_shared_runs", len(unique) - len(new))
    put("treatments_new_minutes", float(new["train_seconds"].sum() / 60))
    put("treatments_train_minutes", float(unique["train_seconds"].sum() / 60))
    put("treatments_seeds", P.seeds)
    put("treatments_latent_seeds", P.latent_seeds)
    # treatments with more seeds than P.seeds: those whose further runs chapter 2 or 3 trains
    counts = per_run.groupby(["bench", "treatment"], sort=False)["seed"].nunique()
    extra = [
        f"{parse_treatment('t', t).label} on {b.split(',')[0]}: {n}"
        for (b, t), n in counts.items()
        if n > P.seeds_of(per_run.loc[per_run["bench"] == b, "kind"].iloc[0])
    ]
    put(
        "treatments_shared_seeds",
        "every treatment has that many"
        if not extra
        else "a treatment whose further seeds chapter 2 or 3 trains takes all of them, so a "
        "claim both chapters judge rests on the same runs in both (" + "; ".join(extra) + ")",
    )
    put("treatments_margin", P.margin)
    put("treatments_latent_classes", P.latent_classes)
    put("treatments_benches", "; ".join(dict.fromkeys(per_run["bench"])))
    put("treatments_moco_t", P.moco_temperature)
    put("treatments_latent_epochs", P.latent_epochs)
    put("treatments_kscan_latent_epochs", P._simclr().latent_epochs)
    put("treatments_latent_base_rate", 100 / P.latent_classes)
    for kind in DATA_KINDS:
        mine = new[new["kind"] == kind]["train_seconds"]
        put(f"treatments_{kind}_run_seconds", float(mine.mean()) if len(mine) else math.nan)
        names = [parse_treatment("t", t).label for t in P.treatments_of(kind)]
        put(f"treatments_{kind}_list", _list(names))
    image = P.base_config(next((b for b in P.benches if b[1] == "image"), ("moco", "image", 1)))
    put(
        "treatments_scale",
        f"{P.epochs} epoch{'s' * (P.epochs != 1)} of a {image.arch} of width {image.width} on "
        f"{P.dataset}; an MLP for {P.latent_epochs} epoch{'s' * (P.latent_epochs != 1)} on "
        f"{P.latent_classes} latent classes",
    )
    put("treatments_simclr_t", P.simclr_temperature)
    # what the first image bench's encoders learn: all negatives against pixels and a random one
    first = per_run[(per_run["kind"] == "image") & (per_run["treatment"] == REFERENCE)]
    first = first[first["bench"] == first["bench"].iloc[0]] if len(first) else first
    top = float(first["linear_accuracy"].mean()) if len(first) else math.nan
    pixels, random = (
        (float(m["linear_accuracy"]) for m in T["baselines"].values())
        if T.get("baselines")
        else (math.nan, math.nan)
    )
    put("treatments_image_all_accuracy", top)
    put("treatments_pixels", pixels)
    put("treatments_random", random)
    put("treatments_gain_pixels", top - pixels)
    put("treatments_gain_random", top - random)
    for kind in DATA_KINDS:
        g = coll[coll["kind"] == kind]
        put(
            f"treatments_{kind}_collisions",
            _list([f"τ_K = {100 * r.tau_K:.1f}% at K = {r.K} (C = {r.num_classes})"
                   for r in g.itertuples()]),
        )  # fmt: skip
    # the mechanism: the weight share against the count share, per bench
    ref = summary[summary["treatment"] == REFERENCE]
    put(
        "treatments_reference_weight",
        _list([f"{100 * r.same_class_weight:.1f}% on {r.bench} (count share "
               f"{100 * r.same_class_kept:.1f}%, 1/C = {100 / r.num_classes:.1f}%)"
               for r in ref.itertuples()]),
    )  # fmt: skip
    hard5 = summary[summary["treatment"] == "hardest 5%"]
    put(
        "treatments_hardest_weight",
        _list([f"{100 * r.same_class_weight:.1f}% on {r.bench}" for r in hard5.itertuples()]),
    )
    corr = mechanism(summary)
    put(
        "treatments_mechanism",
        _list(
            [
                f"{r.bench}: r = {r.r:+.2f} over {r.n} treatments"
                if math.isfinite(r.r)
                else f"{r.bench}: not computed ({r.n} treatments)"
                for r in corr.itertuples()
            ]
        ),
    )
    # the verdicts and the synthesis
    out.update(vd.count_numbers("treatments", verdicts))
    for family, claim in paper_claims(P.margin).items():
        rows = verdicts[verdicts["claim"] == claim.name]
        put(
            f"treatments_verdicts_{family.replace(' ', '_')}",
            _list([f"{r.setting}: {r.ours} ({r.verdict})" for r in rows.itertuples()],
                  "not tested in this run"),
        )  # fmt: skip
    put(
        "treatments_practice",
        " ".join(
            f"On {r.bench}: better than all negatives: {_list(r.better)}; worse: "
            f"{_list(r.worse)}; not told apart at this number of seeds: "
            f"{_list(r.unclear)}."
            for r in syn.itertuples()
        ),
    )
    n_book = vd.counts(book) if len(book) else dict.fromkeys(vd.VERDICTS, 0)
    put("treatments_book_claims", len(book))
    put("treatments_book_rep", n_book[vd.REPRODUCED])
    put("treatments_book_notrep", n_book[vd.NOT_REPRODUCED])
    put("treatments_book_inc", n_book[vd.INCONCLUSIVE])
    chapters = [c for c in dict.fromkeys(book["chapter"])] if len(book) else []
    put("treatments_book_chapters", len(chapters))
    for key, (claim, where) in QUOTED.items():
        put(f"treatments_quote_{key}", _quote(book, claim, where))
    out["treatments_verdicts"] = vd.records(verdicts)
    out["treatments_rerun"] = P.papermill_command(CHAPTER)
    out["treatments_figure_runs"] = json.dumps(figure_runs(P, T))
    return out


# The other chapters' claims that the synthesis quotes, by glue key: (claim, its chapter).
QUOTED: dict[str, tuple[str, str]] = {
    "hard5": ("hardest 5% are sufficient", "chapter 2"),
    "no01": ("hardest 0.1% are unnecessary", "chapter 2"),
    "helps01": ("removing the hardest 0.1% helps", "chapter 2"),
    "sameclass": ("hard negatives are more often same-class", "chapter 2"),
    "curl": ("the CURL bound explodes", "chapter 3"),
    "morek": ("more negatives improve accuracy", "chapter 3"),
    "optimum": ("the optimum does not degrade with K (uniform classes)", "chapter 4"),
    "trained": ("accuracy does not degrade with K", "chapter 4"),
}


def _quote(book: pd.DataFrame, claim: str, where: str) -> str:
    """A claim's verdicts from the book's table, as a sentence part (or why there is none)."""
    rows = (
        book[(book["claim"] == claim) & (book["chapter"] != "this chapter")] if len(book) else book
    )
    if not len(rows):
        return f"not available ({where} was not executed in this build)"
    if len(rows) > 2:  # a scan's many settings: their verdicts counted
        n = vd.counts(rows)
        return (
            f"over {len(rows)} settings, {n[vd.REPRODUCED]} reproduced, {n[vd.NOT_REPRODUCED]} "
            f"not reproduced and {n[vd.INCONCLUSIVE]} inconclusive"
        )
    return "; ".join(f"{r.ours} at {r.setting}: {r.verdict}" for r in rows.itertuples())


def mechanism(summary: pd.DataFrame) -> pd.DataFrame:
    """Per bench: Pearson's r between the same-class share of the negative weight and the
    paired accuracy difference, over its treatments (the reference at 0); descriptive, with
    as few points as treatments, and NaN with fewer than 4 (three points say almost nothing)."""
    rows = []
    for bench, g in summary.groupby("bench", sort=False):
        x, y = g["same_class_weight"].to_numpy(), g["diff_mean"].to_numpy()
        ok = np.isfinite(x) & np.isfinite(y)
        r = (
            float(np.corrcoef(x[ok], y[ok])[0, 1])
            if ok.sum() >= 4 and x[ok].std() > 0
            else math.nan
        )
        rows.append({"bench": bench, "r": r, "n": int(ok.sum())})
    return pd.DataFrame(rows)


def figure_runs(P: Params, T: dict[str, Any]) -> dict[str, list[str]]:
    """The run ids behind each figure of the page, by the figure's name."""
    ids = sorted(set(T["per_run"]["run_id"]))
    return {"fig-treatments-accuracy": ids, "fig-treatments-mechanism": ids}
