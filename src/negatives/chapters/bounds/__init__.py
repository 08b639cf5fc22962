"""Chapter 3, bounds against the number of negatives (Nozawa & Sato 2021, section 5).

The chapter's parameters (:class:`Params`: the shared K-scan of
:mod:`negatives.chapters.kscan` plus this chapter's evaluation settings) and the functions that
turn trained encoders into the chapter's tables:

* :func:`scan_bounds`: train (or reuse from the run cache) every encoder of the K-scan and
  evaluate the bound terms on each (:func:`negatives.bounds.bound_inputs` and
  :func:`negatives.bounds.terms_from_inputs`, as the authors' ``bound.py`` does: test set,
  shuffled batches of K+1, several passes, mean classifier from training features averaged
  over augmentations), cached per run (:func:`evaluate_run`). One row per run.
* summaries over seeds (:func:`negatives.stats.summarize_over_seeds`), the comparison with the
  paper's tables (:func:`paper_comparison`), exact against float64 υ (:func:`upsilon_table`),
  and :func:`claims`, one row per claim of :data:`CLAIMS` decided by the rules documented there.

The K-scan's configs are built by :class:`negatives.chapters.kscan.Params` unchanged, so
chapter 4 reuses the same trained encoders through the run cache.

The chapter is a package of four modules, each one concept: :mod:`.design` (the papermill
parameters :class:`Params`, the profiles and the plan of runs), :mod:`.analysis` (training, the
probes and the tables, :func:`run`), :mod:`.claims` (the papers' claims and their verdicts) and
:mod:`.page` (:func:`numbers`, every number the page quotes, and the runs behind each figure).
This module re-exports their public names.
"""

from __future__ import annotations

from negatives.chapters.bounds.analysis import (
    eqco_slopes,
    evaluate_run,
    paper_comparison,
    run,
    scan_bounds,
    scan_eqco,
    upsilon_table,
    worst_float64_upsilon,
)
from negatives.chapters.bounds.claims import CLAIMS, PAPER, claims
from negatives.chapters.bounds.design import (
    BOOK,
    DATA_KINDS,
    EVAL_VERSION,
    MAX_PASSES,
    MIN_ACCURACY_SLOPE,
    PAPER_CIFAR10,
    PAPER_CIFAR100,
    TERMS,
    Params,
    check,
    plan,
)
from negatives.chapters.bounds.page import (
    EVERY_BOUND,
    every_bound_table,
    figure_runs,
    learned_numbers,
    numbers,
)

__all__ = [
    "BOOK",
    "CLAIMS",
    "DATA_KINDS",
    "EVAL_VERSION",
    "EVERY_BOUND",
    "MAX_PASSES",
    "MIN_ACCURACY_SLOPE",
    "PAPER",
    "PAPER_CIFAR10",
    "PAPER_CIFAR100",
    "TERMS",
    "Params",
    "check",
    "claims",
    "eqco_slopes",
    "evaluate_run",
    "every_bound_table",
    "figure_runs",
    "learned_numbers",
    "numbers",
    "paper_comparison",
    "plan",
    "run",
    "scan_bounds",
    "scan_eqco",
    "upsilon_table",
    "worst_float64_upsilon",
]
