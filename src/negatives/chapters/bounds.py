"""Chapter 3, bounds against the number of negatives (Nozawa & Sato 2021, section 5).

The chapter's parameters (:class:`BoundsParams`: the shared K-scan of
:mod:`negatives.chapters.kscan` plus this chapter's evaluation settings) and the functions that
turn trained encoders into the chapter's tables:

* :func:`scan_bounds`: train (or reuse from the run cache) every encoder of the K-scan and
  evaluate the bound terms of :func:`negatives.bounds.bound_terms` on each, as the authors'
  ``bound.py`` does: test set, shuffled batches of K+1, several passes, mean classifier from
  training features averaged over augmentations. One row per run.
* summaries over seeds (:func:`summarize_over_seeds`), the comparison with the paper's tables
  (:func:`paper_comparison`), exact against float64 υ (:func:`upsilon_table`), and
  :func:`verdicts`, one row per claim decided by the rules documented there.

The K-scan's configs are built by :class:`~negatives.chapters.kscan.KScanParams` unchanged, so
chapter 4 reuses the same trained encoders through the run cache.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from negatives import bounds, probes, stats
from negatives import config as cfg
from negatives import verdicts as vd
from negatives.chapters import kscan
from negatives.data import Dataset, load_dataset, sample_same_class
from negatives.runs import RunStore
from negatives.train import Run, TrainConfig

# This chapter's own parameters, per profile (the K-scan's are kscan.PROFILE_DEFAULTS).
# The authors use 10 passes and 5 x 2 augmentations (code/conf/experiment/evaluation/cifar).
# ``mean_train_size``: training images (stratified) whose augmented features make the mean
# classifier mu_c of the bound terms (None: all); 1,000 per class estimate a class mean well.
PROFILE_DEFAULTS: dict[str, dict[str, Any]] = {
    "smoke": dict(num_passes=2, num_augmentations=2, eval_seed=0, mean_train_size=None),
    "book": dict(num_passes=10, num_augmentations=4, eval_seed=0, mean_train_size=10000),
    "full": dict(num_passes=10, num_augmentations=10, eval_seed=0, mean_train_size=None),
}
MAX_PASSES = 1000
MAX_AUGMENTATIONS = 100
EVAL_VERSION = 3  # bump when the evaluation below changes, so cached evaluations are redone

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

# Verdict rules (see :func:`verdicts`). A trend is the least-squares slope of a metric against
# log2(K+1), fitted per seed; its 95% interval is the Student-t interval over seeds. A rise of
# less than this many points per doubling of K+1 counts as none (ours; for scale, the paper's
# CIFAR-10 mean-classifier accuracy rises by about 1.8 points per doubling).
MIN_ACCURACY_SLOPE = 0.25
CONFIDENCE = 0.95

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
    "centroid_accuracy",
    "linear_accuracy",
)


@dataclass(frozen=True)
class BoundsParams:
    """Chapter 3 parameters: the K-scan's (``scan``) and this chapter's evaluation settings.

    * ``scan``: :class:`~negatives.chapters.kscan.KScanParams` (data set, K values, modes,
      seeds, epochs, temperature, device, latent-class settings, ``results_dir``, ...), shared
      with chapter 4 so that both train the same encoders.
    * ``num_passes``: passes over the test set in shuffled batches of K+1 (the authors' 10).
    * ``num_augmentations``: augmented views averaged into the mean classifier μ_c and into
      z̄(x) of d(f) (image data only; latent-class vectors are not augmented).
    * ``eval_seed``: seed of the evaluation's augmentations, positives and batches.
    """

    profile: str
    scan: kscan.KScanParams
    num_passes: int
    num_augmentations: int
    eval_seed: int
    mean_train_size: int | None = None

    @classmethod
    def from_profile(cls, profile: str = "book", **overrides: Any) -> BoundsParams:
        """Profile defaults, then every override that is not None; all validated.

        Overrides naming a K-scan field go to :meth:`KScanParams.from_profile` (which refuses
        unknown names, negative K, unknown modes, ...); the others are this chapter's own.
        """
        profile = cfg.check_profile(profile)
        scan_names = {f.name for f in dataclasses.fields(kscan.KScanParams)} - {"profile"}
        own_names = set(PROFILE_DEFAULTS[profile])
        unknown = sorted(set(overrides) - scan_names - own_names)
        if unknown:
            raise ValueError(
                f"unknown parameter(s) {unknown}; allowed: {sorted(scan_names | own_names)}"
            )
        scan = kscan.KScanParams.from_profile(
            profile, **{k: v for k, v in overrides.items() if k in scan_names}
        )
        own = dict(PROFILE_DEFAULTS[profile])
        own.update({k: v for k, v in overrides.items() if k in own_names and v is not None})
        return cls(
            profile=profile,
            scan=scan,
            num_passes=cfg.check_int("num_passes", own["num_passes"], 1, MAX_PASSES),
            num_augmentations=cfg.check_int(
                "num_augmentations", own["num_augmentations"], 1, MAX_AUGMENTATIONS
            ),
            eval_seed=cfg.check_int("eval_seed", own["eval_seed"], 0),
            mean_train_size=None
            if own["mean_train_size"] is None
            else cfg.check_int("mean_train_size", own["mean_train_size"], 1),
        )

    def __post_init__(self) -> None:
        # A batch of K+1 test samples must fit in the test set (bound_terms needs K+1 <= N).
        largest = max(self.scan.latent_num_negatives)
        if largest + 1 > self.scan.latent_test_size:
            raise ValueError(
                f"latent_num_negatives={list(self.scan.latent_num_negatives)}: K+1 = {largest + 1} "
                f"exceeds latent_test_size={self.scan.latent_test_size}; the bound terms are "
                "evaluated on test batches of K+1 samples"
            )
        test_size = self.scan.test_size
        if test_size is not None and max(self.scan.num_negatives) + 1 > test_size:
            raise ValueError(
                f"num_negatives={list(self.scan.num_negatives)}: K+1 = "
                f"{max(self.scan.num_negatives) + 1} exceeds test_size={test_size}; the bound "
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


def params_table(params: BoundsParams) -> pd.DataFrame:
    """The resolved parameters, K-scan's and the chapter's, as a two-column table."""
    own = [
        (name, str(getattr(params, name)))
        for name in ("num_passes", "num_augmentations", "eval_seed", "mean_train_size")
    ]
    table = kscan.params_table(params.scan)
    return pd.concat([table, pd.DataFrame(own, columns=table.columns)], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Per-run evaluation


def bound_inputs(
    model: torch.nn.Module,
    data: Dataset,
    config: TrainConfig,
    *,
    num_augmentations: int,
    seed: int,
    device: str = "cpu",
) -> dict[str, torch.Tensor]:
    """The feature sets :func:`negatives.bounds.bound_terms` needs, from one trained encoder.

    All features are L2-normalised projections z (the space the InfoNCE loss is computed in).

    * Images (Nozawa & Sato's ``bound.py``): the anchor ``z`` and the positive ``z_positive``
      are two fresh augmented views of each test image; ``z_bar`` averages
      ``num_augmentations`` further views (f̄(x) = E_a f(a(x)) in d(f)); the mean classifier
      μ_c averages the training features over ``num_augmentations`` views, then over class c.
    * Latent-class vectors (positives drawn from the class, Saunshi et al. 2019): no
      augmentation. ``z = f(x)``; ``z_positive = f(x⁺)`` with x⁺ a random training sample of
      the same class (an independent draw from D_c, as the trainer draws positives); μ_c is the mean training feature of class c. The positive depends on x
      only through its class, so f̄(x) = E[f(x⁺) | c] is the class mean: ``z_bar = μ_y`` and
      d(f) = 0 by construction.

    Returns ``z``, ``z_positive``, ``z_bar`` (N_test, D), ``labels`` (N_test,),
    ``class_means`` (C, D) and ``z_classify`` (N_test, D): the features the mean classifier
    scores for its accuracy (images: z̄, as the authors' ``centroid_accuracy``; latent-class
    vectors: z itself, since z̄ = μ_y would classify every sample correctly by construction).
    """
    a = cfg.check_int("num_augmentations", num_augmentations, 1, MAX_AUGMENTATIONS)
    seed = cfg.check_int("seed", seed, 0)
    c = data.num_classes
    aug = dict(strength=config.strength, min_scale=config.min_scale, flip=config.flip)
    latent = config.positives == "latent-class"
    if latent:
        z_train = probes.extract_features(
            model, data.train_images, which="projection", device=device
        )
        z_test = probes.extract_features(model, data.test_images, which="projection", device=device)
        z_train, z_test = F.normalize(z_train, dim=1), F.normalize(z_test, dim=1)
        class_means = bounds.mean_classifier_weights(z_train, data.train_labels, c)  # (C, D)
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
    class_means = bounds.mean_classifier_weights(train_views.mean(dim=1), data.train_labels, c)
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
    inputs: dict[str, torch.Tensor],
    *,
    temperature: float,
    num_negatives: int,
    num_passes: int,
    seed: int,
) -> dict[str, float]:
    """:func:`negatives.bounds.bound_terms` on :func:`bound_inputs`, plus the chapter's extras.

    Extras: ``centroid_accuracy`` (the mean classifier's test accuracy in %, argmax_c
    f·μ_c on ``inputs["z_classify"]``, z̄ when absent, as the authors' ``centroid_accuracy``),
    ``upsilon_uniform`` (υ(K+1) exactly, uniform prior over the C
    classes), ``upsilon_naive`` (the same in float64 with the authors' notebook formula, see
    :func:`negatives.bounds.naive_coverage_probability`), and
    ``proposed_sup_upper_bound_naive_upsilon``: the proposed upper bound on L_sup divided by
    that float64 υ, i.e. what the authors' figure computes where the empirical υ is 0.
    Upper bounds whose denominator (υ or 1 - τ) is 0 in the sample are +inf (the inequality
    says nothing), not nan.
    """
    c = inputs["class_means"].shape[0]
    out = bounds.bound_terms(
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
    out["upsilon_uniform"] = bounds.coverage_probability(k + 1, num_classes=c)
    out["upsilon_naive"] = bounds.naive_coverage_probability(k + 1, c, "notebook")
    # The proposed inequality solved for L_sup: υ L_sup <= 2 (L_Info - d) - sub_term - Col.
    proposed_rhs = 2.0 * (out["info_loss"] - out["d_f"]) - out["sub_term"] - out["collision_term"]
    curl_rhs = (
        out["info_loss"] - out["d_f"] - out["collision_term"]
        - out["sub_loss_no_collision_uncovered"]
    )  # fmt: skip
    out["proposed_sup_upper_bound_naive_upsilon"] = _divide(proposed_rhs, out["upsilon_naive"])
    out["proposed_sup_upper_bound"] = _divide(proposed_rhs, out["upsilon"])
    out["proposed_sup_upper_bound_exact_upsilon"] = _divide(proposed_rhs, out["upsilon_exact"])
    out["curl_sup_upper_bound"] = _divide(curl_rhs, 1.0 - out["tau"])
    return out


def _divide(num: float, den: float) -> float:
    """num / den, with a zero (or negative, from float64 noise) denominator giving ±inf."""
    if den > 0:
        return num / den
    return math.copysign(math.inf, num) if num != 0 else math.nan


def evaluate_run(run: Run, data: Dataset, params: BoundsParams) -> dict[str, float]:
    """The bound terms of one trained run, computed once and cached with ``Run.evaluate``.

    Evaluated at the run's own K (K+1 = the batch size in ``batch`` mode; the fixed batch masked
    to K negatives in ``mask`` mode is evaluated on batches of K+1 all the same, since the
    bound is about K) and at its training temperature.
    """
    config = run.config
    key = params.evaluation_key(config, data)

    def compute() -> dict[str, float]:
        device = cfg.resolve_device(params.scan.device)
        inputs = bound_inputs(
            run.load_model(device),
            data,
            config,
            num_augmentations=params.num_augmentations,
            seed=params.eval_seed,
            device=device,
        )
        return terms_from_inputs(
            inputs,
            temperature=config.temperature,
            num_negatives=config.negatives_per_query,
            num_passes=params.num_passes,
            seed=params.eval_seed,
        )

    out = run.evaluate("bounds", key, compute)
    # JSON has no inf: the cache may hand back None / strings for them; restore floats.
    return {k: _as_float(v) for k, v in out.items()}


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    if isinstance(value, str):
        return float(value)  # "inf", "-inf", "nan"
    return float(value)


def scan_bounds(
    params: BoundsParams,
    kind: str = "image",
    *,
    store: RunStore | None = None,
    data: Dataset | None = None,
    probe_data: Dataset | None = None,
    eval_data: Dataset | None = None,
) -> pd.DataFrame:
    """Train (or reuse) the K-scan of ``kind`` and evaluate the bounds on every run.

    ``kind="image"``: the image data set of the profile (trained on ``data``, probed on
    ``probe_data``, bound terms on ``eval_data``: by default :meth:`KScanParams.load_data`,
    :meth:`KScanParams.load_probe_data`, :meth:`BoundsParams.load_eval_data`); ``"latent"``:
    the latent-class data with ``latent_classes`` classes, all three roles on the same data.
    One row per run: ``data``, ``dataset``, ``num_classes``, ``mode``, ``K``, ``seed``,
    ``batch_size``, ``run_id``, the probes' accuracies of
    :func:`negatives.chapters.kscan.run_scan` and every key of :func:`terms_from_inputs`.
    """
    cfg.check_choice("kind", kind, DATA_KINDS)
    store = store or params.store()
    if kind == "image":
        data = params.scan.load_data() if data is None else data
        probe_data = params.scan.load_probe_data() if probe_data is None else probe_data
        eval_data = params.load_eval_data() if eval_data is None else eval_data
        scan = params.scan.configs()
        ks = params.scan.num_negatives
    else:
        data = params.scan.load_latent_data() if data is None else data
        probe_data = data if probe_data is None else probe_data
        eval_data = data if eval_data is None else eval_data
        scan = params.scan.latent_configs()
        ks = params.scan.latent_num_negatives
    n_test = len(eval_data.test_labels)
    if max(ks) + 1 > n_test:
        name = "num_negatives" if kind == "image" else "latent_num_negatives"
        raise ValueError(
            f"{name}={list(ks)}: K+1 = {max(ks) + 1} exceeds the {n_test} test samples of "
            f"{data.name!r}; the bound terms are evaluated on test batches of K+1 samples"
        )
    runs_, probe_rows = kscan.run_scan(
        scan, data, store, desc=f"K-scan ({kind})", probe_data=probe_data
    )
    rows = []
    for run, (_, probe_row) in zip(runs_, probe_rows.iterrows(), strict=True):
        terms = evaluate_run(run, eval_data, params)
        rows.append({**probe_row.to_dict(), **terms})
    df = pd.DataFrame(rows)
    df.insert(0, "data", kind)
    df.insert(1, "dataset", data.name)
    df.insert(2, "num_classes", data.num_classes)
    return df


# ---------------------------------------------------------------------------------------------
# Summaries


def summarize_over_seeds(
    rows: pd.DataFrame, values: list[str] | tuple[str, ...] = TERMS
) -> pd.DataFrame:
    """Mean and 95% interval over seeds per (data, mode, K), long format, one row per value.

    Columns: data, num_classes, mode, K, K+1, term, n (runs), n_finite, n_inf (runs where the
    value is +inf: an upper bound with υ = 0 or τ = 1 in the sample), mean, low, high (of the
    finite values; a single seed gives no interval).
    """
    out = []
    for value in values:
        if value not in rows.columns:
            raise ValueError(f"values: {value!r} is not a column of the rows")
        for key, group in rows.groupby(["data", "num_classes", "mode", "K"], sort=True):
            x = group[value].to_numpy(dtype=float)
            mean, low, high = stats.mean_interval(x[np.isfinite(x)].tolist(), CONFIDENCE)
            out.append(
                {
                    **dict(zip(("data", "num_classes", "mode", "K"), key, strict=True)),
                    "K+1": key[3] + 1,
                    "term": value,
                    "n": len(x),
                    "n_finite": int(np.isfinite(x).sum()),
                    "n_inf": int(np.isposinf(x).sum()),
                    "mean": mean,
                    "low": low,
                    "high": high,
                }
            )
    return pd.DataFrame(out)


def wide_summary(rows: pd.DataFrame, values: list[str] | tuple[str, ...]) -> pd.DataFrame:
    """Means over seeds, one column per value, one row per (data, mode, K) (for tables).

    A value that is +inf in every seed is shown as inf (not as a missing mean).
    """
    s = summarize_over_seeds(rows, values)
    s["value"] = s["mean"].where(s["n_inf"] < s["n"], math.inf)
    index = ["data", "num_classes", "mode", "K+1"]
    table = s.pivot(index=index, columns="term", values="value").reindex(columns=list(values))
    table.columns.name = None
    return table.reset_index()


def paper_comparison(rows: pd.DataFrame) -> pd.DataFrame:
    """The paper's CIFAR-10 / CIFAR-100 numbers (quoted) beside ours, one row per K+1.

    Ours: means over seeds of the image data (both modes) and of the latent-class data. The
    settings differ (data, model, epochs, number of classes); compare trends, not levels.
    """
    cols = ["centroid_accuracy", "linear_accuracy", "curl_bound", "proposed_bound"]
    names = {
        "centroid_accuracy": "mean-classifier acc. (%)",
        "linear_accuracy": "linear acc. (%)",
        "curl_bound": "CURL bound",
        "proposed_bound": "proposed bound",
    }
    out = []
    for k1, acc, lin, curl, prop in PAPER_CIFAR10:
        out.append(("paper: CIFAR-10, ResNet-18 (quoted)", 10, "batch", k1, acc, lin, curl, prop))
    for k1, acc in PAPER_CIFAR100:
        out.append(
            ("paper: CIFAR-100, ResNet-18 (quoted)", 100, "batch", k1, acc, *(math.nan,) * 3)
        )
    ours = wide_summary(rows, cols)
    for _, r in ours.iterrows():
        label = f"ours: {rows.loc[rows['data'] == r['data'], 'dataset'].iloc[0]}"
        out.append((label, r["num_classes"], r["mode"], r["K+1"], *(r[c] for c in cols)))
    return pd.DataFrame(
        out, columns=["source", "C", "how K varies", "K+1", *(names[c] for c in cols)]
    )


def upsilon_table(rows: pd.DataFrame) -> pd.DataFrame:
    """υ(K+1) for every K of the scans: empirical, exact, and float64 as published.

    ``empirical``: the fraction of anchors whose test batch covers every class (mean over runs);
    ``exact (test frequencies)``: υ under the test set's class frequencies (what the empirical
    value estimates, up to sampling without replacement); ``exact (uniform)``: υ for a uniform
    prior; ``float64 (authors' notebook)``: the alternating sum in double precision, as the
    authors' ``coupon.ipynb``; ``float64 / exact``: how wrong that is.
    """
    out = []
    for (kind, c, k), g in rows.groupby(["data", "num_classes", "K"], sort=True):
        exact = bounds.coverage_probability(k + 1, num_classes=int(c))
        naive = bounds.naive_coverage_probability(k + 1, int(c), "notebook")
        direct = bounds.naive_coverage_probability(k + 1, int(c), "direct")
        out.append(
            {
                "data": kind,
                "C": int(c),
                "K+1": int(k) + 1,
                "empirical": float(g["upsilon"].mean()),
                "exact (test frequencies)": float(g["upsilon_exact"].mean()),
                "exact (uniform)": exact,
                "float64 (authors' notebook)": naive,
                "float64 (direct sum)": direct,
                "float64 / exact": _ratio_or_nan(naive, exact),
            }
        )
    return pd.DataFrame(out)


def _ratio_or_nan(num: float, den: float) -> float:
    """num / den; 0 / 0 (both exactly zero, e.g. υ for K+1 < C) is nan, x / 0 is inf."""
    if den != 0:
        return num / den
    return math.nan if num == 0 else math.inf


# ---------------------------------------------------------------------------------------------
# Verdicts


def seed_slopes(rows: pd.DataFrame, value: str) -> pd.Series:
    """Per seed, the least-squares slope of ``value`` against log2(K+1) (finite values only).

    A seed with fewer than two distinct K among its finite values gets no slope. The slope is
    "change per doubling of K+1".
    """
    slopes = {}
    for seed, g in rows.groupby("seed", sort=True):
        x = np.log2(g["K"].to_numpy(dtype=float) + 1.0)
        y = g[value].to_numpy(dtype=float)
        ok = np.isfinite(y)
        if np.unique(x[ok]).size < 2:
            continue
        slopes[seed] = float(np.polyfit(x[ok], y[ok], 1)[0])
    return pd.Series(slopes, name=value, dtype=float)


def trend(rows: pd.DataFrame, value: str) -> tuple[float, float, float, int]:
    """Mean per-seed slope (per doubling of K+1) with its 95% t-interval, and the seed count."""
    slopes = seed_slopes(rows, value)
    mean, low, high = stats.mean_interval(slopes.tolist(), CONFIDENCE)
    return mean, low, high, int(slopes.size)


def trend_test_interval(rows: pd.DataFrame, value: str) -> tuple[float, float] | None:
    """The test set's own 95% interval of :func:`trend`'s mean slope, by resampling the test
    images (:func:`negatives.stats.contrast_bootstrap`); ``None`` where ``rows`` has no
    per-image results for ``value`` (``<probe>_correct``) or a seed lacks a K."""
    column = f"{value.removesuffix('_accuracy')}_correct"
    if column not in rows.columns or rows[column].isna().any():
        return None
    ks = sorted(set(rows["K"]))
    seeds = sorted(set(rows["seed"]))
    if len(ks) < 2 or len(rows) != len(ks) * len(seeds):
        return None
    x = np.log2(np.asarray(ks, dtype=float) + 1.0)
    w_k = (x - x.mean()) / ((x - x.mean()) ** 2).sum()  # least-squares slope weights
    rows = rows.sort_values(["seed", "K"])
    weights = np.tile(w_k, len(seeds)) / len(seeds)
    correct = probes.correct_matrix(rows, column)
    _, low, high = stats.contrast_bootstrap(correct, weights)
    return low, high


def _rows_for(rows: pd.DataFrame, kind: str, mode: str) -> pd.DataFrame:
    return rows[(rows["data"] == kind) & (rows["mode"] == mode)]


def data_label(rows: pd.DataFrame, kind: str) -> str:
    """How a data kind of the rows is named in tables: ``"<dataset> (C=<classes>)"``."""
    g = rows[rows["data"] == kind]
    return f"{g['dataset'].iloc[0]} (C={int(g['num_classes'].iloc[0])})"


PAPER = "Nozawa & Sato (2021)"


def claims() -> dict[str, vd.Claim]:
    """The chapter's claims (decided by :func:`negatives.verdicts.decide`)."""
    return {
        "accuracy": vd.Claim(
            "more negatives improve accuracy",
            PAPER,
            "downstream accuracy rises with K (their CIFAR tables); we ask for a rise of at "
            f"least {MIN_ACCURACY_SLOPE:g} points per doubling of K+1",
            "slope of accuracy against log2(K+1) (points per doubling), mean of per-seed fits",
            vd.above(MIN_ACCURACY_SLOPE),
            " pts",
        ),
        "curl": vd.Claim(
            "the CURL bound explodes",
            PAPER,
            "the CURL upper bound on the supervised loss grows with K and explodes as τ → 1",
            "slope of the CURL upper bound on L_sup against log2(K+1) (nats per doubling; ∞ "
            "where it is infinite at the largest K)",
            vd.above(0.0),
        ),
        "proposed": vd.Claim(
            "the proposed bound stays informative",
            PAPER,
            "their upper bound on the supervised loss stays finite, below CURL's, at large K",
            "CURL − proposed upper bound on L_sup at the largest K (nats)",
            vd.above(0.0),
        ),
        "lower bound": vd.Claim(
            "both bounds are below L_Info",
            PAPER + " (theorem)",
            "both are lower bounds of the contrastive loss (a check of our estimates)",
            "smallest L_Info − bound over all runs (nats)",
            vd.above(0.0),
        ),
    }


def _interval_with_infinities(values: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% interval over seeds where some values may be +inf (a vacuous upper bound):
    all infinite gives ``[inf, inf]``; some gives an interval from the finite ones up to inf."""
    finite = values[np.isfinite(values)]
    if np.isposinf(values).all():
        return math.inf, math.inf, math.inf
    if np.isposinf(values).any():
        low = (
            stats.mean_interval(finite.tolist(), CONFIDENCE)[1]
            if finite.size > 1
            else float(finite.min())
        )
        return math.inf, low, math.inf
    return stats.mean_interval(values.tolist(), CONFIDENCE)


def verdicts(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (claim, data, mode[, metric]), decided by :mod:`negatives.verdicts`.

    Claims of Nozawa & Sato (2021) (regions in :func:`claims`):

    1. *More negatives improve downstream accuracy*: the slope of accuracy (%) against
       log2(K+1), fitted per seed, mean over seeds with a 95% t-interval (:func:`trend`), for
       the mean classifier (``centroid_accuracy``) and the linear probe (``linear_accuracy``),
       must exceed :data:`MIN_ACCURACY_SLOPE` (a smaller rise counts as none).
    2. *The CURL upper bound on L_sup grows with K and explodes*: its slope, > 0; where it is
       infinite at the largest K in every seed (no collision-free anchor, 1 − τ = 0) the
       estimate is ∞; otherwise the slope over the K values where every seed is finite.
    3. *The proposed upper bound stays informative*: CURL minus proposed at the largest K
       (∞ where CURL is infinite; −∞ where the proposed one is), > 0.
    4. *Both are lower bounds of L_Info* (the theorems; a sanity check): the smallest
       L_Info − bound over all runs, > 0 (an exact minimum, no interval).
    """
    C = claims()
    out: list[dict[str, Any]] = []
    for kind in [k for k in DATA_KINDS if k in set(rows["data"])]:
        label = data_label(rows, kind)
        for mode in sorted(set(rows.loc[rows["data"] == kind, "mode"])):
            g = _rows_for(rows, kind, mode)
            ks = sorted(set(g["K"]))
            setting = f"{label}, {mode}, K+1 = {ks[0] + 1}…{ks[-1] + 1}"
            for metric, name in (
                ("centroid_accuracy", "mean classifier"),
                ("linear_accuracy", "linear probe"),
            ):
                mean, low, high, n = trend(g, metric)
                out.append(
                    vd.judge(
                        C["accuracy"],
                        mean,
                        low,
                        high,
                        setting=f"{setting}, {name}",
                        seeds=n,
                        test_set=trend_test_interval(g, metric),
                    )
                )
            out.append(_curl_verdict(C["curl"], g, setting))
            out.append(_proposed_verdict(C["proposed"], g, setting))
            for bound, name in (("curl_bound", "CURL"), ("proposed_bound", "proposed")):
                gap = float((g["info_loss"] - g[bound]).min())
                out.append(
                    vd.judge(
                        C["lower bound"],
                        gap,
                        gap,
                        gap,
                        setting=f"{setting}, {name} bound, {len(g)} runs",
                        seeds=int(g["seed"].nunique()),
                    )
                )
    return vd.verdict_table(out)


def _at_largest_k(g: pd.DataFrame, value: str) -> pd.Series:
    top = g[g["K"] == g["K"].max()]
    return top.set_index("seed")[value].astype(float)


def _curl_verdict(claim: vd.Claim, g: pd.DataFrame, setting: str) -> dict[str, Any]:
    top = _at_largest_k(g, "curl_sup_upper_bound")
    n_seeds = int(g["seed"].nunique())
    if len(top) and bool(np.isposinf(top).all()):
        return vd.judge(
            claim,
            math.inf,
            math.inf,
            math.inf,
            setting=f"{setting}; infinite at the largest K in every seed (1 − τ = 0)",
            seeds=n_seeds,
        )
    finite_k = [k for k, h in g.groupby("K") if bool(np.isfinite(h["curl_sup_upper_bound"]).all())]
    mean, low, high, n = trend(g[g["K"].isin(finite_k)], "curl_sup_upper_bound")
    return vd.judge(claim, mean, low, high, setting=f"{setting}; finite K only", seeds=n)


def _proposed_verdict(claim: vd.Claim, g: pd.DataFrame, setting: str) -> dict[str, Any]:
    curl = _at_largest_k(g, "curl_sup_upper_bound")
    prop = _at_largest_k(g, "proposed_sup_upper_bound_exact_upsilon")
    if not bool(np.isfinite(prop).all()):
        inf = -math.inf
        return vd.judge(
            claim,
            inf,
            inf,
            inf,
            setting=f"{setting}; the proposed bound is infinite",
            seeds=len(prop),
        )
    mean, low, high = _interval_with_infinities((curl - prop).to_numpy(dtype=float))
    return vd.judge(claim, mean, low, high, setting=setting, seeds=len(prop))
