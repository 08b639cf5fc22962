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


def own_key_shares(config: Any, data: Any) -> list[float]:
    """Per epoch, the share of MoCo's queries whose own instance has a key in the queue (an
    older key, which the trainer does not count as a negative), replayed from the run's data
    order without training: the same numbers as the trainer's log (``own_key_share``, the
    same sampled steps), for runs cached before it logged them.

    The queue holds sample ids only, filled and advanced as :func:`negatives.train.train` does
    (its first plan fills the queue, each epoch draws its own; the views are drawn too, so the
    generator stays where training has it). ``config``: a MoCo
    :class:`negatives.TrainConfig`; ``data``: its :class:`negatives.Dataset`.
    """
    from negatives.epochs import RANK_LOG_EVERY, _plan_epoch, stream_generator
    from negatives.train import check_data

    if config.method != "moco":
        raise ValueError(f"method={config.method!r}: only MoCo's queue holds earlier keys")
    n = check_data(config, data)
    images, labels = data.train_images.cpu(), data.train_labels.cpu()
    gen = stream_generator(config.seed, "data")
    queue = Queue(config.queue_size, 1)
    batch = config.batch_size

    def push(ids: Tensor) -> None:
        queue.enqueue(torch.zeros(len(ids), 1), ids, ids)

    fill = _plan_epoch(n, images, labels, config, gen).perm  # (n,)
    for start in range(0, min(queue.size, n), batch):
        push(fill[start : min(start + batch, queue.size, n)])
    shares = []
    for _ in range(config.epochs):
        perm = _plan_epoch(n, images, labels, config, gen).perm
        sampled = []
        for b in range(n // batch):
            ids = perm[b * batch : (b + 1) * batch]  # (B,)
            if b % RANK_LOG_EVERY == 0:
                held = queue.ids[queue.valid]  # (filled,)
                sampled.append(torch.isin(ids, held).float().mean().item())
            push(ids)
        shares.append(sum(sampled) / len(sampled))
    return shares
