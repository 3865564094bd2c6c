"""Each epoch's state on disk, so a long run that stops (a closed laptop, a killed job)
resumes at the next epoch with the same weights, optimiser, random draws and early-stopping
record, and ends as it would have without the stop."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agelens.training.validation import BestSoFar


@dataclass(slots=True)
class Progress:
    """Where a run stands after its last finished epoch; ``extra`` is what a loop adds."""

    history: list[dict[str, float]] = field(default_factory=list)
    epoch: int = 0
    #: Early stopping ended the run: a resumed run trains no further.
    stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def epochs_left(self, epochs: int) -> range:
        return range(self.epoch + 1, 0 if self.stopped else epochs + 1)


def save_checkpoint(
    path: Path,
    net: nn.Module,
    optimiser: torch.optim.Optimizer,
    generator: torch.Generator,
    best: BestSoFar,
    progress: Progress,
) -> None:
    """Written beside ``path`` and renamed into place, so a stop mid-write keeps the last."""
    state = {
        "net": net.state_dict(),
        "optimiser": optimiser.state_dict(),
        "generator": generator.get_state(),
        # Dropout draws from torch's global generators, not from the run's own.
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "history": progress.history,
        "epoch": progress.epoch,
        "stopped": progress.stopped,
        "best": (best.score, best.epoch, best.waited, copy.deepcopy(best.state)),
        "extra": progress.extra,
    }
    partial = path.with_suffix(".tmp")
    torch.save(state, partial)
    partial.replace(path)


def resume_checkpoint(
    path: Path | None,
    net: nn.Module,
    optimiser: torch.optim.Optimizer,
    generator: torch.Generator,
    best: BestSoFar,
) -> Progress:
    """Load ``path`` into the run's objects when it exists; a fresh start otherwise."""
    if path is None or not path.is_file():
        return Progress()
    state = torch.load(path, weights_only=False)
    net.load_state_dict(state["net"])
    optimiser.load_state_dict(state["optimiser"])
    generator.set_state(state["generator"])
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    best.score, best.epoch, best.waited, best.state = state["best"]
    return Progress(
        state["history"], state["epoch"], state.get("stopped", False), state.get("extra", {})
    )
