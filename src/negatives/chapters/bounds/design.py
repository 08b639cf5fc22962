"""Chapter 3's design: the papermill parameters, the profiles and the runs of the chapter."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from negatives import bounds
from negatives import config as cfg
from negatives.chapters import kscan
from negatives.chapters.params import ChapterParams, check_optional_int
from negatives.data import Dataset, load_dataset
from negatives.runs import RunStore
from negatives.trainconfig import TrainConfig

MAX_PASSES = 1000


# bump when the evaluation (negatives.bounds.bound_inputs, terms_from_inputs) changes, so that
# cached evaluations are redone
EVAL_VERSION = 3


DATA_KINDS = ("image", "latent")


# Nozawa & Sato (2021), CIFAR-10 (ResNet-18, 500 epochs, mean of 3 seeds), as printed in their
# tables: K+1 -> mean-classifier accuracy (%), linear accuracy (%), CURL bound, proposed bound.
# Quotations, not our results.
PAPER_CIFAR10: tuple[tuple[int, float, float, float, float], ...] = (
    (32, 72.75, 77.13, 0.23, 0.39),
    (64, 75.30, 79.70, 0.76, 0.70),
    (128, 77.22, 81.33, 1.41, 1.02),
    (256, 78.60, 82.85, 2.08, 1.35),
    (512, 80.12, 84.13, 2.75, 1.69),
)


# CIFAR-100: only the end points of the mean-classifier accuracy are quoted in our notes
# (K+1 = 128 and 1024); the other entries are left empty rather than guessed.
PAPER_CIFAR100: tuple[tuple[int, float], ...] = ((128, 32.74), (1024, 37.50))


# Verdict rules (see :func:`claims`). A trend is the least-squares slope of a metric against
# log2(K+1), fitted per seed; its 95% interval is the Student-t interval over seeds
# (:func:`negatives.stats.trend`). A rise of less than this many points per doubling of K+1
# counts as none (ours; for scale, the paper's CIFAR-10 mean-classifier accuracy rises by about
# 1.8 points per doubling).
MIN_ACCURACY_SLOPE = 0.25


# Columns of one row of :func:`scan_bounds` that the chapter's figures and tables use.
TERMS = (
    "info_loss",
    "sup_loss",
    "sub_loss",
    "upsilon",
    "upsilon_exact",
    "tau",
    "tau_exact",
    "collision_term",
    "d_f",
    "curl_bound",
    "proposed_bound",
    "curl_sup_upper_bound",
    "proposed_sup_upper_bound",
    "proposed_sup_upper_bound_exact_upsilon",
    "proposed_sup_upper_bound_naive_upsilon",
    "ash_sup_upper_bound",
    "bao_sup_lower_bound",
    "bao_sup_upper_bound",
    "centroid_accuracy",
    "linear_accuracy",
)


def check_modes(name: str, value: Any) -> tuple[str, ...]:
    """A list of the K-scan's modes, each once; empty allowed (no EqCo arm)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ValueError(f"{name}={value!r} must be a list of {list(kscan.MODES)} (or [])")
    for mode in value:
        cfg.check_choice(name, mode, kscan.MODES)
    if len(set(value)) != len(value):
        raise ValueError(f"{name}={list(value)} names a mode twice")
    return tuple(value)


@dataclass(frozen=True)
class Params(ChapterParams):
    """Chapter 3 parameters: the K-scan's (``scan``, flat in the notebook) and the evaluation's.

    * ``scan``: :class:`negatives.chapters.kscan.Params` (data set, K values, modes, seeds,
      epochs, temperature, device, latent-class settings, ``results_dir``, ...), embedded in
      chapter 4 too, so that both train the same encoders.
    * ``num_passes``: passes over the test set in shuffled batches of K+1 (the authors' 10).
    * ``num_augmentations``: augmented views averaged into the mean classifier μ_c and into
      z̄(x) of d(f) (image data only; latent-class vectors are not augmented).
    * ``eval_seed``: seed of the evaluation's augmentations, positives and batches.
    * ``mean_train_size``: training images (stratified) whose augmented features make the mean
      classifier μ_c (None: all); 1,000 per class estimate a class mean well.
    * ``eqco_modes``: the ways of varying K that also get an EqCo arm on each data set that
      varies K so (:meth:`kscan.Params.eqco_configs`: the same runs with the loss rescaled to
      max(K) negatives), to ask whether K's effect survives the rescaling; empty: none.
    """

    profile: str
    scan: kscan.Params
    num_passes: int
    num_augmentations: int
    eval_seed: int
    mean_train_size: int | None
    eqco_modes: tuple[str, ...]

    def __post_init__(self) -> None:
        cfg.check_profile(self.profile)
        cfg.check_int("num_passes", self.num_passes, 1, MAX_PASSES)
        cfg.check_int("num_augmentations", self.num_augmentations, 1, bounds.MAX_AUGMENTATIONS)
        cfg.check_int("eval_seed", self.eval_seed, 0)
        check_optional_int("mean_train_size", self.mean_train_size)
        self.set("eqco_modes", check_modes("eqco_modes", self.eqco_modes))
        scanned = set(self.scan.modes) | set(self.scan.latent_modes)
        for mode in self.eqco_modes:
            if mode not in scanned:
                raise ValueError(
                    f"eqco_modes={list(self.eqco_modes)}: {mode!r} is not a way this scan varies "
                    f"K (modes={list(self.scan.modes)}, latent_modes="
                    f"{list(self.scan.latent_modes)}); an EqCo arm is compared with its mode's runs"
                )
        # A batch of K+1 test samples must fit in the test set (bound_terms needs K+1 <= N).
        for name, ks, n in (
            ("latent_num_negatives", self.scan.latent_num_negatives, self.scan.latent_test_size),
            ("num_negatives", self.scan.num_negatives, self.scan.test_size),
        ):
            if n is not None and max(ks) + 1 > n:
                size = "latent_test_size" if name.startswith("latent") else "test_size"
                raise ValueError(
                    f"{name}={list(ks)}: K+1 = {max(ks) + 1} exceeds {size}={n}; the bound "
                    "terms are evaluated on test batches of K+1 samples"
                )

    def load_eval_data(self) -> Dataset:
        """The images of the image scan's bound terms: ``mean_train_size`` training images
        for the class means and the K-scan's test images."""
        return load_dataset(
            self.scan.dataset,
            self.scan.data_root,
            train_size=self.mean_train_size,
            test_size=self.scan.test_size,
        )

    def store(self) -> RunStore:
        """The run cache under ``results_dir`` (shared with the other chapters)."""
        return RunStore(self.scan.results_dir)

    def evaluation_key(self, config: TrainConfig, data: Dataset) -> dict[str, Any]:
        """What identifies one cached bound evaluation of a run (besides the run itself)."""
        return {
            "data": data.fingerprint,
            "num_negatives": config.negatives_per_query,
            "temperature": config.temperature,
            "num_passes": self.num_passes,
            "num_augmentations": self.num_augmentations,
            "eval_seed": self.eval_seed,
            "mean_train_size": self.mean_train_size,
            "version": EVAL_VERSION,
        }


BOOK = Params(
    profile="book",
    scan=kscan.BOOK,
    num_passes=10,  # the authors' 10 passes and 5 x 2 augmentations (conf/experiment/evaluation)
    num_augmentations=4,
    eval_seed=0,
    mean_train_size=10000,
    eqco_modes=("mask",),  # the batch mode's arm: 8 more image runs, about 10 minutes here
)


Params.profiles = {
    "smoke": BOOK.replace(
        profile="smoke",
        scan=kscan.Params.profiles["smoke"],
        num_passes=2,
        num_augmentations=2,
        mean_train_size=None,
    ),
    "book": BOOK,
    "full": BOOK.replace(
        profile="full",
        scan=kscan.Params.profiles["full"],
        num_augmentations=10,
        mean_train_size=None,
    ),
}


def plan(P: Params) -> list[tuple[TrainConfig, Dataset]]:
    """Every training run of the chapter with its data: the K-scan's (:func:`kscan.plan`) and,
    its EqCo arms (``eqco_modes``) on both data sets."""
    planned = kscan.plan(P.scan)
    if P.eqco_modes:
        image, latent = P.scan.load_data(), P.scan.load_latent_data()
        planned += [(c, image) for _, c in P.scan.eqco_configs(P.eqco_modes)]
        planned += [(c, latent) for _, c in P.scan.latent_eqco_configs(P.eqco_modes)]
    return planned


# the scan's K against its data, before anything trains
check = kscan.check_embedded
