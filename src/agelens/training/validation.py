"""Scoring a network on the validation split, and early stopping on that score."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from agelens.networks.resnet10 import AgeNet
from agelens.training.augmentation import Normalise
from agelens.training.config import LabelledChips
from agelens.training.objective import Objective


def predict_probabilities(
    net: nn.Module,
    chips: NDArray[np.uint8],
    normalise: Normalise,
    *,
    flip: bool = False,
    batch: int = 256,
) -> torch.Tensor:
    """Softmax outputs (on the CPU) for uint8 chips, in evaluation mode, on the network's
    device, optionally averaged with the mirror."""
    net.eval()
    device = next(net.parameters()).device
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(chips), batch):
            x = normalise(torch.from_numpy(chips[start : start + batch]).to(device))
            p = torch.softmax(net(x), dim=1)
            if flip:
                p = (p + torch.softmax(net(x.flip(3)), dim=1)) / 2
            outputs.append(p.cpu())
    return torch.cat(outputs)


def val_scores(
    objective: Objective, probabilities: torch.Tensor, ages: torch.Tensor, groups: torch.Tensor
) -> dict[str, float]:
    """``val_loss`` and the task's ``val_`` metrics, ``val_score`` (lower is better) among them."""
    device = objective.ages.device
    probabilities, ages, groups = probabilities.to(device), ages.to(device), groups.to(device)
    with torch.inference_mode():
        loss = float(objective.loss(torch.log(probabilities.clamp_min(1e-12)), ages, groups))
    scores = objective.score(probabilities, ages, groups)
    return {"val_loss": loss, **{f"val_{k}": v for k, v in scores.items()}}


def evaluate(
    net: AgeNet, data: LabelledChips, normalise: Normalise, objective: Objective
) -> dict[str, float]:
    probabilities = predict_probabilities(net, data.chips, normalise)
    return val_scores(
        objective, probabilities, torch.from_numpy(data.ages), torch.from_numpy(data.groups)
    )


class BestSoFar:
    """Early stopping: the best validation score so far, its epoch and weights."""

    def __init__(self, module: nn.Module, patience: int) -> None:
        self.module, self.patience = module, patience
        self.score, self.epoch, self.waited = math.inf, 0, 0
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, score: float, epoch: int) -> bool:
        """Record an epoch's score; True when ``patience`` epochs have passed without gain."""
        if score < self.score:
            self.score, self.epoch, self.waited = score, epoch, 0
            self.state = copy.deepcopy(self.module.state_dict())
        else:
            self.waited += 1
        return self.waited >= self.patience

    def restore(self) -> None:
        if self.state is not None:
            self.module.load_state_dict(self.state)


def end_epoch(
    history: list[dict[str, float]],
    row: dict[str, float],
    best: BestSoFar,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> bool:
    """Record and report an epoch's row; True when early stopping ends the run."""
    history.append(row)
    if on_epoch:
        on_epoch(row)
    return best.update(row["val_score"], int(row["epoch"]))
