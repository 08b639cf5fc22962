"""Tests of negatives.augment: batched views against per-image slow references (a hand-written
bilinear sampler, torchvision's adjust_* functions and RandomResizedCrop)."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import RandomResizedCrop

from negatives.augment import (
    ViewParams,
    apply_view,
    augment,
    crop_flip_theta,
    hsv_to_rgb,
    rgb_to_hsv,
    sample_view_params,
    to_float,
)


def _images(b: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=g, dtype=torch.uint8)


def test_to_float() -> None:
    x = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 1, 1, 3)
    assert torch.allclose(to_float(x).flatten(), torch.tensor([-1.0, 1.0, 51 / 127.5 - 1]))
    assert to_float(x).dtype == torch.float32
    with pytest.raises(ValueError, match="uint8"):
        to_float(x.float())


def test_output_shape_dtype_range() -> None:
    for shape in [(16, 1, 28, 28), (8, 3, 32, 32), (4, 3, 12, 20)]:
        x = _images(*shape)
        y = augment(x, torch.Generator().manual_seed(0))
        assert y.shape == x.shape and y.dtype == torch.float32
        assert float(y.min()) >= -1.0 and float(y.max()) <= 1.0


def test_params_ranges_and_per_sample() -> None:
    n = 20000
    g = torch.Generator().manual_seed(0)
    p = sample_view_params(n, 3, g, strength=0.5, min_scale=0.2)
    for f in ("scale", "ratio", "tx", "ty", "brightness", "contrast", "saturation", "hue"):
        t = getattr(p, f)
        assert t.shape == (n,)
    # per-sample: continuous parameters take (almost) n distinct values
    assert len(torch.unique(p.scale)) > 0.99 * n and len(torch.unique(p.tx)) > 0.99 * n
    assert float(p.scale.min()) >= 0.2 and float(p.scale.max()) <= 1.0
    assert float(p.ratio.min()) >= 0.75 - 1e-6 and float(p.ratio.max()) <= 4 / 3 + 1e-6
    assert bool((p.scale * p.ratio <= 1 + 1e-6).all() and (p.scale / p.ratio <= 1 + 1e-6).all())
    assert float(p.tx.abs().max()) <= 1.0
    # probabilities: flip 1/2, jitter 0.8, grayscale 0.2 (4 standard deviations)
    sd = lambda q: 4 * math.sqrt(q * (1 - q) / n)  # noqa: E731
    assert abs(p.flip.double().mean().item() - 0.5) < sd(0.5)
    jittered = (p.brightness != 1).double().mean().item()
    assert abs(jittered - 0.8) < sd(0.8)
    assert abs(p.gray.double().mean().item() - 0.2) < sd(0.2)
    on = p.brightness != 1
    assert float(p.brightness[on].min()) >= 0.6 and float(p.brightness[on].max()) <= 1.4
    assert float(p.hue.abs().max()) <= 0.1
    assert bool((p.hue[~on] == 0).all() and (p.saturation[~on] == 1).all())
    # one channel: no saturation, hue or grayscale; flip=False: no flip
    q = sample_view_params(1000, 1, g, flip=False)
    assert not bool(q.gray.any() or q.flip.any())
    assert bool((q.saturation == 1).all() and (q.hue == 0).all())


def test_crop_distribution_matches_torchvision() -> None:
    """Monte-Carlo: the area fraction and aspect of our crops against torchvision's
    RandomResizedCrop.get_params on a 32x32 image."""
    n = 4000
    p = sample_view_params(n, 3, torch.Generator().manual_seed(3), min_scale=0.2)
    torch.manual_seed(3)
    img = torch.zeros(3, 32, 32)
    tv = [RandomResizedCrop.get_params(img, [0.2, 1.0], [3 / 4, 4 / 3]) for _ in range(n)]
    tv_area = torch.tensor([h * w / 1024 for _, _, h, w in tv])
    tv_logratio = torch.tensor([math.log(w / h) for _, _, h, w in tv])
    # torchvision rounds sizes to whole pixels; the means agree within Monte-Carlo error + that
    assert abs(p.scale.mean().item() - tv_area.mean().item()) < 0.02
    assert abs(p.scale.std().item() - tv_area.std().item()) < 0.02
    assert abs(p.ratio.log().mean().item() - tv_logratio.mean().item()) < 0.02


def test_same_seed_same_views_different_seed_different() -> None:
    x = _images(32, 3, 16, 16)
    a = augment(x, torch.Generator().manual_seed(7))
    b = augment(x, torch.Generator().manual_seed(7))
    c = augment(x, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # views of the same image differ from image to image: each sample has its own crop
    same = _images(1, 3, 16, 16).expand(32, -1, -1, -1).contiguous()
    v = augment(same, torch.Generator().manual_seed(0))
    assert len({round(float(t), 5) for t in v.mean(dim=(1, 2, 3))}) == 32


def test_identity_params_reproduce_input() -> None:
    for shape in [(5, 1, 28, 28), (5, 3, 32, 32), (3, 3, 10, 14)]:
        x = _images(*shape)
        y = apply_view(x, ViewParams.identity(shape[0], aspect=shape[3] / shape[2]))
        assert torch.allclose(y, to_float(x), atol=1e-5)


def test_flip_param_flips() -> None:
    x = _images(6, 3, 9, 13)
    p = ViewParams.identity(6, aspect=13 / 9)
    p = replace(p, flip=torch.tensor([True, False, True, False, False, True]))
    y = apply_view(x, p)
    want = torch.where(p.flip.view(-1, 1, 1, 1), to_float(x).flip(-1), to_float(x))
    assert torch.allclose(y, want, atol=1e-5)


def _bilinear_border(img: torch.Tensor, px: float, py: float) -> torch.Tensor:
    """Slow reference: sample (C, H, W) at pixel coordinates (px, py), edges clamped."""
    _, h, w = img.shape
    px, py = min(max(px, 0.0), w - 1.0), min(max(py, 0.0), h - 1.0)
    x0, y0 = int(math.floor(px)), int(math.floor(py))
    x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
    fx, fy = px - x0, py - y0
    top = img[:, y0, x0] * (1 - fx) + img[:, y0, x1] * fx
    bottom = img[:, y1, x0] * (1 - fx) + img[:, y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def test_crop_against_naive_sampler() -> None:
    """The crop as a per-pixel loop: output pixel centre -> crop box in the input -> bilinear."""
    b, c, h, w = 4, 3, 7, 9
    x = _images(b, c, h, w)
    aspect = w / h
    p = sample_view_params(b, c, torch.Generator().manual_seed(5), aspect=aspect)
    no_jitter = ViewParams.identity(b)
    p = replace(no_jitter, scale=p.scale, ratio=p.ratio, tx=p.tx, ty=p.ty, flip=p.flip)
    p = replace(p, flip=torch.tensor([True, False, True, False]))
    y = apply_view(x, p)
    xf = x.double() / 255
    for k in range(b):
        # crop box in pixels: width/height from area and ratio, centre from (tx, ty)
        cw = math.sqrt(p.scale[k].item() * p.ratio[k].item() * h * w)
        ch = math.sqrt(p.scale[k].item() / p.ratio[k].item() * h * w)
        left = (w - cw) * (p.tx[k].item() + 1) / 2
        top = (h - ch) * (p.ty[k].item() + 1) / 2
        for i in range(h):
            for j in range(w):
                jj = w - 1 - j if p.flip[k] else j
                # output pixel centre (jj + 0.5) / w of the crop -> input pixel coordinate
                px = left + (jj + 0.5) * cw / w - 0.5
                py = top + (i + 0.5) * ch / h - 0.5
                want = _bilinear_border(xf[k], px, py) * 2 - 1
                assert torch.allclose(y[k, :, i, j].double(), want, atol=1e-5), (k, i, j)


def test_theta_is_identity_for_identity_params() -> None:
    theta = crop_flip_theta(ViewParams.identity(2))
    assert torch.equal(theta, torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(2, 2, 3))


def _jitter_params(b: int, seed: int) -> ViewParams:
    g = torch.Generator().manual_seed(seed)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(b, generator=g)  # noqa: E731
    return replace(
        ViewParams.identity(b, aspect=10 / 11),
        brightness=u(0.4, 1.6),
        contrast=u(0.4, 1.6),
        saturation=u(0.4, 1.6),
        hue=u(-0.3, 0.3),
        gray=torch.rand(b, generator=g) < 0.4,
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_jitter_matches_torchvision_per_image(channels: int) -> None:
    b = 12
    x = _images(b, channels, 11, 10, seed=channels)
    p = _jitter_params(b, seed=channels)
    if channels == 1:
        p = replace(p, gray=torch.zeros(b, dtype=torch.bool))
    y = apply_view(x, p)
    for k in range(b):
        img = x[k].float() / 255
        img = TF.adjust_brightness(img, p.brightness[k].item())
        img = TF.adjust_contrast(img, p.contrast[k].item())
        img = TF.adjust_saturation(img, p.saturation[k].item())
        img = TF.adjust_hue(img, p.hue[k].item())
        if p.gray[k]:
            img = TF.rgb_to_grayscale(img, num_output_channels=3)
        assert torch.allclose(y[k], img * 2 - 1, atol=2e-5), k


def test_grayscale_makes_channels_equal() -> None:
    x = _images(4, 3, 8, 8)
    p = replace(ViewParams.identity(4), gray=torch.tensor([True, False, True, False]))
    y = apply_view(x, p)
    assert torch.allclose(y[[0, 2], 0], y[[0, 2], 1]) and torch.allclose(y[[0, 2], 1], y[[0, 2], 2])
    assert not torch.allclose(y[1, 0], y[1, 1])
    # luma weights 0.2989, 0.587, 0.114 (ITU-R 601-2)
    xf = x[0].float() / 255
    luma = 0.2989 * xf[0] + 0.587 * xf[1] + 0.114 * xf[2]
    assert torch.allclose(y[0, 0], luma * 2 - 1, atol=1e-5)


def test_hsv_roundtrip() -> None:
    x = torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    x[0, :, 0, 0] = 0.5  # gray pixel: zero chroma
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-6)


def test_errors() -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="vectors.*sample_same_class"):
        augment(torch.zeros(4, 1, 1, 32, dtype=torch.uint8), g)
    with pytest.raises(ValueError, match="vectors"):
        augment(torch.zeros(4, 1, 1, 1, dtype=torch.uint8), g)
    with pytest.raises(ValueError, match="uint8"):
        augment(torch.zeros(4, 1, 8, 8), g)
    with pytest.raises(ValueError, match="channels"):
        augment(torch.zeros(4, 2, 8, 8, dtype=torch.uint8), g)
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="strength"):
        augment(x, g, strength=-0.1)
    with pytest.raises(ValueError, match="strength"):
        augment(x, g, strength=3.0)
    with pytest.raises(ValueError, match="min_scale"):
        augment(x, g, min_scale=0.0)
    with pytest.raises(ValueError, match="flip"):
        augment(x, g, flip=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"params.scale"):
        apply_view(x, ViewParams.identity(3))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_generator_matches_device() -> None:
    x = _images(64, 3, 32, 32).cuda()
    a = augment(x, torch.Generator(device="cuda").manual_seed(0))
    b = augment(x, torch.Generator(device="cuda").manual_seed(0))
    assert a.device.type == "cuda" and torch.equal(a, b)
    with pytest.raises(ValueError, match="generator"):
        augment(x, torch.Generator().manual_seed(0))


def test_speed_is_printed() -> None:
    """Not a timing assertion (shared CPUs): prints the cost of 512 28x28 views, with torch's
    default threads and with one (intra-op threads thrash when other processes load the cores)."""
    x = _images(512, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    try:
        for n in sorted({threads, 1}, reverse=True):
            torch.set_num_threads(n)
            augment(x, g)  # warm-up
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                augment(x, g)
                times.append(time.perf_counter() - t0)
            ms = min(times) * 1e3  # the minimum: other processes share these cores
            print(f"\naugment: 512 x 1 x 28 x 28 in {ms:.2f} ms on CPU, {n} thread(s), best of 5")
            assert ms > 0
    finally:
        torch.set_num_threads(threads)
