"""Probes that judge a frozen representation: linear probe, mean (centroid) classifier, k-NN.

The mean classifier is the one of Arora et al. (2019) and Nozawa & Sato (2021): class c's weight
is the mean of its training features, the score is the dot product. Baselines (raw pixels and a
randomly initialised encoder) go through the same probes.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from negatives import augment
from negatives import config as cfg
from negatives.data import Dataset
from negatives.models import build_model

FEATURES = ("backbone", "projection")
# Part of every cached probe result's key: bump it when the probes change, so that they are redone.
# 3: the linear probe's products in another order (faster; the last float digits differ).
PROBE_VERSION = 3


def _check_model_and_images(model: Any, images: Any) -> None:
    """A model and the images it is to see, checked where a user passes them: their types, and
    the images' shape against the one the model was built for (``ContrastiveModel.input_shape``;
    a CNN's global pool would take any size and return features of nothing it learned)."""
    cfg.check_instance("model", model, nn.Module, "a trained run's is run.load_model()")
    cfg.check_instance("images", images, Tensor, "uint8 (N, C, H, W), as Dataset.train_images")
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(images.shape[1:]) != tuple(expected):
        raise ValueError(
            f"images of shape {tuple(images.shape[1:])} per image, but the model was built for "
            f"{tuple(expected)} (C, H, W): evaluate it on the data set it was trained on"
        )


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: Tensor,
    *,
    which: str = "backbone",
    batch_size: int = 1024,
    device: str = "cpu",
    precision: str = "auto",
) -> Tensor:
    """Frozen features of uint8 ``images`` (N, C, H, W) -> float32 (N, F) on the CPU.

    ``which="backbone"`` gives h (before the projection head), ``"projection"`` gives z.
    ``precision="auto"`` runs the forward pass under bf16 autocast where the device has bf16
    natively (2.4x faster for the small CNN on a 2-core AMX CPU), as the trainer does; the
    features are returned in float32 either way.
    """
    _check_model_and_images(model, images)
    cfg.check_choice("which", which, FEATURES)
    bf16 = cfg.resolve_precision(precision, device) == "bf16"
    model = model.to(device).eval()
    images_4d = images.ndim == 4 and images.shape[-1] > 1
    if images_4d:
        model = model.to(memory_format=torch.channels_last)
    out = []
    with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
        for chunk in images.split(batch_size):
            x = augment.to_float(chunk.to(device))
            if images_4d:
                x = x.contiguous(memory_format=torch.channels_last)
            h, z = model(x)
            out.append((h if which == "backbone" else z).float().cpu())
    return torch.cat(out)


@torch.no_grad()
def augmented_features(
    model: nn.Module,
    images: Tensor,
    num_augmentations: int,
    *,
    seed: int = 0,
    strength: float = 0.5,
    min_scale: float = 0.2,
    flip: bool = True,
    which: str = "projection",
    normalize: bool = True,
    batch_size: int = 1024,
    device: str = "cpu",
    precision: str = "auto",
) -> Tensor:
    """Features of ``num_augmentations`` random views of each image -> (N, A, F).

    Used for the mean classifier "averaged over augmentations" of Nozawa & Sato (2021), and
    for z-bar(x) in their d(f) term. Vectors (H = W = 1) are not augmented: every view is x.
    ``precision`` as in :func:`extract_features`.
    """
    cfg.check_int("num_augmentations", num_augmentations, 1)
    _check_model_and_images(model, images)
    cfg.check_choice("which", which, FEATURES)
    bf16 = cfg.resolve_precision(precision, device) == "bf16"
    model = model.to(device).eval()
    images_4d = images.ndim == 4 and images.shape[-1] > 1
    if images_4d:
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    views = []
    for _ in range(num_augmentations):
        feats = []
        for chunk in images.split(batch_size):
            chunk = chunk.to(device)
            if not images_4d:
                x = augment.to_float(chunk)
            else:
                x = augment.augment(chunk, gen, strength=strength, min_scale=min_scale, flip=flip)
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                h, z = model(x)
            f = (h if which == "backbone" else z).float()
            feats.append((F.normalize(f, dim=1) if normalize else f).cpu())
        views.append(torch.cat(feats))
    return torch.stack(views, dim=1)


def _standardize(train_x: Tensor, test_x: Tensor) -> tuple[Tensor, Tensor]:
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    return (train_x - mean) / std, (test_x - mean) / std


def linear_probe(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    weight_decay: float = 1e-4,
    max_iter: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Multinomial logistic regression on standardised frozen features (full-batch L-BFGS).

    Deterministic: full batch, a seeded start, float32 (on 60,000 x 128 features 200
    iterations take about 6 s on two CPU cores; float64 moved no accuracy by more than 0.02
    points in our checks). Returns test ``linear_accuracy`` (%), test cross-entropy
    ``linear_loss`` and ``linear_correct``, the ``(M,)`` bool tensor of correctly classified
    test samples: the keys of :func:`probe_features` (which packs ``linear_correct``).
    """
    cfg.check_float("weight_decay", weight_decay, 0.0)
    cfg.check_int("max_iter", max_iter, 1)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    xtr, xte = _standardize(train_x.float(), test_x.float())
    # (F, N): the logits as w^T x^T and their gradient as g^T x both take BLAS's fast paths;
    # x w and x^T g (a skinny product against a transposed x) ran 2-6x slower on a CPU
    xtr_t = xtr.T.contiguous()
    gen = torch.Generator().manual_seed(seed)
    w = (0.01 * torch.randn(xtr.shape[1], num_classes, generator=gen)).requires_grad_()
    b = torch.zeros(num_classes, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_change=1e-10
    )

    def closure() -> Tensor:
        opt.zero_grad()
        logits = (w.T @ xtr_t).T + b  # (N, C)
        loss = F.cross_entropy(logits, train_y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        logits = xte @ w + b  # (M, C)
        correct = logits.argmax(1) == test_y
        return {
            "linear_accuracy": 100.0 * correct.double().mean().item(),
            "linear_loss": F.cross_entropy(logits, test_y).item(),
            "linear_correct": correct,
        }


def mean_classifier(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, normalize: bool = True
) -> dict[str, Any]:
    """Centroid classifier (Arora et al. 2019, Nozawa & Sato 2021): score_c = f(x) . mu_c.

    With ``normalize`` the features are L2-normalised first (the means are not renormalised).
    Returns ``mean_accuracy`` (%) and ``mean_correct`` ``(M,)`` bool, as :func:`probe_features`.
    """
    if normalize:
        train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    means = torch.zeros(num_classes, train_x.shape[1], dtype=train_x.dtype)
    means.index_add_(0, train_y, train_x)
    means /= torch.bincount(train_y, minlength=num_classes).clamp_min(1)[:, None].to(train_x.dtype)
    correct = (test_x @ means.T).argmax(1) == test_y  # (M, C) -> (M,)
    return {"mean_accuracy": 100.0 * correct.double().mean().item(), "mean_correct": correct}


def knn_classifier(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    k: int = 20,
    chunk: int = 1024,
) -> dict[str, Any]:
    """k nearest neighbours by cosine similarity, majority vote (ties to the smaller label).

    Returns ``knn_accuracy`` (%) and ``knn_correct`` ``(M,)`` bool, as :func:`probe_features`.
    """
    cfg.check_int("k", k, 1, train_x.shape[0])
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    correct = []
    for i in range(0, test_x.shape[0], chunk):
        sims = test_x[i : i + chunk] @ train_x.T  # (m, N)
        nn_idx = sims.topk(k, dim=1).indices  # (m, k)
        votes = F.one_hot(train_y[nn_idx], num_classes).sum(1)  # (m, C)
        correct.append(votes.argmax(1) == test_y[i : i + chunk])
    hits = torch.cat(correct)
    return {"knn_accuracy": 100.0 * hits.double().mean().item(), "knn_correct": hits}


def pack_correct(correct: Tensor) -> str:
    """A ``(M,)`` bool tensor as text for a JSON cache: base64 of its bits (M / 6 characters)."""
    bits = np.packbits(correct.detach().cpu().numpy().astype(bool))
    return base64.b64encode(bits.tobytes()).decode("ascii")


def unpack_correct(text: str, size: int) -> np.ndarray:
    """The inverse of :func:`pack_correct`: ``(size,)`` bool array."""
    bits = np.frombuffer(base64.b64decode(text), dtype=np.uint8)
    out = np.unpackbits(bits)[:size].astype(bool)
    if out.shape != (size,):
        raise ValueError(f"the packed vector holds {out.size} entries, not size={size}")
    return out


def unpack_rows(packed: Sequence[str], sizes: Sequence[int]) -> np.ndarray:
    """``(S, M)`` bool: :func:`unpack_correct` of each of ``S`` packed vectors (one per run)."""
    return np.stack([unpack_correct(t, int(m)) for t, m in zip(packed, sizes, strict=True)])


def correct_matrix(rows: Any, column: str) -> np.ndarray:
    """``(S, M)`` bool: :func:`unpack_rows` of a table with one row per run, its packed
    per-image results in ``column`` (e.g. ``linear_correct``) and their size in ``num_test``."""
    return unpack_rows(list(rows[column]), list(rows["num_test"]))


def probe_features(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, k: int = 20
) -> dict[str, Any]:
    """All three probes on one pair of feature sets, as a flat JSON-ready dict.

    ``linear_accuracy``, ``linear_loss``, ``mean_accuracy``, ``knn_accuracy`` (%),
    ``num_test`` and, per probe, which test samples it got right (``*_correct``, packed by
    :func:`pack_correct`), for paired comparisons of two encoders on the same test set.
    The probes are fitted on at least two samples that hold every class of the test set (a
    class never seen would cap the accuracy silently).
    """
    missing = sorted(set(test_y.tolist()) - set(train_y.tolist()))
    if train_x.shape[0] < 2 or missing:
        raise ValueError(
            f"the probes' training set has {train_x.shape[0]} samples, without classes "
            f"{missing} of the test set: fit them on at least two samples holding every class "
            "(a chapter's probe_train_size)"
        )
    lin = linear_probe(train_x, train_y, test_x, test_y)
    mean = mean_classifier(train_x, train_y, test_x, test_y)
    knn = knn_classifier(train_x, train_y, test_x, test_y, k=min(k, train_x.shape[0]))
    return {
        "linear_accuracy": lin["linear_accuracy"],
        "linear_loss": lin["linear_loss"],
        "mean_accuracy": mean["mean_accuracy"],
        "knn_accuracy": knn["knn_accuracy"],
        "num_test": int(test_y.shape[0]),
        "linear_correct": pack_correct(lin["linear_correct"]),
        "mean_correct": pack_correct(mean["mean_correct"]),
        "knn_correct": pack_correct(knn["knn_correct"]),
    }


def evaluate_model(
    model: nn.Module,
    data: Dataset,
    *,
    which: tuple[str, ...] = ("backbone",),
    device: str = "cpu",
) -> dict[str, Any]:
    """:func:`probe_features` on each feature set of ``which``: ``backbone`` (keys as they are)
    and ``projection`` (keys prefixed ``projection_``), trained on every training image of
    ``data`` and scored on every test image."""
    cfg.check_instance("model", model, nn.Module, "a trained run's is run.load_model()")
    cfg.check_instance("data", data, Dataset, 'negatives.load_dataset("digits"), say')
    out: dict[str, Any] = {}
    for w in which:
        cfg.check_choice("which", w, FEATURES)
        prefix = "" if w == "backbone" else "projection_"
        tr = extract_features(model, data.train_images, which=w, device=device)
        te = extract_features(model, data.test_images, which=w, device=device)
        for key, value in probe_features(tr, data.train_labels, te, data.test_labels).items():
            out[prefix + key] = value
    return out


def evaluate_run(run: Any, data: Dataset, *, device: str = "cpu") -> dict[str, Any]:
    """:func:`evaluate_model` of a trained run's backbone on ``data``, cached with the run (one
    evaluation key for every chapter, so a run that two chapters share is probed once)."""
    params = {"data": data.fingerprint, "which": "backbone", "version": PROBE_VERSION}
    return run.evaluate(
        "probes", params, lambda: evaluate_model(run.load_model(device), data, device=device)
    )


def pixel_baseline(data: Dataset) -> dict[str, float]:
    """The probes on raw pixels (flattened, scaled to [-1, 1])."""
    tr = augment.to_float(data.train_images).flatten(1)
    te = augment.to_float(data.test_images).flatten(1)
    return probe_features(tr, data.train_labels, te, data.test_labels)


def random_encoder_baseline(
    data: Dataset,
    *,
    arch: str,
    width: int,
    proj_hidden: int,
    proj_dim: int,
    grid: int = 1,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, float]:
    """The probes on a randomly initialised encoder of the same architecture (backbone features,
    pooled over the same ``grid``)."""
    torch.manual_seed(seed)
    model = build_model(
        arch,
        data.train_images.shape[1],
        data.train_images.shape[-1],
        width=width,
        proj_hidden=proj_hidden,
        proj_dim=proj_dim,
        input_dim=data.train_images[0].numel(),
        grid=grid,
    )
    tr = extract_features(model, data.train_images, device=device)
    te = extract_features(model, data.test_images, device=device)
    return probe_features(tr, data.train_labels, te, data.test_labels)


def baselines(config: Any, data: Dataset, store: Any) -> dict[str, dict[str, Any]]:
    """The probes on raw pixels and on a randomly initialised (seed 0) encoder of ``config``'s
    architecture (its ``arch``, ``width``, head and ``feature_grid``), fitted on ``data``'s
    training images and scored on its test images, each computed once in ``store``
    (:meth:`negatives.runs.RunStore.cached`, keyed by the data's fingerprint): what a trained
    encoder's probe is measured against. Keys ``"raw pixels"`` and ``"random <arch> encoder"``.
    """
    pixels = store.cached("baseline-pixels", pixel_baseline, data=data, version=PROBE_VERSION)
    return {
        "raw pixels": pixels,
        f"random {config.arch} encoder": random_baseline(config, data, store),
    }


def random_baseline(config: Any, data: Dataset, store: Any) -> dict[str, Any]:
    """:func:`random_encoder_baseline` of ``config``'s architecture (seed 0) on ``data``,
    computed once in ``store``: the random encoder of :func:`baselines`, for data of any kind
    (the latent-class vectors too, which have no pixels to probe)."""
    return store.cached(
        "baseline-random-encoder",
        random_encoder_baseline,
        data=data,
        arch=config.arch,
        width=config.width,
        proj_hidden=config.proj_hidden,
        proj_dim=config.proj_dim,
        grid=config.feature_grid,
        seed=0,
        version=PROBE_VERSION,
    )
