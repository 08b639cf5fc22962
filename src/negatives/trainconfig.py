"""What a run trains: :class:`TrainConfig`, one frozen config whose fields are the notebooks'
parameters, checked when it is made (every error names the field), and :func:`model_for`, the
freshly initialised model a config trains.

Negative regimes (masks over the logits, shapes static, see :mod:`negatives.filters`):

* ``all``: every negative (SimCLR: both views of the other B-1 instances; MoCo: the whole queue);
* ``random-k``: a uniformly random subset of ``num_negatives`` per query, so that K is decoupled
  from the batch / queue size;
* ``band``: Cai & Frankle (2020): per query, only negatives whose difficulty rank (by q.k on
  normalised embeddings, hardest first, recomputed every step) lies in ``[band_low, band_high)``;
* ``no-same-class``: an oracle that drops negatives of the query's class (for analysis only).

Positives are two augmented views of one instance (``positives="views"``, instance
discrimination) or two samples of the same latent class (``positives="latent-class"``, the model
of Saunshi et al. 2019, used for the synthetic data).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from negatives import config as cfg
from negatives.models import ContrastiveModel, build_model

METHODS = ("simclr", "moco")


NEGATIVE_REGIMES = ("all", "random-k", "band", "no-same-class")


POSITIVES = ("views", "latent-class")


OPTIMIZERS = ("adamw", "sgd")


SCHEDULES = ("cosine", "constant")


# MoCo's shuffle-BN groups when ``bn_groups`` is None: the official one-GPU CIFAR demo splits
# its batch into 8 (and MoCo v2 on ImageNet runs 8 GPUs of 32 images each).
MOCO_BN_GROUPS: int = 8


ARCHS = ("cnn-small", "mlp", "resnet18-cifar")


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of one training run (mirrored as keyword defaults of the notebooks).

    The config alone determines the numbers; the number of processes that train it (``torchrun
    --nproc-per-node W``) only distributes the work, so that a run on 4 GPUs can be checked on
    one CPU: ``batch_size`` is the global batch (each of ``W`` ranks trains ``batch_size / W``
    rows of it), ``bn_groups`` the global number of batch-norm groups (each rank normalises its
    rows in ``bn_groups / W`` groups) and the negatives of a query are the global batch's
    (SimCLR) or the one global queue (MoCo). A one-process run of a config with ``bn_groups=4``
    is what 4 GPUs of a quarter of the batch each compute, within float rounding.

    ``negative_groups`` (SimCLR) cuts the batch into that many consecutive groups and each
    anchor contrasts only with its own group: the setting of Nozawa & Sato (2021), whose 4 GPUs
    each contrasted their own batch (``negative_groups=4``, so their ``K + 1`` is the per-GPU
    batch, :attr:`negatives_per_query`). On ``W`` ranks with ``negative_groups`` a multiple of
    ``W`` no embedding is sent; in one process it is a mask over the logits.

    ``tau_plus`` and ``beta`` replace the loss's negative term by the debiased estimate of
    Chuang et al. (2020) and its hard-negative reweighting of Robinson et al. (2021)
    (:func:`negatives.losses.debiased_info_nce`); both 0 is the plain InfoNCE / NT-Xent.

    ``eqco_alpha`` holds the loss at the scale of ``alpha`` negatives whatever K: every kept
    negative's logit gets ``log(alpha / K)`` (:attr:`negative_logit_shift`), which multiplies
    the denominator's negative sum by ``alpha / K``. Our reading of EqCo (Zhu et al. 2020),
    whose abstract says the loss's margin term must be "adaptively scaled according to the
    number of negative pairs"; the equation was not read here.
    """

    method: str = "simclr"
    arch: str = "cnn-small"
    width: int = 32
    feature_grid: int = 1  # the backbone's features: its last map pooled over a g x g grid
    proj_hidden: int = 128
    proj_dim: int = 64
    epochs: int = 10
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_epochs: float = 0.0
    schedule: str = "cosine"  # after the warm-up: cosine decay to zero, or constant
    temperature: float = 0.2
    negatives: str = "all"
    num_negatives: int | None = None  # K for negatives="random-k"
    band_low: float = 0.0
    band_high: float = 1.0
    queue_size: int = 4096
    momentum: float = 0.99
    bn_groups: int | None = None  # batch-norm groups of the batch; None: 8 for moco, 1 for simclr
    negative_groups: int = 1  # SimCLR: anchors contrast only within their group of the batch
    tau_plus: float = 0.0  # class prior of the debiased negative term (Chuang et al. 2020); 0: off
    beta: float = 0.0  # hard-negative weights exp(beta s / T) (Robinson et al. 2021); 0: off
    # EqCo's alpha (Zhu et al. 2020): the negatives' sum scaled by alpha / K; None: off
    eqco_alpha: int | None = None
    positives: str = "views"
    strength: float = 0.5
    min_scale: float = 0.2
    flip: bool = True
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 autocast of the encoders where the device has it natively
    compile: bool = False

    def __post_init__(self) -> None:
        cfg.whole_numbers(self)
        cfg.check_choice("method", self.method, METHODS)
        cfg.check_choice("arch", self.arch, ARCHS)
        cfg.check_choice("negatives", self.negatives, NEGATIVE_REGIMES)
        cfg.check_choice("positives", self.positives, POSITIVES)
        cfg.check_choice("optimizer", self.optimizer, OPTIMIZERS)
        cfg.check_choice("schedule", self.schedule, SCHEDULES)
        cfg.check_choice("device", self.device, cfg.DEVICES)
        cfg.check_choice("precision", self.precision, cfg.PRECISIONS)
        for name in ("width", "feature_grid", "proj_hidden", "proj_dim", "epochs"):
            cfg.check_int(name, getattr(self, name), 1)
        if self.arch == "mlp" and self.feature_grid != 1:
            raise ValueError(
                f"feature_grid={self.feature_grid}: arch='mlp' has no feature map to pool; "
                "leave it 1"
            )
        cfg.check_int("batch_size", self.batch_size, 2)
        cfg.check_int("queue_size", self.queue_size, 1)
        cfg.check_int("seed", self.seed, 0)
        cfg.check_float("lr", self.lr, 0.0, strict_minimum=True)
        cfg.check_float("weight_decay", self.weight_decay, 0.0)
        cfg.check_float("warmup_epochs", self.warmup_epochs, 0.0)
        if self.warmup_epochs > self.epochs:
            raise ValueError(
                f"warmup_epochs={self.warmup_epochs:g} must be <= epochs={self.epochs}: the "
                "learning rate would never reach its value"
            )
        cfg.check_float("temperature", self.temperature, 0.0, strict_minimum=True)
        cfg.check_float("momentum", self.momentum, 0.0, 1.0)
        cfg.check_float("strength", self.strength, 0.0, 1.0)
        cfg.check_float("min_scale", self.min_scale, 0.0, 1.0, strict_minimum=True)
        cfg.check_float("band_low", self.band_low, 0.0, 1.0)
        cfg.check_float("band_high", self.band_high, 0.0, 1.0)
        cfg.check_float("tau_plus", self.tau_plus, 0.0, 1.0)
        if self.tau_plus >= 1.0:
            raise ValueError(
                f"tau_plus={self.tau_plus} must be in [0, 1): the chance that a negative shares "
                "the anchor's class (1/C for C balanced classes)"
            )
        cfg.check_float("beta", self.beta, 0.0)
        if self.eqco_alpha is not None:
            cfg.check_int("eqco_alpha", self.eqco_alpha, 1)
            if self.debiased:
                raise ValueError(
                    f"eqco_alpha={self.eqco_alpha} with tau_plus={self.tau_plus}, beta="
                    f"{self.beta}: EqCo rescales the plain InfoNCE's negatives; use one or the other"
                )
            if self.negatives == "band":
                raise ValueError(
                    f"eqco_alpha={self.eqco_alpha} with negatives='band': a band keeps a "
                    "varying number of negatives per query, EqCo's K must be fixed; use 'all' "
                    "or 'random-k'"
                )
        if self.debiased and self.negatives == "no-same-class":
            raise ValueError(
                f"tau_plus={self.tau_plus}, beta={self.beta} with negatives='no-same-class': the "
                "oracle has no same-class negative to correct for; use one or the other"
            )
        if self.bn_groups is not None:
            cfg.check_int("bn_groups", self.bn_groups, 1)
        if self.batch_size < 2 * self.batchnorm_groups:
            raise ValueError(
                f"batch_size={self.batch_size} cannot be split into bn_groups="
                f"{self.batchnorm_groups} batch-norm groups of at least 2 samples"
            )
        if self.band_low >= self.band_high:
            raise ValueError(
                f"band_low={self.band_low} must be < band_high={self.band_high} "
                "(fractions of the ranked negatives, hardest first, in [0, 1])"
            )
        cfg.check_int("negative_groups", self.negative_groups, 1)
        if self.negative_groups != 1:
            if self.method != "simclr":
                raise ValueError(
                    f"negative_groups={self.negative_groups} cuts SimCLR's in-batch negatives into "
                    f"groups; method={self.method!r} contrasts with its queue: leave it 1"
                )
            if self.batch_size % self.negative_groups:
                raise ValueError(
                    f"negative_groups={self.negative_groups} must divide batch_size="
                    f"{self.batch_size} (groups of batch_size / negative_groups instances)"
                )
            if self.batch_size // self.negative_groups < 2:
                raise ValueError(
                    f"negative_groups={self.negative_groups} leaves groups of one instance of "
                    f"batch_size={self.batch_size}: each anchor needs a negative in its group"
                )
        if self.negatives == "random-k":
            if self.num_negatives is None:
                raise ValueError(
                    "num_negatives must be given (an integer >= 1) when negatives='random-k'"
                )
            cfg.check_int("num_negatives", self.num_negatives, 1)
            available = self._candidates
            if self.num_negatives > available:
                simclr = (
                    "batch_size - 1"
                    if self.negative_groups == 1
                    else f"batch_size / negative_groups - 1 with negative_groups={self.negative_groups}"
                )
                raise ValueError(
                    f"num_negatives={self.num_negatives} exceeds the {available} negatives available "
                    f"to method={self.method!r} ({simclr} for simclr, queue_size for moco)"
                )
        elif self.num_negatives is not None:
            raise ValueError(
                f"num_negatives={self.num_negatives} is only used with negatives='random-k', "
                f"not negatives={self.negatives!r}; leave it None"
            )

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    @property
    def batchnorm_groups(self) -> int:
        """The resolved ``bn_groups``: MoCo's default is :data:`MOCO_BN_GROUPS`, SimCLR's 1.

        The batch norm of both encoders computes its statistics per group of ``batch_size /
        bn_groups`` consecutive samples of the (global) batch: one GPU's share of a batch in a
        run across GPUs, emulated on one device (:class:`negatives.models.SplitBatchNorm`). On
        ``W`` processes each normalises its share in ``bn_groups / W`` groups, so the numbers
        do not depend on how many processes compute them (see :func:`check_world_size`).
        """
        if self.bn_groups is not None:
            return self.bn_groups
        return MOCO_BN_GROUPS if self.method == "moco" else 1

    @property
    def _candidates(self) -> int:
        """The negative instances a query has before any regime: SimCLR's other instances of
        its group of the batch, MoCo's queue."""
        if self.method == "simclr":
            return self.batch_size // self.negative_groups - 1
        return self.queue_size

    @property
    def negative_logit_shift(self) -> float:
        """What EqCo adds to every negative's logit: log(eqco_alpha / K), K =
        :attr:`negatives_per_query` (instances; SimCLR's two views of each share it), so that
        the negatives' sum is scaled by alpha / K; 0 without ``eqco_alpha``."""
        if self.eqco_alpha is None:
            return 0.0
        return math.log(self.eqco_alpha / self.negatives_per_query)

    @property
    def debiased(self) -> bool:
        """Whether the loss is the debiased / reweighted one (``tau_plus`` or ``beta`` set)."""
        return self.tau_plus > 0 or self.beta > 0

    @property
    def negatives_per_query(self) -> int:
        """K: the number of negative instances each query is contrasted with (before bands):
        ``num_negatives`` for ``random-k``; else SimCLR's ``batch_size / negative_groups - 1``
        (Nozawa & Sato's K + 1 is the per-GPU batch) and MoCo's ``queue_size``."""
        if self.negatives == "random-k":
            assert self.num_negatives is not None
            return self.num_negatives
        return self._candidates


def model_for(config: TrainConfig, images: torch.Tensor) -> ContrastiveModel:
    """The (freshly initialised) model that ``config`` trains on ``images`` ``(N, C, H, W)``,
    before shuffle-BN splits its batch norms."""
    return build_model(
        config.arch,
        images.shape[1],
        images.shape[-1],
        width=config.width,
        proj_hidden=config.proj_hidden,
        proj_dim=config.proj_dim,
        input_dim=images[0].numel(),
        grid=config.feature_grid,
    )
