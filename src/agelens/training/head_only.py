"""``--mode head``: the last layer alone, trained on features computed once.

The features are cached, named by the weights that compute them, the chips' bytes and
whether mirrored copies are included: a second seed or recipe on the same data and base
reads them back instead of running the network over every chip again (on a 224-px base,
most of a first run's time).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from agelens.data.sampling import balanced_weights, epoch_order
from agelens.networks.resnet10 import AgeNet
from agelens.progress import task_progress
from agelens.training.augmentation import Normalise
from agelens.training.config import LabelledChips
from agelens.training.objective import Objective
from agelens.training.validation import BestSoFar, end_epoch, val_scores

#: Chips a feature pass takes at once.
_BATCH = 64


def train_head(
    net: AgeNet,
    train_set: LabelledChips,
    val_set: LabelledChips,
    normalise: Normalise,
    objective: Objective,
    generator: torch.Generator,
    on_epoch: Callable[[dict[str, float]], None] | None,
    cache_dir: Path,
) -> tuple[list[dict[str, float]], int]:
    """Features once (with mirrored copies for training), then the linear head alone."""
    config = objective.config
    net.eval()
    train_features = cached_features(net, train_set.chips, normalise, cache_dir, mirror=True)
    val_features = cached_features(net, val_set.chips, normalise, cache_dir, mirror=False)
    device = objective.ages.device
    train_ages = torch.from_numpy(train_set.ages).repeat(2).to(device)
    train_groups = torch.from_numpy(train_set.groups).repeat(2).to(device)
    val_ages, val_groups = torch.from_numpy(val_set.ages), torch.from_numpy(val_set.groups)
    weights = balanced_weights(train_set.ages, train_set.sources, config.balance)
    head = net.head
    optimiser = torch.optim.AdamW(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    history: list[dict[str, float]] = []
    best = BestSoFar(head, config.patience)
    for epoch in range(1, config.epochs + 1):
        order = epoch_order(len(train_features), generator, weights).to(device)
        running = 0.0
        for start in range(0, len(order), config.batch_size):
            index = order[start : start + config.batch_size]
            features = functional.dropout(train_features[index], config.dropout, training=True)
            loss = objective.loss(head(features), train_ages[index], train_groups[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            running += loss.item() * len(index)
        with torch.inference_mode():
            probabilities = torch.softmax(head(val_features), dim=1)
        row = {
            "epoch": epoch,
            "train_loss": running / len(order),
            **val_scores(objective, probabilities, val_ages, val_groups),
        }
        if end_epoch(history, row, best, on_epoch):
            break
    best.restore()
    return history, best.epoch


def cached_features(
    net: AgeNet, chips: NDArray[np.uint8], normalise: Normalise, cache_dir: Path, *, mirror: bool
) -> torch.Tensor:
    """:func:`_features`, read from ``cache_dir`` when the same weights saw the same chips."""
    settings = f"features-v1-{int(mirror)}-{normalise.mean.flatten().tolist()}-{normalise.scale}"
    identity = hashlib.sha1(settings.encode())
    for name, tensor in [*net.named_parameters(), *net.named_buffers()]:
        if not name.startswith("head."):
            identity.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    identity.update(np.ascontiguousarray(chips).data)
    path = cache_dir / f"features-{identity.hexdigest()[:20]}.npy"
    device = next(net.parameters()).device
    if path.is_file():
        return torch.from_numpy(np.load(path)).to(device)
    features = _features(net, chips, normalise, mirror=mirror)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npy")
    np.save(partial, features.cpu().numpy())
    partial.replace(path)
    return features


def _features(
    net: AgeNet, chips: NDArray[np.uint8], normalise: Normalise, *, mirror: bool
) -> torch.Tensor:
    """Pooled features of every chip, then (``mirror``) of every mirrored chip."""
    device = next(net.parameters()).device
    outputs = []
    passes = (False, True) if mirror else (False,)
    with torch.inference_mode(), task_progress() as progress:
        task = progress.add_task("Features of the base", total=len(chips) * len(passes))
        for flipped in passes:
            for start in range(0, len(chips), _BATCH):
                x = normalise(torch.from_numpy(chips[start : start + _BATCH]).to(device))
                outputs.append(net.features(x.flip(3) if flipped else x))
                progress.advance(task, len(x))
    return torch.cat(outputs).clone()
