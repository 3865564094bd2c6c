"""Training an age network on aligned chips: transfer learning from the bundled ResNet-10.

Both tasks train the same thing, a distribution over ages, so every trained model is
an ordinary age bundle that ``predict``, ``gate`` and the server use unchanged (the
losses are in :mod:`agelens.training.objective`).

``head`` mode trains the last layer on frozen, once-computed features
(:mod:`agelens.training.head_only`); ``finetune`` trains every layer, the backbone at a
lower learning rate than the head, with augmentation and early stopping on the
validation split.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from agelens.data.chip_cache import default_cache_dir
from agelens.data.sampling import balanced_weights, epoch_order
from agelens.decisions.groups import GroupScheme
from agelens.networks.graph_age_net import GraphAgeNet
from agelens.networks.resnet10 import AgeNet
from agelens.training.augmentation import Normalise, augment
from agelens.training.checkpoint import resume_checkpoint, save_checkpoint
from agelens.training.config import LabelledChips, TrainConfig, TrainResult
from agelens.training.head_only import train_head
from agelens.training.objective import (
    Objective,
    class_ages_for,
    distillation_loss,
    group_weights,
    widen_head,
)
from agelens.training.tail import train_tail
from agelens.training.validation import BestSoFar, end_epoch, evaluate


def train(
    base: AgeNet,
    train_set: LabelledChips,
    val_set: LabelledChips,
    normalise: Normalise,
    config: TrainConfig,
    *,
    scheme: GroupScheme | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    device: torch.device | None = None,
    cache_dir: Path | None = None,
    checkpoint: Path | None = None,
) -> TrainResult:
    """Train a copy of ``base``; returns the weights of the best validation epoch, on the CPU.

    On a GPU (``device``) the random draws still come from one CPU generator, so a seed
    shuffles and augments alike on any device. ``head`` mode caches features and ``tail``
    mode activations in ``cache_dir``; ``finetune`` and ``tail`` checkpoint each epoch to
    ``checkpoint``, from which a run started again resumes.
    """
    device = device or torch.device("cpu")
    torch.manual_seed(config.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    generator = torch.Generator().manual_seed(config.seed)
    started = time.perf_counter()
    class_ages = class_ages_for(config.max_age)
    net = copy.deepcopy(base)
    widen_head(net, len(class_ages))
    net = net.to(device, memory_format=torch.channels_last)
    net.dropout.p = config.dropout
    weights = group_weights(train_set.groups, scheme) if config.class_weights else None
    objective = Objective(config, class_ages, scheme, weights, device)
    if config.mode == "head":
        history, best_epoch = train_head(
            net,
            train_set,
            val_set,
            normalise,
            objective,
            generator,
            on_epoch,
            cache_dir or default_cache_dir(),
        )
    elif config.mode == "tail":
        if not isinstance(net, GraphAgeNet) or not config.cut:
            raise ValueError("tail mode needs an imported graph network and the node to start from")
        history, best_epoch = train_tail(
            net,
            config.cut,
            train_set,
            val_set,
            normalise,
            objective,
            generator,
            cache_dir=cache_dir or default_cache_dir(),
            checkpoint=checkpoint,
            on_epoch=on_epoch,
            on_step=on_step,
        )
    else:
        history, best_epoch = _finetune(
            net, train_set, val_set, normalise, objective, generator, on_epoch, on_step, checkpoint
        )
    return TrainResult(
        net.cpu().eval(),
        class_ages,
        history,
        best_epoch,
        time.perf_counter() - started,
        asdict(config),
        device.type,
    )


def _finetune(
    net: AgeNet,
    train_set: LabelledChips,
    val_set: LabelledChips,
    normalise: Normalise,
    objective: Objective,
    generator: torch.Generator,
    on_epoch: Callable[[dict[str, float]], None] | None,
    on_step: Callable[[int, int], None] | None,
    checkpoint: Path | None = None,
) -> tuple[list[dict[str, float]], int]:
    config = objective.config
    backbone = [p for name, p in net.named_parameters() if not name.startswith("head.")]
    optimiser = torch.optim.AdamW(
        [
            {"params": backbone, "lr": config.learning_rate * config.backbone_lr_ratio},
            {"params": net.head.parameters(), "lr": config.learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = math.ceil(len(train_set.chips) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = min(steps_per_epoch, total // 10 + 1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        lambda step: (
            min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        ),
    )
    device = objective.ages.device
    chips = torch.from_numpy(train_set.chips).to(device)
    ages = torch.from_numpy(train_set.ages).to(device)
    groups = torch.from_numpy(train_set.groups).to(device)
    teacher = None if train_set.teacher is None else torch.from_numpy(train_set.teacher).to(device)
    weights = balanced_weights(train_set.ages, train_set.sources, config.balance)
    best = BestSoFar(net, config.patience)
    progress = resume_checkpoint(checkpoint, net, optimiser, generator, best)
    if progress.epoch:
        scheduler.load_state_dict(progress.extra["scheduler"])
    history = progress.history
    averaged: list[dict[str, torch.Tensor]] = progress.extra.get("averaged", [])
    for epoch in progress.epochs_left(config.epochs):
        net.train()
        order = epoch_order(len(chips), generator, weights)
        running, seen = 0.0, 0
        for step, start in enumerate(range(0, len(order), config.batch_size)):
            index = order[start : start + config.batch_size].to(device)
            pixels = chips[index].permute(0, 3, 1, 2).float()
            if config.augment:
                pixels = augment(pixels, generator, config.low_resolution)
            x = normalise.pixels(pixels)
            logits = net(x)
            loss = objective.loss(logits, ages[index], groups[index])
            if teacher is not None:
                loss = loss + config.teacher_weight * distillation_loss(logits, teacher[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            scheduler.step()
            running += loss.item() * len(index)
            seen += len(index)
            if on_step:
                on_step(step + 1, steps_per_epoch)
        row = {
            "epoch": epoch,
            "train_loss": running / seen,
            **evaluate(net, val_set, normalise, objective),
        }
        stop = end_epoch(history, row, best, on_epoch)
        if epoch > config.epochs - config.average_last:
            averaged.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        if checkpoint is not None:
            progress.epoch, progress.stopped = epoch, stop
            progress.extra = {"scheduler": scheduler.state_dict(), "averaged": averaged}
            save_checkpoint(checkpoint, net, optimiser, generator, best, progress)
        if stop:
            break
    if len(averaged) > 1:
        # The last epochs' weights, averaged (no batch norm to re-estimate in this network).
        net.load_state_dict({k: sum(s[k] for s in averaged) / len(averaged) for k in averaged[0]})
        row = {
            "epoch": len(history) + 1,
            "averaged_epochs": len(averaged),
            **evaluate(net, val_set, normalise, objective),
        }
        if on_epoch:
            on_epoch(row)
        if row["val_score"] < best.score:
            history.append({**row, "train_loss": history[-1]["train_loss"]})
            return history, row["epoch"]
    best.restore()
    return history, best.epoch
