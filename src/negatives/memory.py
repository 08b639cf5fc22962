"""What a run allocates, from shapes alone (:func:`estimate_memory`, the model built on the meta
device), and :func:`check_memory`, which refuses by name a config whose run the device cannot
hold, before anything is allocated."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from negatives import config as cfg
from negatives.data import Dataset
from negatives.models import ContrastiveModel
from negatives.trainconfig import TrainConfig, model_for

# (B, 1 + Q) float32 matrices alive at once in a MoCo step (similarities, logits, their shifted
# exponentials and gradients; the masks and a band's sort indices): an estimate from losses.py
# and filters.py. SimCLR's (2B, 2B) matrices count the same.
MATRIX_COPIES: int = 8


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes one part of a run allocates, and the config fields it grows with."""

    what: str
    bytes: int
    parameters: tuple[str, ...]


def _meta_model(config: TrainConfig, data: Dataset) -> ContrastiveModel:
    """``config``'s model on the meta device: shapes, no memory. ValueError when its size does
    not fit an int64 (a width far too large)."""
    try:
        with torch.device("meta"):
            return model_for(config, data.train_images)
    except (RuntimeError, OverflowError) as err:
        raise ValueError(
            f"width={config.width}, proj_hidden={config.proj_hidden}, proj_dim="
            f"{config.proj_dim}: the model is too large to build ({err})"
        ) from None


def _activation_elements_per_sample(model: nn.Module, data: Dataset) -> int:
    """Elements of the layers' outputs per sample in a forward pass of ``model`` (on the meta
    device: nothing is allocated): roughly what backward keeps. 0 where the meta forward
    fails."""
    outputs: dict[int, Tensor] = {}

    def keep(_module: nn.Module, _inputs: Any, out: Any) -> None:
        for t in out if isinstance(out, tuple) else (out,):
            if isinstance(t, Tensor):
                outputs[id(t)] = t  # an in-place ReLU returns its input: count it once

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(keep) for m in leaves]
    try:
        x = torch.empty((2, *data.train_images.shape[1:]), device="meta")  # BN needs 2 samples
        model.train()(x)
    except (RuntimeError, ValueError, NotImplementedError):
        return 0
    finally:
        for h in hooks:
            h.remove()
    return sum(t.numel() for t in outputs.values()) // 2


def estimate_memory(config: TrainConfig, data: Dataset) -> list[MemoryNeed]:
    """What training ``config`` on ``data`` allocates on its device, by part, largest first.

    Computed from shapes alone (the model is built on the meta device): the queue of keys
    (``queue_size x (proj_dim x 4 + 16)`` bytes with its ids and labels), the ``(B, 1 + Q)``
    similarity and logit matrices (:data:`MATRIX_COPIES` of them), the encoder's and the
    head's weights with their gradients, the optimiser's state and MoCo's key encoder, the
    activations that backward keeps (2 bytes an element under bf16, else 4) and the data set
    with an epoch's view parameters. About, and rather below than above the peak.
    """
    device = cfg.resolve_device(config.device)
    bf16 = cfg.resolve_precision(config.precision, device) == "bf16"
    b, moco = config.batch_size, config.method == "moco"
    model = _meta_model(config, data)
    # weights, gradients, optimiser state (AdamW: 2 moments, SGD: momentum), MoCo's key encoder
    copies = 2 + (2 if config.optimizer == "adamw" else 1) + int(moco)
    encoder_by = ("arch",) if config.arch == "resnet18-cifar" else ("width",)
    needs = [
        MemoryNeed(
            "the encoder (weights, gradients, optimiser state)",
            4 * copies * sum(p.numel() for p in model.backbone.parameters()),
            encoder_by,
        ),
        MemoryNeed(
            "the projection head (weights, gradients, optimiser state)",
            4 * copies * sum(p.numel() for p in model.head.parameters()),
            ("proj_hidden", "proj_dim"),
        ),
        MemoryNeed(
            "the activations kept for backward",
            (2 if bf16 else 4)
            * (1 if moco else 2)  # SimCLR back-propagates through both views
            * b
            * _activation_elements_per_sample(model, data),
            ("batch_size", *encoder_by),
        ),
    ]
    n, per_image = data.train_images.shape[0], data.train_images[0].numel()
    needs.append(
        MemoryNeed(
            f"the training set {data.name!r} on the device with an epoch's view parameters",
            n * (per_image * data.train_images.element_size() + 16 + 2 * 10 * 4)
            + 2 * b * per_image * 4,
            (),
        )
    )
    if moco:
        q = config.queue_size
        needs.append(
            MemoryNeed(
                "the queue of keys", q * (4 * config.proj_dim + 16), ("queue_size", "proj_dim")
            )
        )
        needs.append(
            MemoryNeed(
                "the (batch, 1 + queue) similarity and logit matrices",
                4 * MATRIX_COPIES * b * (q + 1),
                ("batch_size", "queue_size"),
            )
        )
    else:
        needs.append(
            MemoryNeed(
                "the (2 batch, 2 batch) similarity and logit matrices",
                4 * MATRIX_COPIES * (2 * b) ** 2,
                ("batch_size",),
            )
        )
    return sorted(needs, key=lambda need: need.bytes, reverse=True)


def device_memory(device: str) -> int | None:
    """Bytes a run on ``device`` can use: for ``cpu`` the memory the kernel says is available
    now (Linux's MemAvailable: free memory plus caches it can drop, not what other processes
    hold), else the machine's physical memory; for ``cuda``, the GPU's free memory plus what
    torch's allocator holds unused. ``None`` where the system does not say."""
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return free + torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return None


def _gigabytes(n: int) -> str:
    return f"{n / 1e9:,.1f} GB" if n < 1e11 else f"{n / 1e9:,.0f} GB"


def check_memory(config: TrainConfig, data: Dataset, device: str) -> list[MemoryNeed]:
    """:func:`estimate_memory`, or ``ValueError`` if it exceeds :func:`device_memory`, naming
    the fields of the parts that alone exceed it or take a tenth of the total (at least one)."""
    needs = estimate_memory(config, data)
    total, available = sum(need.bytes for need in needs), device_memory(device)
    if available is None or total <= available:
        return needs
    blamed = [n for n in needs if n.bytes > available or n.bytes >= total / 10] or needs[:1]
    parts = []
    for need in blamed:
        names = ", ".join(f"{name}={getattr(config, name)!r}" for name in need.parameters)
        who = f"{names} needs" if names else "needs"
        parts.append(f"{who} about {_gigabytes(need.bytes)} for {need.what}")
    where = "this machine has available" if device == "cpu" else "the GPU has free"
    raise ValueError(
        f"this run needs about {_gigabytes(total)} of memory and {where} {_gigabytes(available)}: "
        + "; ".join(parts)
        + ". Lower them."
    )
