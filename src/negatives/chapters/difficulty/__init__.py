"""Chapter 2: are all negatives created equal? (Cai & Frankle 2020, MoCo v2 difficulty bands).

Cai & Frankle (2020), "Are all negatives created equal in contrastive instance
discrimination?", rank each query's negatives in MoCo v2's queue by their difficulty
``s_j = q . k_j`` (normalised contrastive embeddings, hardest first) and train with only the
negatives whose rank percentile lies in a band ``[low, high)``. This module builds every run of
the chapter from one frozen parameter set (:class:`Params`), trains or reuses them
(:func:`run_conditions`), and turns the results into the chapter's tables:

* :func:`summarize_conditions`: mean and 95% interval of the linear-probe accuracy over seeds,
  the paired difference to "all negatives" at the same temperature and seed, and the test set's
  own uncertainty of both; :func:`add_shares`: the share of the gain over a random encoder that
  each condition keeps, 1 + Δ / G;
* :func:`verdicts`: one row per claim of the paper (:func:`claims`), decided by the book's one
  rule (:func:`negatives.verdicts.decide`);
* :func:`same_class_by_rank` / :func:`same_class_summary`: how often negatives of each difficulty
  band share the query's class, against the base rate;
* :func:`hardness_consistency`: whether some negatives are hard (or easy) for many queries more
  often than a shuffled null allows;
* :func:`run` / :func:`main`: all of it in the notebook's order, also from the shell
  (``python -m negatives.chapters.difficulty --profile book``).

The chapter is a package of four modules, each one concept: :mod:`.design` (the papermill
parameters :class:`Params`, the profiles and the plan of runs), :mod:`.analysis` (training, the
probes and the tables, :func:`run`), :mod:`.claims` (the papers' claims and their verdicts) and
:mod:`.page` (:func:`numbers`, every number the page quotes, and the runs behind each figure).
This module re-exports their public names.
"""

from __future__ import annotations

from negatives.chapters.difficulty.analysis import (
    main,
    random_accuracy,
    run,
    run_baselines,
    run_conditions,
    run_consistency,
    summarize_conditions,
)
from negatives.chapters.difficulty.claims import (
    DELTA,
    NEARLY_FULL,
    PAPER,
    SHARE_COLUMNS,
    SOMETIMES,
    SOMETIMES_CLAIMS,
    add_shares,
    at_least_one,
    claims,
    format_share,
    paper_claims,
    share_columns,
)
from negatives.chapters.difficulty.design import (
    ALL_MAIN,
    BOOK,
    BOOK_MAIN,
    GROUPS,
    MAIN_BANDS,
    MARGIN,
    Params,
    check,
    describe,
    plan,
)
from negatives.chapters.difficulty.page import figure_runs, numbers
from negatives.regimes import ORACLE, REFERENCE

__all__ = [
    "ALL_MAIN",
    "BOOK",
    "BOOK_MAIN",
    "DELTA",
    "GROUPS",
    "MAIN_BANDS",
    "NEARLY_FULL",
    "ORACLE",
    "PAPER",
    "MARGIN",
    "Params",
    "REFERENCE",
    "SHARE_COLUMNS",
    "SOMETIMES",
    "SOMETIMES_CLAIMS",
    "add_shares",
    "at_least_one",
    "check",
    "claims",
    "describe",
    "figure_runs",
    "format_share",
    "main",
    "numbers",
    "paper_claims",
    "plan",
    "random_accuracy",
    "run",
    "run_baselines",
    "run_conditions",
    "run_consistency",
    "share_columns",
    "summarize_conditions",
]
