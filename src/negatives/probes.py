"""Probes that judge a frozen representation: linear probe, mean (centroid) classifier, k-NN.

The mean classifier is the one of Arora et al. (2019) and Nozawa & Sato (2021): class c's weight
is the mean of its training features, the score is the dot product. Baselines (raw pixels and a
randomly initialised encoder) go through the same probes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from negatives import augment
from negatives import config as cfg
from negatives.data import Dataset
from negatives.models import build_model

FEATURES = ("backbone", "projection")


@torch.no_grad()
def extract_features(
    model: nn.Module,
    images: Tensor,
    *,
    which: str = "backbone",
    batch_size: int = 1024,
    device: str = "cpu",
) -> Tensor:
    """Frozen features of uint8 ``images`` (N, C, H, W) -> float32 (N, F) on the CPU.

    ``which="backbone"`` gives h (before the projection head), ``"projection"`` gives z.
    """
    cfg.check_choice("which", which, FEATURES)
    model = model.to(device).eval()
    out = []
    for chunk in images.split(batch_size):
        h, z = model(augment.to_float(chunk.to(device)))
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
) -> Tensor:
    """Features of ``num_augmentations`` random views of each image -> (N, A, F).

    Used for the mean classifier "averaged over augmentations" of Nozawa & Sato (2021), and
    for z-bar(x) in their d(f) term. Vectors (H = W = 1) are not augmented: every view is x.
    """
    cfg.check_int("num_augmentations", num_augmentations, 1)
    cfg.check_choice("which", which, FEATURES)
    model = model.to(device).eval()
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    views = []
    for _ in range(num_augmentations):
        feats = []
        for chunk in images.split(batch_size):
            chunk = chunk.to(device)
            if chunk.shape[-1] == 1:
                x = augment.to_float(chunk)
            else:
                x = augment.augment(chunk, gen, strength=strength, min_scale=min_scale, flip=flip)
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
) -> dict[str, float]:
    """Multinomial logistic regression on standardised frozen features (full-batch L-BFGS).

    Returns test ``accuracy`` (%) and test cross-entropy ``loss``.
    """
    cfg.check_float("weight_decay", weight_decay, 0.0)
    cfg.check_int("max_iter", max_iter, 1)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    xtr, xte = _standardize(train_x.double(), test_x.double())
    gen = torch.Generator().manual_seed(seed)
    w = (
        0.01 * torch.randn(xtr.shape[1], num_classes, generator=gen, dtype=torch.float64)
    ).requires_grad_()
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ w + b, train_y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        logits = xte @ w + b
        return {
            "accuracy": 100.0 * (logits.argmax(1) == test_y).double().mean().item(),
            "loss": F.cross_entropy(logits, test_y).item(),
        }


def mean_classifier(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, normalize: bool = True
) -> dict[str, float]:
    """Centroid classifier (Arora et al. 2019, Nozawa & Sato 2021): score_c = f(x) . mu_c.

    With ``normalize`` the features are L2-normalised first (the means are not renormalised).
    """
    if normalize:
        train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    means = torch.zeros(num_classes, train_x.shape[1], dtype=train_x.dtype)
    means.index_add_(0, train_y, train_x)
    means /= torch.bincount(train_y, minlength=num_classes).clamp_min(1)[:, None].to(train_x.dtype)
    pred = (test_x @ means.T).argmax(1)  # (M, C)
    return {"accuracy": 100.0 * (pred == test_y).double().mean().item()}


def knn_classifier(
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    k: int = 20,
    chunk: int = 1024,
) -> dict[str, float]:
    """k nearest neighbours by cosine similarity, majority vote (ties to the smaller label)."""
    cfg.check_int("k", k, 1, train_x.shape[0])
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    correct = 0
    for i in range(0, test_x.shape[0], chunk):
        sims = test_x[i : i + chunk] @ train_x.T  # (m, N)
        nn_idx = sims.topk(k, dim=1).indices  # (m, k)
        votes = F.one_hot(train_y[nn_idx], num_classes).sum(1)  # (m, C)
        correct += (votes.argmax(1) == test_y[i : i + chunk]).sum().item()
    return {"accuracy": 100.0 * correct / test_x.shape[0]}


def probe_features(
    train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, k: int = 20
) -> dict[str, float]:
    """All three probes on one pair of feature sets, as a flat dict."""
    lin = linear_probe(train_x, train_y, test_x, test_y)
    return {
        "linear_accuracy": lin["accuracy"],
        "linear_loss": lin["loss"],
        "mean_accuracy": mean_classifier(train_x, train_y, test_x, test_y)["accuracy"],
        "knn_accuracy": knn_classifier(
            train_x, train_y, test_x, test_y, k=min(k, train_x.shape[0])
        )["accuracy"],
    }


def evaluate_model(model: nn.Module, data: Dataset, *, device: str = "cpu") -> dict[str, float]:
    """Probes on backbone features (``*``) and on projections (``projection_*``)."""
    out: dict[str, float] = {}
    for which, prefix in (("backbone", ""), ("projection", "projection_")):
        tr = extract_features(model, data.train_images, which=which, device=device)
        te = extract_features(model, data.test_images, which=which, device=device)
        for key, value in probe_features(tr, data.train_labels, te, data.test_labels).items():
            out[prefix + key] = value
    return out


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
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, float]:
    """The probes on a randomly initialised encoder of the same architecture (backbone features)."""
    torch.manual_seed(seed)
    model = build_model(
        arch,
        data.train_images.shape[1],
        data.train_images.shape[-1],
        width=width,
        proj_hidden=proj_hidden,
        proj_dim=proj_dim,
        input_dim=data.train_images[0].numel(),
    )
    tr = extract_features(model, data.train_images, device=device)
    te = extract_features(model, data.test_images, device=device)
    return probe_features(tr, data.train_labels, te, data.test_labels)
