"""Tests for negatives.queue against a list-based FIFO pushed one sample at a time."""

from __future__ import annotations

import pytest
import torch

from negatives.queue import Queue


class NaiveFIFO:
    """Python lists: append each sample, drop the oldest beyond capacity."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[tuple[list[float], int, int]] = []

    def push(self, keys: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor) -> None:
        for key, i, y in zip(keys.tolist(), ids.tolist(), labels.tolist(), strict=True):
            self.items.append((key, i, y))
            if len(self.items) > self.size:
                self.items.pop(0)


def oldest_first(queue: Queue) -> list[tuple[list[float], int, int]]:
    """The queue's filled slots from the oldest key to the newest."""
    n = queue.num_filled
    slots = [(queue.ptr - n + i) % queue.size for i in range(n)]
    return [(queue.keys[s].tolist(), int(queue.ids[s]), int(queue.labels[s])) for s in slots]


@pytest.mark.parametrize(
    "size,batches", [(10, [3, 3, 3, 3, 3]), (7, [4, 5, 2, 6, 1]), (5, [12, 3, 7]), (8, [8, 8, 3])]
)
def test_enqueue_matches_fifo(size: int, batches: list[int]) -> None:
    g = torch.Generator().manual_seed(size)
    queue, fifo = Queue(size, 3), NaiveFIFO(size)
    next_id = 0
    for b in batches:
        keys = torch.randn(b, 3, generator=g)
        ids = torch.arange(next_id, next_id + b)
        labels = torch.randint(0, 4, (b,), generator=g)
        next_id += b
        queue.enqueue(keys, ids, labels)
        fifo.push(keys, ids, labels)
        assert len(queue) == len(fifo.items) == queue.valid.sum().item()
        assert oldest_first(queue) == fifo.items
        # empty slots keep their initial values
        assert (queue.ids[~queue.valid] == -1).all()
        assert (queue.labels[~queue.valid] == -1).all()
        assert (queue.keys[~queue.valid] == 0).all()


def test_initial_state() -> None:
    queue = Queue(6, 4)
    assert queue.keys.shape == (6, 4) and queue.keys.dtype == torch.float32
    assert queue.ids.dtype == torch.int64 and queue.labels.dtype == torch.int64
    assert (queue.ids == -1).all() and (queue.labels == -1).all() and (queue.keys == 0).all()
    assert queue.ptr == 0 and queue.num_filled == 0 and not queue.valid.any()


def test_valid_marks_filled_slots() -> None:
    queue = Queue(5, 2)
    queue.enqueue(torch.ones(3, 2), torch.arange(3), torch.zeros(3, dtype=torch.long))
    assert queue.valid.tolist() == [True, True, True, False, False]
    queue.enqueue(torch.ones(3, 2), torch.arange(3), torch.zeros(3, dtype=torch.long))
    assert queue.valid.all() and queue.ptr == 1


def test_keys_are_detached_float32() -> None:
    queue = Queue(4, 2)
    keys = torch.randn(2, 2, requires_grad=True)
    queue.enqueue(keys.bfloat16(), torch.arange(2), torch.arange(2))
    assert queue.keys.dtype == torch.float32 and not queue.keys.requires_grad
    torch.testing.assert_close(queue.keys[:2], keys.detach().bfloat16().float())


def test_state_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    queue = Queue(7, 3)
    for b in (4, 5):
        queue.enqueue(torch.randn(b, 3, generator=g), torch.arange(b), torch.arange(b) % 2)
    state = queue.state_dict()
    restored = Queue(7, 3)
    restored.load_state_dict(state)
    for name in ("keys", "ids", "labels"):
        assert torch.equal(getattr(restored, name), getattr(queue, name))
    assert (restored.ptr, restored.num_filled) == (queue.ptr, queue.num_filled)
    # the copy is independent and continues identically
    more = torch.randn(3, 3, generator=g)
    queue.enqueue(more, torch.arange(3), torch.arange(3))
    assert not torch.equal(restored.keys, queue.keys)
    restored.enqueue(more, torch.arange(3), torch.arange(3))
    assert torch.equal(restored.keys, queue.keys) and restored.ptr == queue.ptr


def test_errors() -> None:
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="size"):
            Queue(bad, 4)
    with pytest.raises(ValueError, match="dim"):
        Queue(4, 0)
    queue = Queue(4, 3)
    with pytest.raises(ValueError, match="keys"):
        queue.enqueue(torch.zeros(2, 5), torch.arange(2), torch.arange(2))
    with pytest.raises(ValueError, match="ids"):
        queue.enqueue(torch.zeros(2, 3), torch.arange(3), torch.arange(2))
    with pytest.raises(ValueError, match="labels"):
        queue.enqueue(torch.zeros(2, 3), torch.arange(2), torch.arange(2)[:, None])
    with pytest.raises(ValueError, match="dim"):
        Queue(4, 2).load_state_dict(queue.state_dict())
    with pytest.raises(ValueError, match="size"):
        Queue(5, 3).load_state_dict(queue.state_dict())
