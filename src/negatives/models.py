"""Encoders for the study: a small CNN, an MLP, the CIFAR ResNet-18, and the projection head.

Every backbone maps ``(B, C, H, W)`` images to ``(B, out_dim)`` features ``h``; the projection
head maps ``h`` to the contrastive embedding ``z`` (SimCLR, Chen et al. 2020, section 2.1;
MoCo v2, Chen et al. 2020b). Losses normalise ``z`` themselves or are given it normalised; the
models never normalise, so that probes can read either ``h`` or ``z``.

Nothing here depends on the device or dtype: the models work with ``channels_last`` inputs
and under ``torch.autocast`` (pooling is a mean over the spatial axes, flattening goes through
``torch.flatten``, which copies a channels-last tensor into the logical order).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn

from negatives.config import check_choice, check_int

ARCHS: tuple[str, ...] = ("cnn-small", "mlp", "resnet18-cifar")


class SplitBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are computed per group of consecutive samples.

    MoCo's shuffle-BN (He et al. 2020, section 3.3) computes each GPU's batch-norm statistics
    over its own share of the batch; this is that on one device, as MoCo's official one-GPU
    CIFAR demo does (``SplitBatchNorm``): ``(B, ...)`` is cut into ``groups`` blocks of
    consecutive samples (``Tensor.tensor_split``, so sizes may differ by one), each normalised
    with its own mean and variance. The running statistics are updated with the mean of the
    groups' statistics. In eval mode, or with ``groups == 1``, it is ``nn.BatchNorm1d/2d``
    exactly; its parameters and buffers have the same names, so state dicts are interchangeable.
    """

    def __init__(
        self,
        num_features: int,
        groups: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.groups = check_int("groups", groups, 1)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in (2, 3, 4):
            raise ValueError(f"expected a (B, C), (B, C, L) or (B, C, H, W) input, got {x.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.groups == 1:
            return super().forward(x)
        g = self.groups
        if x.shape[0] < 2 * g:
            raise ValueError(
                f"a batch of {x.shape[0]} cannot be split into {g} batch-norm groups of "
                "at least 2 samples"
            )
        momentum = self.momentum
        tracking = self.track_running_stats and self.running_mean is not None
        if tracking:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked.add_(1)
            if momentum is None:  # cumulative average, as nn.BatchNorm
                momentum = 1.0 / float(self.num_batches_tracked)
        if x.shape[0] % g == 0 and x.dim() in (2, 4):
            weight = self.weight if self.affine else torch.ones_like(self.running_mean)
            bias = self.bias if self.affine else torch.zeros_like(self.running_mean)
            y, mean, var = _GroupBatchNorm.apply(x, weight, bias, self.eps, g)
            if tracking:
                with torch.no_grad():  # the groups' statistics, averaged, as MoCo's demo
                    count = x.numel() // (g * x.shape[1])
                    unbiased = var * (count / max(count - 1, 1))  # (G, C)
                    self.running_mean.lerp_(mean.mean(0), momentum or 0.0)
                    self.running_var.lerp_(unbiased.mean(0), momentum or 0.0)
            return y
        outs, means, variances = [], [], []
        for chunk in x.tensor_split(g, dim=0):  # uneven groups: one call per group
            # each group updates its own copy of the running statistics, averaged below
            mean = self.running_mean.clone() if tracking else None
            var = self.running_var.clone() if tracking else None
            outs.append(
                F.batch_norm(
                    chunk, mean, var, self.weight, self.bias, True, momentum or 0.0, self.eps
                )
            )
            means.append(mean)
            variances.append(var)
        if tracking:
            with torch.no_grad():
                self.running_mean.copy_(torch.stack(means).mean(0))
                self.running_var.copy_(torch.stack(variances).mean(0))
        return torch.cat(outs, dim=0)


def _layout(x: Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 else torch.contiguous_format


def _grouped(x: Tensor, groups: int) -> Tensor:
    """``(G, M, C)`` view of ``x``'s memory, which must be in :func:`_layout`: channel last."""
    if x.dim() == 4:
        x = x.permute(0, 2, 3, 1)  # channels-last memory (N, H, W, C)
    return x.view(groups, -1, x.shape[-1])


class _GroupBatchNorm(torch.autograd.Function):
    """Batch norm of ``x`` (``(B, C)`` or ``(B, C, H, W)``) per group of ``B / G`` consecutive
    samples, with the affine ``weight``, ``bias`` ``(C,)``. Returns ``y`` (``x``'s shape,
    dtype and, for images, channels-last layout) and the groups' batch mean and biased
    variance ``(G, C)``.

    Written out (forward and backward) so that it works on a ``(G, M, C)`` view of the
    activations in place: one ``F.batch_norm`` per group, or groups moved into channels, cost
    2-4x more on a CPU (copies, kernels slow on small batches, and an in-place ReLU on a view).
    Sums run in ``x``'s dtype (accumulated in float32 by torch, the result rounded: under bf16
    autocast each statistic carries about 0.2% relative error, far below the sampling noise of
    a group's statistics); the variance and the backward pass use centred values, so nothing
    cancels. A float32 sum of bf16 values (``dtype=``) would copy the tensor first.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float, groups: int):  # type: ignore[override]
        layout = _layout(x)
        x = x.contiguous(memory_format=layout)
        v = _grouped(x, groups)  # (G, M, C)
        m = v.shape[1]
        mean = v.sum(dim=1, keepdim=True).float() / m  # (G, 1, C)
        centred = v - mean.to(x.dtype)
        var = (centred * centred).sum(dim=1, keepdim=True).float() / m
        rstd = torch.rsqrt(var + eps)
        scale = weight.float() * rstd  # (G, 1, C)
        shift = bias.float() - mean * scale
        y = torch.empty_like(x, memory_format=layout)
        torch.addcmul(shift.to(x.dtype), v, scale.to(x.dtype), out=_grouped(y, groups))
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return y, mean[:, 0], var[:, 0]

    @staticmethod
    def backward(ctx, dy: Tensor, _dmean: Tensor, _dvar: Tensor):  # type: ignore[override]
        x, weight, mean, rstd = ctx.saved_tensors
        groups, layout = ctx.groups, _layout(x)
        v = _grouped(x, groups)
        g = _grouped(dy.contiguous(memory_format=layout), groups)  # (G, M, C)
        m = v.shape[1]
        # per (group, channel): sums of dy and of dy * xhat, with xhat = (x - mean) * rstd
        sum_dy = g.sum(dim=1, keepdim=True).float()  # (G, 1, C)
        sum_dy_xhat = (g * (v - mean.to(x.dtype))).sum(dim=1, keepdim=True).float() * rstd
        # dx = w rstd (dy - sum_dy / m - xhat sum_dy_xhat / m) = a dy + b x + c
        a = weight.float() * rstd
        b = -a * rstd * sum_dy_xhat / m
        c = -a * sum_dy / m - b * mean
        dx = torch.empty_like(x, memory_format=layout)
        dv = _grouped(dx, groups)
        torch.addcmul(c.to(x.dtype), v, b.to(x.dtype), out=dv)
        dv.addcmul_(g, a.to(x.dtype))
        dweight = sum_dy_xhat.sum(dim=(0, 1)).to(weight.dtype)
        dbias = sum_dy.sum(dim=(0, 1)).to(weight.dtype)
        return dx, dweight, dbias, None, None


def split_batchnorm(module: nn.Module, groups: int) -> nn.Module:
    """Replace every ``BatchNorm1d/2d`` inside ``module`` by a :class:`SplitBatchNorm` with
    ``groups`` groups that shares its parameters and buffers (in place; returns ``module``)."""
    groups = check_int("groups", groups, 1)
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d | SplitBatchNorm):
            new = SplitBatchNorm(
                child.num_features,
                groups,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
            )
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean = child.running_mean
                new.running_var = child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(module, name, new)
        else:
            split_batchnorm(child, groups)
    return module


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    # No conv bias: the batch norm that follows has its own shift.
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def grid_pool(x: Tensor, grid: int) -> Tensor:
    """The feature map ``(B, C, h, w)`` average-pooled over a ``grid x grid`` grid of regions
    and flattened: ``(B, C * grid**2)``, region-major within each channel. ``grid=1`` is the
    global average pool.

    Why more than one region: a global average keeps what a channel found, not where. On
    Fashion-MNIST a linear probe on a 2x2 grid of the small CNN's last 4x4 map scores 3.5 to 4
    points more than on its global average after one epoch of SimCLR or MoCo v2 (the ladder of
    ``benchmarks/speedrun.py``), the way Coates & Ng (2011) pooled quadrants of a single layer's
    features. It helps a random encoder too, so the book measures every encoder against a random
    one of the same architecture (:func:`negatives.probes.baselines`).
    """
    if grid == 1:
        return x.mean(dim=(2, 3))
    return torch.flatten(F.adaptive_avg_pool2d(x, grid), 1)


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks and an average pool over a ``grid x grid`` grid of the last
    feature map (:func:`grid_pool`); ``out_dim = 4 * width * grid**2``.

    Widths ``w, 2w, 2w, 4w`` with strides ``s, 2, 1, 2``, where the stem stride ``s`` is 2 for
    images of side >= 16 (28x28 -> 14 -> 7 -> 7 -> 4) and 1 for smaller ones (8x8 -> 8 -> 4 ->
    4 -> 2). Downsampling early keeps it fast on a CPU: with ``width=32`` it has 130k
    parameters and trains (forward + backward + SGD step, batch 256, 28x28) at about 5,800
    images/s on two idle CPU cores, 8,700 with ``channels_last`` (our measurement).
    """

    def __init__(self, in_channels: int, image_size: int, width: int = 32, grid: int = 1) -> None:
        super().__init__()
        stem_stride = 2 if image_size >= 16 else 1
        w = width
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, w, stem_stride),
            *_conv_bn_relu(w, 2 * w, 2),
            *_conv_bn_relu(2 * w, 2 * w, 1),
            *_conv_bn_relu(2 * w, 4 * w, 2),
        )
        self.grid = grid
        self.out_dim: int = 4 * w * grid * grid

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) -> (B, 4w, h, w) -> average pool per grid region -> (B, 4w g^2)
        return grid_pool(self.features(x), self.grid)


class MLP(nn.Module):
    """Flatten, then two hidden layers ``Linear-BN-ReLU`` of ``width`` units; ``out_dim = width``.

    For the latent-class vectors stored as ``(N, 1, 1, dim)`` images.
    """

    def __init__(self, input_dim: int, width: int = 32) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.net = nn.Sequential(
            nn.Linear(input_dim, width),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
            nn.Linear(width, width),
            nn.BatchNorm1d(width),
            nn.ReLU(inplace=True),
        )
        self.out_dim: int = width

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) -> (B, C*H*W) -> (B, width)
        x = torch.flatten(x, 1)
        if x.shape[1] != self.input_dim:
            raise ValueError(
                f"input has {x.shape[1]} features per sample (shape {tuple(x.shape)}), "
                f"but the MLP was built with input_dim={self.input_dim}"
            )
        return self.net(x)


class CifarResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) with the CIFAR stem: 3x3 stride-1 conv and no max-pool.

    This is the variant of the SimCLR and MoCo CIFAR code (and of Nozawa & Sato 2021's
    experiments): ``torchvision.models.resnet18(weights=None)`` with ``conv1`` replaced,
    ``maxpool`` and ``fc`` made identities; ``out_dim = 512 * grid**2`` (:func:`grid_pool`;
    the papers' ``grid=1`` is the global average pool).
    """

    def __init__(self, in_channels: int = 3, grid: int = 1) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        net.avgpool = nn.AdaptiveAvgPool2d(grid)  # torchvision flattens after it
        self.net = net
        self.out_dim: int = 512 * grid * grid

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) -> (B, 512 g^2)
        return self.net(x)


def build_backbone(
    arch: str,
    in_channels: int,
    image_size: int,
    *,
    width: int = 32,
    input_dim: int | None = None,
    grid: int = 1,
) -> nn.Module:
    """The encoder ``f`` named by ``arch``; the returned module has an ``out_dim`` attribute.

    - ``cnn-small``: :class:`SmallCNN`, images of side >= 8, ``out_dim = 4 * width * grid**2``.
    - ``mlp``: :class:`MLP` over ``input_dim`` features (default ``in_channels * image_size**2``;
      give it explicitly for non-square storage such as ``(N, 1, 1, dim)``), ``out_dim = width``.
    - ``resnet18-cifar``: :class:`CifarResNet18`, images of side >= 8, ``out_dim = 512 *
      grid**2``; ``width`` is ignored (the architecture is the papers' one).

    ``grid``: the last feature map is average-pooled over ``grid x grid`` regions
    (:func:`grid_pool`); the MLP has no feature map (``grid`` must be 1).
    """
    check_choice("arch", arch, ARCHS)
    in_channels = check_int("in_channels", in_channels, 1)
    width = check_int("width", width, 1)
    grid = check_int("grid", grid, 1)
    if arch == "mlp":
        if grid != 1:
            raise ValueError(f"grid={grid}: arch='mlp' has no feature map to pool; use grid=1")
        image_size = check_int("image_size", image_size, 1)
        if input_dim is None:
            input_dim = in_channels * image_size * image_size
        input_dim = check_int("input_dim", input_dim, 1)
        return MLP(input_dim, width)
    image_size = check_int("image_size", image_size, 8)
    if arch == "cnn-small":
        return SmallCNN(in_channels, image_size, width, grid)
    return CifarResNet18(in_channels, grid)


class ProjectionHead(nn.Module):
    """``g``: Linear-BN-ReLU-Linear, the non-linear head of SimCLR (eq. 1's ``g(h)``) and MoCo v2."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__()
        in_dim = check_int("in_dim", in_dim, 1)
        hidden_dim = check_int("hidden_dim", hidden_dim, 1)
        out_dim = check_int("out_dim", out_dim, 1)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),  # bias is redundant before BN
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
        self.out_dim: int = out_dim

    def forward(self, h: Tensor) -> Tensor:
        # h: (B, F) -> z: (B, P)
        return self.net(h)


class ContrastiveModel(nn.Module):
    """Backbone ``f`` plus projection head ``g``: ``x -> (h = f(x), z = g(h))``."""

    def __init__(self, backbone: nn.Module, proj_hidden: int, proj_dim: int) -> None:
        super().__init__()
        feature_dim = getattr(backbone, "out_dim", None)
        if not isinstance(feature_dim, int) or feature_dim < 1:
            raise ValueError(
                f"backbone must have an integer attribute out_dim >= 1, got {feature_dim!r}"
            )
        self.backbone = backbone
        self.head = ProjectionHead(feature_dim, proj_hidden, proj_dim)
        self.feature_dim: int = feature_dim
        self.proj_dim: int = self.head.out_dim
        self.input_shape: tuple[int, ...] | None = None  # build_model sets it

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # x: (B, C, H, W) -> h: (B, F) -> z: (B, P); neither is normalised
        h = self.backbone(x)
        z = self.head(h)
        return h, z


def build_model(
    arch: str,
    in_channels: int,
    image_size: int,
    *,
    width: int = 32,
    proj_hidden: int = 128,
    proj_dim: int = 64,
    input_dim: int | None = None,
    grid: int = 1,
) -> ContrastiveModel:
    """:func:`build_backbone` followed by a :class:`ProjectionHead` ``out_dim -> proj_hidden -> proj_dim``."""
    backbone = build_backbone(
        arch, in_channels, image_size, width=width, input_dim=input_dim, grid=grid
    )
    proj_hidden = check_int("proj_hidden", proj_hidden, 1)
    proj_dim = check_int("proj_dim", proj_dim, 1)
    model = ContrastiveModel(backbone, proj_hidden, proj_dim)
    # what the model takes per image, checked by the probes (a CNN's global pool would accept
    # any size and score it); the MLP takes its vectors in whatever shape they hold
    model.input_shape = None if arch == "mlp" else (in_channels, image_size, image_size)
    return model
