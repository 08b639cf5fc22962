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
gain over a random encoder that each treatment keeps (:func:`add_shares`), the share of the
softmax's negative weight that falls on same-class negatives (logged in training,
:func:`negatives.filters.same_class_weight`), the verdicts (:func:`claims`) and the synthesis
of the whole book's verdicts (:func:`synthesis`).

The chapter is a package of four modules, each one concept: :mod:`.design` (the papermill
parameters :class:`Params`, the profiles and the plan of runs), :mod:`.analysis` (training, the
probes and the tables, :func:`run`), :mod:`.claims` (the papers' claims and their verdicts) and
:mod:`.page` (:func:`numbers`, every number the page quotes, and the runs behind each figure).
This module re-exports their public names.
"""

from __future__ import annotations

from negatives.chapters.treatments.analysis import (
    collisions,
    mechanism,
    random_baselines,
    run,
    run_bench,
    summarize,
)
from negatives.chapters.treatments.claims import (
    CHUANG,
    DELTA,
    ROBINSON,
    add_shares,
    book_verdicts,
    claims,
    paper_claims,
    synthesis,
)
from negatives.chapters.treatments.design import (
    ALL_TREATMENTS,
    BOOK,
    BOOK_IMAGE_TREATMENTS,
    BOOK_TREATMENTS,
    CHAPTER,
    DATA_KINDS,
    GRAMMAR,
    METHODS,
    ORACLE,
    REFERENCE,
    Params,
    Treatment,
    bench_label,
    parse_treatment,
    plan,
    shared_runs,
)
from negatives.chapters.treatments.page import QUOTED, figure_runs, numbers, quote

__all__ = [
    "ALL_TREATMENTS",
    "BOOK",
    "BOOK_IMAGE_TREATMENTS",
    "BOOK_TREATMENTS",
    "CHAPTER",
    "CHUANG",
    "DATA_KINDS",
    "DELTA",
    "GRAMMAR",
    "METHODS",
    "ORACLE",
    "Params",
    "QUOTED",
    "REFERENCE",
    "ROBINSON",
    "Treatment",
    "add_shares",
    "bench_label",
    "book_verdicts",
    "claims",
    "collisions",
    "figure_runs",
    "mechanism",
    "numbers",
    "paper_claims",
    "parse_treatment",
    "plan",
    "quote",
    "random_baselines",
    "run",
    "run_bench",
    "shared_runs",
    "summarize",
    "synthesis",
]
