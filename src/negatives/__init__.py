"""negatives: a reproducible study of negative samples in contrastive self-supervised learning.

One module per concept (see ARCHITECTURE.md); import what you need, e.g.
``from negatives.bounds import coverage_probability``.
"""

__version__ = "0.1.0"
