"""Tests for negatives.models: shapes, gradients, parameter counts, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from negatives.models import (
    ARCHS,
    ContrastiveModel,
    ProjectionHead,
    build_backbone,
    build_model,
    grid_pool,
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


def test_grid_pool_against_a_loop_over_regions() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4, 4).contiguous(memory_format=torch.channels_last)
    assert torch.allclose(grid_pool(x, 1), x.mean(dim=(2, 3)))
    out = grid_pool(x, 2)  # (B, C * 4): channel-major, then row-major regions
    naive = torch.stack(
        [x[:, c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].mean(dim=(1, 2))
         for c in range(5) for i in range(2) for j in range(2)],
        dim=1,
    )  # fmt: skip
    assert out.shape == (3, 20) and torch.allclose(out, naive, atol=1e-6)


@pytest.mark.parametrize("arch, features", [("cnn-small", 4 * 8 * 4), ("resnet18-cifar", 512 * 4)])
def test_grid_features_are_the_regions_of_the_last_map(arch: str, features: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 1, 28, width=8, proj_hidden=16, proj_dim=12, grid=2).eval()
    x = torch.randn(2, 1, 28, 28)
    h, z = model(x)
    assert model.backbone.out_dim == features and h.shape == (2, features) and z.shape == (2, 12)
    # the global average pool is the mean of the four regions' averages
    plain = build_model(arch, 1, 28, width=8, proj_hidden=16, proj_dim=12).eval()
    plain.backbone.load_state_dict(model.backbone.state_dict())
    h1, _ = plain(x)
    assert torch.allclose(h.view(2, -1, 4).mean(2), h1, atol=1e-5)
    with pytest.raises(ValueError, match="grid=2: arch='mlp'"):
        build_model("mlp", 1, 28, width=8, grid=2)
    with pytest.raises(ValueError, match="grid=0"):
        build_model("cnn-small", 1, 28, width=8, grid=0)


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


# -- MoCo's shuffle-BN on one device -----------------------------------------------------------


def _group_bn(x: torch.Tensor, groups: int, weight, bias, eps: float = 1e-5) -> torch.Tensor:
    """The naive definition: normalise each block of consecutive samples by its own stats."""
    out = []
    for chunk in x.tensor_split(groups, dim=0):
        dims = [0] + list(range(2, x.dim()))
        mean = chunk.mean(dims, keepdim=True)
        var = chunk.var(dims, unbiased=False, keepdim=True)
        shape = [1, -1] + [1] * (x.dim() - 2)
        out.append((chunk - mean) / torch.sqrt(var + eps) * weight.view(shape) + bias.view(shape))
    return torch.cat(out)


@pytest.mark.parametrize(
    "shape, channels_last",
    [
        ((32, 5), False),
        ((32, 3, 6), False),
        ((32, 4, 5, 5), False),
        ((32, 4, 5, 5), True),
        ((30, 4, 3, 3), True),
    ],  # 30 = uneven groups of 8 and 7
)
def test_split_batchnorm_matches_per_group_normalisation(shape, channels_last) -> None:
    from negatives.models import SplitBatchNorm

    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randn(*shape, generator=g) + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    bn = SplitBatchNorm(shape[1], groups=4).train()
    with torch.no_grad():
        bn.weight.normal_(generator=g)
        bn.bias.normal_(generator=g)
    y = bn(x)
    expected = _group_bn(x, 4, bn.weight, bn.bias)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)
    # gradients agree with the naive definition too
    w = torch.randn(y.shape, generator=g)
    (gx,) = torch.autograd.grad((y * w).sum(), x)
    (ex,) = torch.autograd.grad((expected * w).sum(), x)
    torch.testing.assert_close(gx, ex, rtol=1e-3, atol=1e-4)
    # running statistics: the mean over groups of each group's batch statistics (momentum 0.1)
    dims = [0] + list(range(2, x.dim()))
    chunks = x.detach().tensor_split(4, dim=0)
    mean = torch.stack([c.mean(dims) for c in chunks]).mean(0)
    var = torch.stack([c.var(dims, unbiased=True) for c in chunks]).mean(0)
    torch.testing.assert_close(bn.running_mean, 0.1 * mean, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(bn.running_var, 0.9 + 0.1 * var, rtol=1e-4, atol=1e-6)


def test_split_batchnorm_is_batchnorm_in_eval_and_keeps_state_dict_names() -> None:
    from negatives.models import SplitBatchNorm, split_batchnorm

    torch.manual_seed(0)
    plain = build_model("cnn-small", 1, 8, width=4, proj_hidden=8, proj_dim=4)
    split = split_batchnorm(copy.deepcopy(plain), 2)
    assert sum(isinstance(m, SplitBatchNorm) for m in split.modules()) == 5
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in split.modules())
    assert list(split.state_dict()) == list(plain.state_dict())
    x = torch.randn(16, 1, 8, 8)
    plain.eval(), split.eval()
    torch.testing.assert_close(split(x)[1], plain(x)[1])
    # groups == 1 trains exactly as nn.BatchNorm does
    one = split_batchnorm(copy.deepcopy(plain), 1).train()
    plain.train()
    torch.testing.assert_close(one(x)[1], plain(x)[1])
    with pytest.raises(ValueError, match="groups"):
        SplitBatchNorm(4, groups=8).train()(torch.randn(10, 4))
