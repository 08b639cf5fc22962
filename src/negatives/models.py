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
import torchvision
from torch import Tensor, nn

from negatives.config import check_choice, check_int

ARCHS: tuple[str, ...] = ("cnn-small", "mlp", "resnet18-cifar")


def _conv_bn_relu(in_channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    # No conv bias: the batch norm that follows has its own shift.
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks and a global average pool; ``out_dim = 4 * width``.

    Widths ``w, 2w, 2w, 4w`` with strides ``s, 2, 1, 2``, where the stem stride ``s`` is 2 for
    images of side >= 16 (28x28 -> 14 -> 7 -> 7 -> 4) and 1 for smaller ones (8x8 -> 8 -> 4 ->
    4 -> 2). Downsampling early keeps it fast on a CPU: with ``width=32`` it has 130k
    parameters and trains (forward + backward + SGD step, batch 256, 28x28) at about 5,800
    images/s on two idle CPU cores, 8,700 with ``channels_last`` (our measurement).
    """

    def __init__(self, in_channels: int, image_size: int, width: int = 32) -> None:
        super().__init__()
        stem_stride = 2 if image_size >= 16 else 1
        w = width
        self.features = nn.Sequential(
            *_conv_bn_relu(in_channels, w, stem_stride),
            *_conv_bn_relu(w, 2 * w, 2),
            *_conv_bn_relu(2 * w, 2 * w, 1),
            *_conv_bn_relu(2 * w, 4 * w, 2),
        )
        self.out_dim: int = 4 * w

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) -> (B, 4w, h, w) -> global average pool -> (B, 4w)
        return self.features(x).mean(dim=(2, 3))


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
    ``maxpool`` and ``fc`` made identities; ``out_dim = 512``.
    """

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
        net.fc = nn.Identity()
        self.net = net
        self.out_dim: int = 512

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, C, H, W) -> (B, 512)
        return self.net(x)


def build_backbone(
    arch: str,
    in_channels: int,
    image_size: int,
    *,
    width: int = 32,
    input_dim: int | None = None,
) -> nn.Module:
    """The encoder ``f`` named by ``arch``; the returned module has an ``out_dim`` attribute.

    - ``cnn-small``: :class:`SmallCNN`, images of side >= 8, ``out_dim = 4 * width``.
    - ``mlp``: :class:`MLP` over ``input_dim`` features (default ``in_channels * image_size**2``;
      give it explicitly for non-square storage such as ``(N, 1, 1, dim)``), ``out_dim = width``.
    - ``resnet18-cifar``: :class:`CifarResNet18`, images of side >= 8, ``out_dim = 512``;
      ``width`` is ignored (the architecture is the papers' one).
    """
    check_choice("arch", arch, ARCHS)
    in_channels = check_int("in_channels", in_channels, 1)
    width = check_int("width", width, 1)
    if arch == "mlp":
        image_size = check_int("image_size", image_size, 1)
        if input_dim is None:
            input_dim = in_channels * image_size * image_size
        input_dim = check_int("input_dim", input_dim, 1)
        return MLP(input_dim, width)
    image_size = check_int("image_size", image_size, 8)
    if arch == "cnn-small":
        return SmallCNN(in_channels, image_size, width)
    return CifarResNet18(in_channels)


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
) -> ContrastiveModel:
    """:func:`build_backbone` followed by a :class:`ProjectionHead` ``out_dim -> proj_hidden -> proj_dim``."""
    backbone = build_backbone(arch, in_channels, image_size, width=width, input_dim=input_dim)
    proj_hidden = check_int("proj_hidden", proj_hidden, 1)
    proj_dim = check_int("proj_dim", proj_dim, 1)
    return ContrastiveModel(backbone, proj_hidden, proj_dim)
