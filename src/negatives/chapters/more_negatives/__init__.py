"""Chapter 4, more negatives do not hurt (Awasthi, Dikkala & Kamath 2022).

The chapter's shape (see ARCHITECTURE.md): :class:`Params` and its profiles, :func:`run`,
:func:`claims`, :func:`numbers`. The population part scans the exact optimum of the latent-class
contrastive loss over class counts ``C``, negatives ``K``, priors, scales and constraints
(:class:`negatives.population.Scan`, cached in the run cache); the finite-sample part trains
the K-scan shared with chapter 3 (:mod:`negatives.chapters.kscan`) on the synthetic latent-class
data and on the image data set, and summarises it over seeds (:func:`kscan_accuracy`,
:func:`accuracy_summary`, :func:`k_comparison`, :func:`departures`).

The chapter is a package of four modules, each one concept: :mod:`.design` (the papermill
parameters :class:`Params`, the profiles and the plan of runs), :mod:`.analysis` (training, the
probes and the tables, :func:`run`), :mod:`.claims` (the papers' claims and their verdicts) and
:mod:`.page` (:func:`numbers`, every number the page quotes, and the runs behind each figure).
This module re-exports their public names.
"""

from __future__ import annotations

from negatives.chapters.more_negatives.analysis import (
    accuracy_summary,
    departures,
    k_comparison,
    kscan_accuracy,
    run,
)
from negatives.chapters.more_negatives.claims import (
    NO_DEGRADATION,
    POPULATION_CLAIMS,
    SCAN_DIMENSIONS,
    claims,
)
from negatives.chapters.more_negatives.design import (
    BOOK,
    FLAT_TOLERANCE,
    MAX_CLASSES,
    MAX_NEGATIVES,
    METRICS,
    MODE_NAMES,
    PAPER,
    QUADRATURE_CASES,
    SCAN_KINDS,
    SIMPLEX_TOLERANCE,
    Params,
    check,
    plan,
)
from negatives.chapters.more_negatives.page import figure_runs, numbers

__all__ = [
    "BOOK",
    "FLAT_TOLERANCE",
    "MAX_CLASSES",
    "MAX_NEGATIVES",
    "METRICS",
    "MODE_NAMES",
    "NO_DEGRADATION",
    "PAPER",
    "POPULATION_CLAIMS",
    "QUADRATURE_CASES",
    "SCAN_DIMENSIONS",
    "SCAN_KINDS",
    "SIMPLEX_TOLERANCE",
    "Params",
    "accuracy_summary",
    "check",
    "claims",
    "departures",
    "figure_runs",
    "k_comparison",
    "kscan_accuracy",
    "numbers",
    "plan",
    "run",
]
