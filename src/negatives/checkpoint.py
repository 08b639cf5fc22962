"""A run's state after a finished epoch (:class:`Checkpoint`): everything that resuming needs
to continue with the same numbers as an uninterrupted run; written into the run's folder of the
run cache (:mod:`negatives.runs`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from negatives import runs
from negatives.queue import Queue
from negatives.trainconfig import TrainConfig


@dataclass
class Checkpoint:
    """A run's state after a finished epoch: everything that resuming needs to continue it with
    the same numbers as an uninterrupted run.

    On disk, a dict of these fields written by :func:`negatives.runs.save_torch`; ``config`` is
    ``dataclasses.asdict`` of the run's config and ``epoch`` the number of finished epochs.
    """

    config: dict[str, Any]
    model: dict[str, Any]
    key_model: dict[str, Any] | None
    optimizer: dict[str, Any]
    queue: dict[str, Any] | None
    generators: dict[str, Tensor]
    torch_rng: Tensor
    history: dict[str, list[Any]]
    epoch: int
    elapsed: float

    @classmethod
    def capture(
        cls,
        config: TrainConfig,
        model: nn.Module,
        key_model: nn.Module | None,
        optimizer: torch.optim.Optimizer,
        queue: Queue | None,
        streams: dict[str, torch.Generator],
        history: dict[str, list[Any]],
        epoch: int,
        elapsed: float,
    ) -> Checkpoint:
        """The state of a run now, after ``epoch`` finished epochs and ``elapsed`` seconds."""
        return cls(
            config=dataclasses.asdict(config),
            model=model.state_dict(),
            key_model=key_model.state_dict() if key_model is not None else None,
            optimizer=optimizer.state_dict(),
            queue=queue.state_dict() if queue is not None else None,
            generators={name: g.get_state() for name, g in streams.items()},
            torch_rng=torch.get_rng_state(),
            history=history,
            epoch=epoch,
            elapsed=elapsed,
        )

    def restore(
        self,
        model: nn.Module,
        key_model: nn.Module | None,
        optimizer: torch.optim.Optimizer,
        queue: Queue | None,
        streams: dict[str, torch.Generator],
    ) -> None:
        """Load the state into a freshly built run's objects (and torch's global generator)."""
        model.load_state_dict(self.model)
        optimizer.load_state_dict(self.optimizer)
        if key_model is not None:
            key_model.load_state_dict(self.key_model)
        if queue is not None:
            queue.load_state_dict(self.queue)
        for name, g in streams.items():
            g.set_state(self.generators[name].to(g.get_state().device))
        torch.set_rng_state(self.torch_rng)

    def save(self, path: str | Path) -> None:
        """Write the checkpoint atomically to ``path``."""
        # a shallow dict: dataclasses.asdict would deep-copy every tensor first
        runs.save_torch(path, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def load(cls, path: str | Path, config: TrainConfig) -> Checkpoint | None:
        """The checkpoint at ``path`` if it holds a run of ``config``; ``None`` if the file is
        missing, unreadable (set aside by :func:`negatives.runs.load_torch`) or of another
        config."""
        state = runs.load_torch(path)
        if not isinstance(state, dict) or state.get("config") != dataclasses.asdict(config):
            return None
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in state]
        if missing:  # of this config but not resumable: set aside, not a KeyError every re-run
            runs.set_aside(Path(path), f"lacks {', '.join(missing)}")
            return None
        return cls(**{f.name: state[f.name] for f in dataclasses.fields(cls)})

    @staticmethod
    def finished_epochs(path: str | Path, config: TrainConfig) -> int:
        """The epochs a resume from ``path`` starts after (0: none, or not resumable)."""
        state = Checkpoint.load(path, config) if Path(path).exists() else None
        return 0 if state is None else int(state.epoch)
