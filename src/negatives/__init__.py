"""negatives: a reproducible study of negative samples in contrastive self-supervised learning.

One module per concept (see ARCHITECTURE.md). ``import negatives`` is cheap (it imports neither
torch nor any submodule) but complete: every submodule and the functions a researcher uses
interactively are attributes of the package, imported on first use (PEP 562)::

    import negatives
    data = negatives.load_dataset("digits")
    negatives.coverage_probability(128, num_classes=10)   # = negatives.bounds.coverage_probability
    negatives.train.TrainConfig                           # the module negatives.train

``negatives.train`` is the training module; its function ``train(config, data)`` is
``negatives.train.train`` (``from negatives.train import train``) and, at the top level,
``negatives.train_encoder``. ``negatives.augment`` is likewise the module, its function
``negatives.augment.augment``.

One side effect: ``import negatives`` sets the environment variable ``OMP_WAIT_POLICY=PASSIVE``
for the process when it is not set already (``OMP_WAIT_POLICY=ACTIVE python ...`` keeps yours).
OpenMP threads that spin while they wait made small training steps 10 to 40 times slower on a
CPU shared with another process; waiting passively costs nothing measurable on free cores. It
takes effect only when negatives is imported before torch starts its threads.
"""

import importlib as _importlib
import os as _os

# OpenMP threads that spin while waiting make small CPU training steps 10-40x slower when another
# process shares the cores; passive waiting costs nothing measurable when the cores are free.
# Only effective when negatives is imported before torch (as the notebooks do).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_SUBMODULES: tuple[str, ...] = (
    "augment",
    "book",
    "bounds",
    "chapters",
    "checkpoint",
    "config",
    "data",
    "distributed",
    "epochs",
    "experiment",
    "filters",
    "glue",
    "hardness",
    "latex",
    "launch",
    "losses",
    "memory",
    "models",
    "pages",
    "population",
    "probes",
    "queue",
    "rank_steps",
    "regimes",
    "runner",
    "runs",
    "show",
    "stats",
    "steps",
    "sweep",
    "theory",
    "toc",
    "train",
    "trainconfig",
    "verdicts",
)

# Top-level name -> (submodule, name there). A name that differs from its attribute is an alias.
_EXPORTS: dict[str, tuple[str, str]] = {
    # data
    "Dataset": ("data", "Dataset"),
    "load_dataset": ("data", "load_dataset"),
    "make_latent_class": ("data", "make_latent_class"),
    "zipf_probs": ("data", "zipf_probs"),
    # models, losses, negative filters, MoCo's queue
    "build_model": ("models", "build_model"),
    "ContrastiveModel": ("models", "ContrastiveModel"),
    "info_nce": ("losses", "info_nce"),
    "nt_xent": ("losses", "nt_xent"),
    "band_mask": ("filters", "band_mask"),
    "random_subset_mask": ("filters", "random_subset_mask"),
    "same_class_mask": ("filters", "same_class_mask"),
    "Queue": ("queue", "Queue"),
    # training and the run cache
    "TrainConfig": ("train", "TrainConfig"),
    "TrainResult": ("train", "TrainResult"),
    "train_encoder": ("train", "train"),
    "Run": ("runner", "Run"),
    "run": ("runner", "run"),
    "train_sweep": ("runner", "sweep"),  # negatives.sweep is the module of plans and executors
    "RunStore": ("runs", "RunStore"),
    # probes
    "extract_features": ("probes", "extract_features"),
    "augmented_features": ("probes", "augmented_features"),
    "linear_probe": ("probes", "linear_probe"),
    "mean_classifier": ("probes", "mean_classifier"),
    "knn_classifier": ("probes", "knn_classifier"),
    "probe_features": ("probes", "probe_features"),
    "evaluate_model": ("probes", "evaluate_model"),
    "pixel_baseline": ("probes", "pixel_baseline"),
    "random_encoder_baseline": ("probes", "random_encoder_baseline"),
    # coupon collector and bound terms
    "coverage_probability": ("bounds", "coverage_probability"),
    "min_draws_for_coverage": ("bounds", "min_draws_for_coverage"),
    "expected_draws_to_cover": ("bounds", "expected_draws_to_cover"),
    "collision_probability": ("bounds", "collision_probability"),
    "mean_classifier_weights": ("bounds", "mean_classifier_weights"),
    "bound_terms": ("bounds", "bound_terms"),
    # the latent-class population loss
    "population_loss": ("theory", "population_loss"),
    "optimal_representation": ("theory", "optimal_representation"),
    "downstream_metrics": ("theory", "downstream_metrics"),
    "curl_bound_prediction": ("theory", "curl_bound_prediction"),
    # statistics and verdicts
    "mean_interval": ("stats", "mean_interval"),
    "binomial_se": ("stats", "binomial_se"),
    "mcnemar_interval": ("stats", "mcnemar_interval"),
    "paired_bootstrap": ("stats", "paired_bootstrap"),
    "Claim": ("verdicts", "Claim"),
    "decide": ("verdicts", "decide"),
    "seeds_to_decide": ("verdicts", "seeds_to_decide"),
}

__all__ = ["__version__", *_SUBMODULES, *_EXPORTS]


# The packages of the optional extras (pyproject.toml) -> the extra that installs each: the core
# install (torch, numpy, scipy, scikit-learn, pandas, tqdm) imports every exported name; the book
# layer, the cluster executors and the browser checks need theirs.
_EXTRA_OF: dict[str, str] = {
    "papermill": "book", "nbformat": "book", "yaml": "book", "matplotlib": "book",
    "matplotlib_inline": "book", "cycler": "book", "seaborn": "book", "sphinx": "book",
    "docutils": "book", "myst_nb": "book", "submitit": "cluster", "playwright": "dev",
}  # fmt: skip


def _import(module: str):
    """``negatives.<module>``; a package of an optional extra that is missing is named with the
    extra that installs it."""
    try:
        return _importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as err:
        extra = _EXTRA_OF.get((err.name or "").split(".")[0])
        if extra is None:
            raise
        raise ModuleNotFoundError(
            f"negatives.{module} needs {err.name!r}, which the {extra!r} extra installs: "
            f"pip install 'negatives[{extra}]'",
            name=err.name,
        ) from err


def __getattr__(name: str):
    """Import a submodule or an exported name on first access, then keep it on the package."""
    if name in _SUBMODULES:
        return _import(name)  # sets the attribute itself
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(_import(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
