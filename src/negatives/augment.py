"""Batched, per-sample random views on the device: the SimCLR / MoCo v2 augmentation.

SimCLR (Chen et al. 2020, appendix A) and MoCo v2 (Chen et al. 2020, "Improved Baselines")
use: random resized crop (area scale in ``[min_scale, 1]``, log-uniform aspect ratio in
``[3/4, 4/3]``), horizontal flip (p = 1/2), colour jitter with probability 0.8 (brightness,
contrast, saturation ``0.8 s`` and hue ``0.2 s`` for strength ``s``), random grayscale
(p = 0.2). Here every view of a batch is made at once, as in KellerJordan/cifar10-airbench: the
crop and flip are one affine matrix per image fed to one ``F.affine_grid`` + ``F.grid_sample``;
the jitter is arithmetic on per-sample factors broadcast over ``(B, C, H, W)``. No PIL, no
per-image Python.

Deviations from torchvision's pipeline (ours): the four jitter operations run in the fixed order
brightness, contrast, saturation, hue (torchvision shuffles the order per image); the crop is
resampled bilinearly at sub-pixel positions rather than cut at integer pixel offsets; and
Gaussian blur (ImageNet-only in SimCLR) is left out. Each operation equals torchvision's
``adjust_*`` function for the same factor (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from negatives.config import check_float, check_int

JITTER_PROB: float = 0.8
GRAY_PROB: float = 0.2
RATIO_RANGE: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
CROP_TRIES: int = 10  # as torchvision's RandomResizedCrop
GRAY_WEIGHTS: tuple[float, float, float] = (0.2989, 0.587, 0.114)  # ITU-R 601-2, as torchvision


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> float32 in ``[-1, 1]``: ``(x / 255 - 0.5) / 0.5``."""
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    return (images.float() / 255.0 - 0.5) / 0.5


@dataclass(frozen=True)
class ViewParams:
    """Per-sample parameters of one view of each image; every field is a ``(B,)`` tensor.

    - ``scale``: crop area as a fraction of the image area; ``ratio``: crop width / height in
      pixels (as torchvision's; the whole image of a non-square ``W x H`` image has ``W / H``).
    - ``tx``, ``ty``: crop centre as a relative position in ``[-1, 1]`` (-1: touching the left /
      top edge, 1: the right / bottom edge), so any value keeps the crop inside the image.
    - ``flip``: bool, horizontal flip.
    - ``brightness``, ``contrast``, ``saturation``: multiplicative factors (1 = unchanged);
      ``hue``: shift in turns of the hue circle, in ``[-0.5, 0.5]`` (0 = unchanged).
    - ``gray``: bool, convert to grayscale (kept with 3 channels).
    """

    scale: torch.Tensor
    ratio: torch.Tensor
    tx: torch.Tensor
    ty: torch.Tensor
    flip: torch.Tensor
    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor
    gray: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.scale.shape[0])

    def to(self, device: torch.device | str) -> ViewParams:
        """The same parameters on ``device``."""
        return ViewParams(*(getattr(self, f.name).to(device) for f in fields(self)))

    def select(self, index: torch.Tensor | slice) -> ViewParams:
        """The parameters of the samples ``index`` (indices or a slice), e.g. one batch of an
        epoch's worth of parameters drawn at once."""
        return ViewParams(*(getattr(self, f.name)[index] for f in fields(self)))

    @classmethod
    def identity(
        cls, batch_size: int, device: torch.device | str = "cpu", aspect: float = 1.0
    ) -> ViewParams:
        """Parameters that reproduce the input: whole image (``ratio`` = the image's width /
        height, ``aspect``), no flip, no jitter, colour kept."""
        ones = torch.ones(batch_size, device=device)
        zeros = torch.zeros(batch_size, device=device)
        no = torch.zeros(batch_size, dtype=torch.bool, device=device)
        return cls(ones, aspect * ones, zeros, zeros, no, ones, ones, ones, zeros, no)


def sample_view_params(
    batch_size: int,
    channels: int,
    generator: torch.Generator,
    *,
    strength: float = 0.5,
    min_scale: float = 0.2,
    flip: bool = True,
    device: torch.device | str | None = None,
    aspect: float = 1.0,
) -> ViewParams:
    """Draw SimCLR view parameters for ``batch_size`` images with ``channels`` channels from
    ``generator``, on ``device`` (default: the generator's device).

    The crop follows torchvision's ``RandomResizedCrop``: up to 10 tries of (area, log-ratio),
    keeping the first that fits in an image of width/height ``aspect``, else the whole image.
    Jitter (p = 0.8) draws brightness, contrast and saturation factors uniform in
    ``[max(0, 1 - 0.8 s), 1 + 0.8 s]`` and hue uniform in ``[-0.2 s, 0.2 s]``; single-channel
    images get brightness and contrast only, and grayscale (p = 0.2) only applies to colour.
    """
    batch_size = check_int("batch_size", batch_size, 1)
    channels = check_int("channels", channels, 1)
    if channels not in (1, 3):
        raise ValueError(f"channels={channels} must be 1 (gray) or 3 (RGB)")
    # hue 0.2 s must stay within torchvision's [-0.5, 0.5]
    strength = check_float("strength", strength, 0.0, 2.5)
    min_scale = check_float("min_scale", min_scale, 0.0, 1.0, strict_minimum=True)
    aspect = check_float("aspect", aspect, 0.0, strict_minimum=True)
    if not isinstance(flip, bool):
        raise ValueError(f"flip={flip!r} must be True or False")
    device = torch.device(generator.device if device is None else device)
    if device.type != generator.device.type:
        raise ValueError(
            f"generator is on {generator.device} but device={device}; use a generator on the "
            f"images' device (torch.Generator(device=...))"
        )

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        u = torch.rand(*shape, generator=generator, device=device)
        return lo + (hi - lo) * u

    b = batch_size
    # crop: T tries per sample, the first that fits (torchvision's rejection loop, batched)
    scales = uniform(min_scale, 1.0, b, CROP_TRIES)  # (B, T)
    log_lo, log_hi = math.log(RATIO_RANGE[0]), math.log(RATIO_RANGE[1])
    ratios = torch.exp(uniform(log_lo, log_hi, b, CROP_TRIES))  # (B, T)
    # fractions of the image's width and height: w = sqrt(s r / aspect), h = sqrt(s aspect / r)
    fits = ((scales * ratios / aspect) <= 1.0) & ((scales * aspect / ratios) <= 1.0)  # (B, T)
    first = torch.argmax(fits.int(), dim=1, keepdim=True)  # (B, 1), 0 when none fits
    any_fit = fits.any(dim=1)
    scale = torch.where(any_fit, scales.gather(1, first)[:, 0], 1.0)
    ratio = torch.where(any_fit, ratios.gather(1, first)[:, 0], aspect)
    tx = uniform(-1.0, 1.0, b)
    ty = uniform(-1.0, 1.0, b)
    flips = torch.rand(b, generator=generator, device=device) < 0.5
    if not flip:
        flips = torch.zeros_like(flips)

    jitter = torch.rand(b, generator=generator, device=device) < JITTER_PROB
    s = 0.8 * strength
    brightness = uniform(max(0.0, 1.0 - s), 1.0 + s, b)
    contrast = uniform(max(0.0, 1.0 - s), 1.0 + s, b)
    saturation = uniform(max(0.0, 1.0 - s), 1.0 + s, b)
    hue = uniform(-0.2 * strength, 0.2 * strength, b)
    gray = torch.rand(b, generator=generator, device=device) < GRAY_PROB
    one = torch.ones((), device=device)
    brightness = torch.where(jitter, brightness, one)
    contrast = torch.where(jitter, contrast, one)
    if channels == 3:
        saturation = torch.where(jitter, saturation, one)
        hue = torch.where(jitter, hue, 0.0 * one)
    else:  # saturation, hue and grayscale do nothing to one channel
        saturation = torch.ones_like(saturation)
        hue = torch.zeros_like(hue)
        gray = torch.zeros_like(gray)
    return ViewParams(scale, ratio, tx, ty, flips, brightness, contrast, saturation, hue, gray)


def crop_flip_theta(params: ViewParams, aspect: float = 1.0) -> torch.Tensor:
    """The ``(B, 2, 3)`` affine matrices for ``F.affine_grid`` (``align_corners=False``) mapping
    output coordinates in ``[-1, 1]`` to the crop in the input: ``x_in = +-w x_out + c_x``,
    ``y_in = h y_out + c_y``, with ``w, h`` the crop's width and height fractions and the sign
    negative for a flip."""
    w = torch.sqrt(params.scale * params.ratio / aspect).clamp(max=1.0)  # (B,)
    h = torch.sqrt(params.scale * aspect / params.ratio).clamp(max=1.0)  # (B,)
    cx = params.tx.clamp(-1.0, 1.0) * (1.0 - w)  # crop centre, keeps the crop inside
    cy = params.ty.clamp(-1.0, 1.0) * (1.0 - h)
    sx = torch.where(params.flip, -w, w)
    zero = torch.zeros_like(w)
    return torch.stack(
        (torch.stack((sx, zero, cx), dim=1), torch.stack((zero, h, cy), dim=1)), dim=1
    )  # (B, 2, 3)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of RGB ``(B, 3, H, W)`` -> ``(B, 1, H, W)``."""
    r, g, b = x.unbind(dim=1)
    wr, wg, wb = GRAY_WEIGHTS
    return (wr * r + wg * g + wb * b).unsqueeze(1)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB in ``[0, 1]`` ``(B, 3, H, W)`` -> HSV with hue in turns ``[0, 1)``."""
    r, g, b = x.unbind(dim=1)
    v, _ = x.max(dim=1)
    c = v - x.min(dim=1).values  # chroma
    safe_c = torch.where(c > 0, c, torch.ones_like(c))
    s = torch.where(v > 0, c / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    # hue sextant by which channel is the maximum; ties go to red, then green (as PIL)
    h = torch.where(
        v == r,
        torch.remainder((g - b) / safe_c, 6.0),
        torch.where(v == g, (b - r) / safe_c + 2.0, (r - g) / safe_c + 4.0),
    )
    h = torch.where(c > 0, h / 6.0, torch.zeros_like(h))
    return torch.stack((h, s, v), dim=1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV (hue in turns) ``(B, 3, H, W)`` -> RGB, by ``f(n) = v - v s max(0, min(k, 4 - k, 1))``
    with ``k = (n + 6 h) mod 6`` for ``n = 5, 3, 1``."""
    h, s, v = x.unbind(dim=1)
    n = torch.tensor([5.0, 3.0, 1.0], device=x.device).view(1, 3, 1, 1)
    k = torch.remainder(n + 6.0 * h.unsqueeze(1), 6.0)  # (B, 3, H, W)
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * ramp


def color_jitter(x: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """Brightness, contrast, saturation, hue (in this order) then grayscale on float images in
    ``[0, 1]``, each as torchvision's ``adjust_*`` with a per-sample factor."""
    c = x.shape[1]
    per = (-1, 1, 1, 1)
    x = (x * params.brightness.view(per)).clamp(0.0, 1.0)
    luma = _gray(x) if c == 3 else x
    mean = luma.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    f = params.contrast.view(per)
    x = (f * x + (1.0 - f) * mean).clamp(0.0, 1.0)
    if c == 3:
        f = params.saturation.view(per)
        x = (f * x + (1.0 - f) * _gray(x)).clamp(0.0, 1.0)
        shift = params.hue != 0
        if bool(shift.any()):  # skip the HSV round trip (not exactly the identity) when unused
            hsv = rgb_to_hsv(x)
            h = torch.remainder(hsv[:, 0] + params.hue.view(-1, 1, 1), 1.0)
            shifted = hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), dim=1))
            x = torch.where(shift.view(per), shifted, x)
        x = torch.where(params.gray.view(per), _gray(x).expand_as(x), x)
    return x


def _check_images(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"images must be uint8 (B, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {images.shape[1]}")
    if images.shape[2] == 1 or images.shape[3] == 1:
        raise ValueError(
            f"images of shape {tuple(images.shape)} are vectors (H or W = 1), e.g. latent-class "
            f"data: they are not augmented; draw positives with negatives.data.sample_same_class"
        )


def apply_view(images: torch.Tensor, params: ViewParams) -> torch.Tensor:
    """One view per image: uint8 ``(B, C, H, W)`` -> float32 ``(B, C, H, W)`` in ``[-1, 1]``
    (:func:`to_float`'s range): crop + flip by one bilinear ``grid_sample``, then jitter."""
    _check_images(images)
    b, _, h, w = images.shape
    for f in fields(params):
        t = getattr(params, f.name)
        if t.shape != (b,) or t.device != images.device:
            raise ValueError(
                f"params.{f.name} must be a ({b},) tensor on {images.device}, got "
                f"{tuple(t.shape)} on {t.device}"
            )
    x = images.float() / 255.0  # (B, C, H, W) in [0, 1]
    theta = crop_flip_theta(params, aspect=w / h)  # (B, 2, 3)
    grid = F.affine_grid(theta, [b, images.shape[1], h, w], align_corners=False)  # (B, H, W, 2)
    # border padding: sample points just outside the outermost pixel centres repeat the edge
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = color_jitter(x, params)
    return (x - 0.5) / 0.5


def augment(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    strength: float = 0.5,
    min_scale: float = 0.2,
    flip: bool = True,
) -> torch.Tensor:
    """A random SimCLR view of each image: uint8 ``(B, C, H, W)`` -> float32 in ``[-1, 1]``.
    ``generator`` must live on the images' device; call twice for the two views of a pair."""
    _check_images(images)
    if generator.device.type != images.device.type:
        raise ValueError(
            f"generator is on {generator.device} but images are on {images.device}; "
            f"use torch.Generator(device=images.device)"
        )
    b, c, h, w = images.shape
    params = sample_view_params(
        b,
        c,
        generator,
        strength=strength,
        min_scale=min_scale,
        flip=flip,
        device=images.device,
        aspect=w / h,
    )
    return apply_view(images, params)
