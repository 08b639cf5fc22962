"""One run across several processes (``torchrun``): the rank, the world and what rank 0 decides.

Every function works without ``torch.distributed`` initialised: then this process is rank 0 of
a world of one, and the collectives are identities.

:func:`init` joins the process group that ``torchrun`` describes in the environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): NCCL with one GPU per local
rank on CUDA, gloo on the CPU. The collectives the trainer needs are here, on tensors of the
run's device: :func:`all_gather` (rank by rank along dim 0), :func:`all_gather_with_grad`
(SimCLR's negatives from every rank, gradients flowing back to the rank that computed them),
:func:`all_gather_rows` (shares of unequal size), :func:`all_reduce` and :func:`average_`.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from negatives import config as cfg

# How long a collective waits for the other ranks before it fails (a rank that died or hangs):
# long enough for rank 0 to write a checkpoint or load a data set while the others wait.
TIMEOUT_SECONDS: float = 1800.0


def active() -> bool:
    """Whether this process is one rank of an initialised process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that reads and writes the run cache."""
    return rank() == 0


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# -- joining and leaving ---------------------------------------------------------------------


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def launched() -> bool:
    """Whether this process was started as one of several by a launcher (``torchrun`` sets
    ``WORLD_SIZE``); a world of one needs no process group."""
    return _env_int("WORLD_SIZE", 1) > 1


def local_rank() -> int:
    """This process's index among the processes of its machine (``LOCAL_RANK``; 0 if unset)."""
    return _env_int("LOCAL_RANK", 0)


def local_world_size() -> int:
    """The number of processes of this run on this machine (``LOCAL_WORLD_SIZE``; 1 if unset)."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", 1))


def backend_for(device: str) -> str:
    """The collective backend of a run on ``device`` (``auto``, ``cpu``, ``cuda``): NCCL on
    CUDA, gloo on the CPU."""
    return "nccl" if cfg.resolve_device(device) == "cuda" else "gloo"


def init(device: str = "auto", timeout_seconds: float = TIMEOUT_SECONDS) -> str:
    """Join the process group described by ``torchrun``'s environment; returns the backend.

    On CUDA each process takes the GPU of its local rank (``torch.cuda.set_device``), so that
    the trainer's ``"cuda"`` tensors of rank ``r`` live on GPU ``LOCAL_RANK``. Nothing happens
    if the group already exists. ``ValueError`` if a machine has more local ranks than GPUs.
    """
    if active():
        return str(dist.get_backend())
    backend = backend_for(device)
    if backend == "nccl":
        gpus, here = torch.cuda.device_count(), local_rank()
        if here >= gpus:
            raise ValueError(
                f"LOCAL_RANK={here} but this machine has {gpus} GPUs: start at most one process "
                f"per GPU (torchrun --nproc-per-node {gpus})"
            )
        torch.cuda.set_device(here)
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_seconds))
    return backend


def shutdown(wait: bool = True) -> None:
    """Leave the process group, after a barrier when ``wait`` (so that no rank leaves while
    others still send; not after an error, when the others may never come); nothing without
    one."""
    if active():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


# -- collectives -----------------------------------------------------------------------------


def all_gather(x: Tensor) -> Tensor:
    """Every rank's ``x`` ``(n, ...)`` (the same shape on every rank), concatenated in rank
    order: ``(world * n, ...)``; no gradient. ``x`` itself in a world of one."""
    if not active():
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    return torch.cat(parts, dim=0)


class _AllGatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sends each rank the gradient of every rank's loss with
    respect to its own rows: the sum over ranks of the incoming gradients, its rows taken."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.rows = x.shape[0]
        return all_gather(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd owns ``grad``
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.rows
        return grad[start : start + ctx.rows]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """:func:`all_gather` of ``x`` ``(n, ...)`` -> ``(world * n, ...)``, differentiable.

    Rank ``r``'s rows of the result are ``x`` itself in the forward pass; in the backward pass
    rank ``r`` receives, for its ``x``, the sum over ranks of the gradients of their outputs'
    rows ``r``. So if every rank's loss reads the gathered tensor and DistributedDataParallel
    averages the parameters' gradients, the update is that of the mean of the ranks' losses
    computed in one process (SimCLR's global negatives; the gloo backend has no reduce-scatter,
    hence an all-reduce of the whole gradient). ``x`` itself in a world of one.
    """
    if not active():
        return x
    return _AllGatherWithGrad.apply(x)


def all_gather_rows(x: Tensor, counts: list[int]) -> Tensor:
    """Every rank's ``x`` ``(counts[rank], ...)`` concatenated in rank order, for shares of
    unequal size (``sum(counts)`` rows; padded to the largest share for the collective); no
    gradient."""
    if not active():
        return x
    if len(counts) != world_size() or x.shape[0] != counts[rank()]:
        raise ValueError(
            f"counts={counts} must give each of the {world_size()} ranks' rows; rank {rank()} "
            f"has {x.shape[0]}"
        )
    most = max(counts)
    padded = x.new_zeros((most, *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    gathered = all_gather(padded).view(world_size(), most, *x.shape[1:])
    return torch.cat([gathered[r, :n] for r, n in enumerate(counts)], dim=0)


REDUCE_OPS: tuple[str, ...] = ("sum", "max", "mean")


def all_reduce(x: Tensor, op: str = "sum") -> Tensor:
    """``x`` reduced over the ranks (``sum``, ``max`` or ``mean``), a new tensor; ``x`` in a
    world of one."""
    cfg.check_choice("op", op, REDUCE_OPS)
    if not active():
        return x
    out = x.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return out / world_size() if op == "mean" else out


@torch.no_grad()
def average_(tensors: list[Tensor]) -> None:
    """Replace each of ``tensors`` (floating point, one device) by its mean over the ranks, in
    place, with one collective for all of them (gloo has no averaging op: a sum, divided)."""
    if not active() or not tensors:
        return
    flat = torch.cat([t.detach().reshape(-1).float() for t in tensors])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    start = 0
    for t in tensors:
        t.copy_(flat[start : start + t.numel()].view_as(t))
        start += t.numel()


def thread_share(workers: int, cpus: int | None = None) -> int:
    """Each of ``workers`` processes' share of this machine's cores (at least one): two workers
    that both use every core of two were measured 10 to 30 times slower than one alone."""
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return max(1, cpus // cfg.check_int("workers", workers, 1))
