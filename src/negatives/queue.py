"""MoCo's queue of keys (He et al. 2020, section 3.2), with each key's sample id and label.

The ids let the analyses ask which samples are hard negatives for many queries (Cai & Frankle
2020's consistency analysis); the labels give same-class rates and oracle masks. Labels are
never used by the training loss unless a same-class mask is asked for.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from negatives.config import check_int


class Queue:
    """MoCo's dictionary of keys, with the sample id and label of each key (He et al. 2020).

    A ring buffer of ``size`` slots: ``keys`` ``(Q, D)`` float32, ``ids`` and ``labels``
    ``(Q,)`` int64 (``-1`` in empty slots), ``ptr`` the next slot to write and ``num_filled``
    the number of filled slots. :meth:`enqueue` is equivalent to pushing the batch's samples one
    by one into a FIFO of capacity ``Q`` (the oldest keys leave first), without MoCo's
    requirement that ``Q`` be a multiple of the batch size.
    """

    def __init__(self, size: int, dim: int, device: torch.device | str = "cpu") -> None:
        self.size = check_int("size", size, 1)
        self.dim = check_int("dim", dim, 1)
        self.device = torch.device(device)
        self.keys = torch.zeros(self.size, self.dim, dtype=torch.float32, device=self.device)
        self.ids = torch.full((self.size,), -1, dtype=torch.int64, device=self.device)
        self.labels = torch.full((self.size,), -1, dtype=torch.int64, device=self.device)
        # Python ints, so enqueueing never waits for the device.
        self.ptr = 0
        self.num_filled = 0

    def __len__(self) -> int:
        return self.num_filled

    @property
    def valid(self) -> Tensor:
        """``(Q,)`` bool, True at filled slots (slots fill from 0 up before the first wrap)."""
        return torch.arange(self.size, device=self.device) < self.num_filled

    @torch.no_grad()
    def enqueue(self, keys: Tensor, ids: Tensor, labels: Tensor) -> None:
        """Push a batch of keys ``(B, D)`` with their ``ids`` and ``labels`` ``(B,)``.

        Sample ``t`` of the batch goes to slot ``(ptr + t) % Q``; if ``B > Q`` only the last
        ``Q`` samples are written (the earlier ones would be overwritten within the same call).
        Keys are detached and stored as float32 (they may come from a bf16 autocast region).
        """
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must have shape (B, {self.dim}), got {tuple(keys.shape)}")
        batch = keys.shape[0]
        for name, value in (("ids", ids), ("labels", labels)):
            if tuple(value.shape) != (batch,):
                raise ValueError(f"{name} must have shape ({batch},), got {tuple(value.shape)}")
        if batch == 0:
            return
        m = min(batch, self.size)
        # slots of the last m samples of the batch: (m,), distinct because m <= Q
        slots = (self.ptr + torch.arange(batch - m, batch, device=self.device)) % self.size
        self.keys[slots] = keys[batch - m :].detach().to(self.device, torch.float32)
        self.ids[slots] = ids[batch - m :].to(self.device, torch.int64)
        self.labels[slots] = labels[batch - m :].to(self.device, torch.int64)
        self.ptr = (self.ptr + batch) % self.size
        self.num_filled = min(self.size, self.num_filled + batch)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: tensors (on the CPU) and the pointer."""
        return {
            "size": self.size,
            "dim": self.dim,
            "keys": self.keys.detach().cpu().clone(),
            "ids": self.ids.cpu().clone(),
            "labels": self.labels.cpu().clone(),
            "ptr": self.ptr,
            "num_filled": self.num_filled,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of a queue with the same ``size`` and ``dim``."""
        for name in ("size", "dim"):
            if int(state[name]) != getattr(self, name):
                raise ValueError(
                    f"cannot load a queue state with {name}={state[name]} "
                    f"into a queue with {name}={getattr(self, name)}"
                )
        self.keys = state["keys"].to(self.device, torch.float32).clone()
        self.ids = state["ids"].to(self.device, torch.int64).clone()
        self.labels = state["labels"].to(self.device, torch.int64).clone()
        self.ptr = int(state["ptr"])
        self.num_filled = int(state["num_filled"])
