"""negatives: a reproducible study of negative samples in contrastive self-supervised learning.

One module per concept (see ARCHITECTURE.md); import what you need, e.g.
``from negatives.bounds import coverage_probability``.
"""

import os as _os

# OpenMP threads that spin while waiting make small CPU training steps 10-40x slower when another
# process shares the cores; passive waiting costs nothing measurable when the cores are free.
# Only effective when negatives is imported before torch (as the notebooks do).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
