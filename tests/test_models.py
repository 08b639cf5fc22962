"""Tests for negatives.models: shapes, gradients, parameter counts, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from negatives.models import (
    ARCHS,
    ContrastiveModel,
    ProjectionHead,
    build_backbone,
    build_model,
)


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("image_size", [8, 28, 32])
@pytest.mark.parametrize("arch", ["cnn-small", "resnet18-cifar"])
def test_conv_backbones_output_shapes(arch: str, image_size: int) -> None:
    torch.manual_seed(0)
    channels = 3 if image_size == 32 else 1
    model = build_model(arch, channels, image_size, width=8, proj_hidden=16, proj_dim=12)
    x = torch.randn(2 if arch == "resnet18-cifar" else 4, channels, image_size, image_size)
    h, z = model(x)
    expected_features = 32 if arch == "cnn-small" else 512  # 4 * width, or ResNet-18's 512
    assert model.backbone.out_dim == expected_features
    assert h.shape == (x.shape[0], expected_features)
    assert z.shape == (x.shape[0], 12)
    assert torch.isfinite(h).all() and torch.isfinite(z).all()


@pytest.mark.parametrize("image_size", [8, 28, 32])
def test_mlp_output_shapes(image_size: int) -> None:
    model = build_model("mlp", 2, image_size, width=16, proj_hidden=8, proj_dim=4)
    h, z = model(torch.randn(5, 2, image_size, image_size))
    assert h.shape == (5, 16) and z.shape == (5, 4)


def test_mlp_latent_vectors_with_input_dim() -> None:
    # latent-class vectors are stored as (N, 1, 1, dim): not square, so input_dim is given
    model = build_model("mlp", 1, 1, width=16, input_dim=20, proj_hidden=8, proj_dim=4)
    h, z = model(torch.randn(6, 1, 1, 20))
    assert h.shape == (6, 16) and z.shape == (6, 4)
    with pytest.raises(ValueError, match="input_dim"):
        model(torch.randn(6, 1, 1, 21))


def test_outputs_not_normalised() -> None:
    torch.manual_seed(0)
    model = build_model("cnn-small", 1, 8, width=8)
    _, z = model(torch.randn(8, 1, 8, 8))
    assert not torch.allclose(z.norm(dim=1), torch.ones(8))


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch: str) -> None:
    torch.manual_seed(0)
    size = 8
    model = build_model(arch, 1, size, width=8, proj_hidden=16, proj_dim=8)
    x = torch.randn(3, 1, size, size)
    h, z = model(x)
    (z.square().sum() + h.square().sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_channels_last_matches_contiguous() -> None:
    torch.manual_seed(0)
    model = build_model("cnn-small", 3, 16, width=8).eval()
    x = torch.randn(4, 3, 16, 16)
    h1, z1 = model(x)
    cl = model.to(memory_format=torch.channels_last)
    h2, z2 = cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(h1, h2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(z1, z2, rtol=1e-4, atol=1e-5)


def test_parameter_counts() -> None:
    # MLP, by hand: Linear(d, w) + BN(w) + Linear(w, w) + BN(w)
    d, w = 20, 16
    mlp = build_backbone("mlp", 1, 1, width=w, input_dim=d)
    assert _n_params(mlp) == (d * w + w) + 2 * w + (w * w + w) + 2 * w
    # projection head, by hand: Linear(F, H, no bias) + BN(H) + Linear(H, P)
    head = ProjectionHead(32, 24, 8)
    assert _n_params(head) == 32 * 24 + 2 * 24 + 24 * 8 + 8
    # small CNN, by hand: 3x3 convs w, 2w, 2w, 4w without bias, each followed by BN
    cnn = build_backbone("cnn-small", 1, 28, width=32)
    w = 32
    convs = 9 * (1 * w + w * 2 * w + 2 * w * 2 * w + 2 * w * 4 * w)
    bns = 2 * (w + 2 * w + 2 * w + 4 * w)
    assert _n_params(cnn) == convs + bns
    assert _n_params(cnn) < 200_000  # small enough to train on a CPU
    # CIFAR ResNet-18: torchvision's 11,689,512 minus fc (513,000) minus the 7x7 stem
    # (9,408) plus a 3x3 stem (1,728)
    resnet = build_backbone("resnet18-cifar", 3, 32)
    assert _n_params(resnet) == 11_689_512 - 513_000 - 9_408 + 1_728
    assert not any(isinstance(m, nn.MaxPool2d) for m in resnet.modules())
    stem = resnet.net.conv1
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)


def test_resnet_keeps_resolution_in_the_stem() -> None:
    resnet = build_backbone("resnet18-cifar", 3, 32).eval()
    seen: list[tuple[int, ...]] = []
    resnet.net.layer1.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    resnet(torch.randn(1, 3, 32, 32))
    assert seen == [(1, 64, 32, 32)]  # no stride-2 stem, no max-pool


def test_errors_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="arch"):
        build_model("resnet50", 3, 32)
    with pytest.raises(ValueError, match="arch"):
        build_backbone("vit", 3, 32)
    with pytest.raises(ValueError, match="in_channels"):
        build_backbone("cnn-small", 0, 28)
    with pytest.raises(ValueError, match="image_size"):
        build_backbone("cnn-small", 1, 4)
    with pytest.raises(ValueError, match="width"):
        build_backbone("mlp", 1, 8, width=0)
    with pytest.raises(ValueError, match="input_dim"):
        build_backbone("mlp", 1, 8, input_dim=0)
    with pytest.raises(ValueError, match="proj_dim"):
        build_model("mlp", 1, 8, proj_dim=0)
    with pytest.raises(ValueError, match="proj_hidden"):
        build_model("mlp", 1, 8, proj_hidden=-1)
    with pytest.raises(ValueError, match="out_dim"):
        ContrastiveModel(nn.Linear(3, 3), 8, 4)
