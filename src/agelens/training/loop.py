"""Training an age network on aligned chips: transfer learning from the bundled ResNet-10.

Both tasks train the same thing, a distribution over ages, so every trained model is
an ordinary age bundle that ``predict``, ``gate`` and the server use unchanged:

- ``age``: a label-distribution loss (KL to a Gaussian around the true age) plus the
  L1 error of the expected age, as in DLDL-v2. The head is widened from 0-80 to
  ``max_age`` years, the new rows starting from the 80-year row.
- ``groups``: cross-entropy on the group masses (sums of the distribution over each
  group's ages), with optional class weights against unbalanced classes.

``head`` mode trains the last layer on frozen, once-computed features; ``finetune``
trains every layer, the backbone at a lower learning rate than the head, with
augmentation and early stopping on the validation split.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.nn import functional

from agelens.decisions.groups import GroupScheme
from agelens.training.torch_network import AgeNet

Task = Literal["age", "groups"]
Mode = Literal["head", "finetune"]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Everything that decides a training run; stored in the bundle's manifest."""

    task: Task = "age"
    mode: Mode = "finetune"
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 1e-3
    backbone_lr_ratio: float = 0.1
    weight_decay: float = 1e-4
    dropout: float = 0.2
    label_sigma: float = 2.0
    l1_weight: float = 0.1
    class_weights: bool = False
    augment: bool = True
    #: Share of augmented chips shown at a lower resolution (see :func:`augment`).
    low_resolution: float = 0.3
    patience: int = 4
    average_last: int = 3
    seed: int = 0
    max_age: int = 116


@dataclass(slots=True)
class LabelledChips:
    """uint8 chips ``[N, S, S, 3]`` with ages (years) and/or group indices (-1 when unknown)."""

    chips: NDArray[np.uint8]
    ages: NDArray[np.float32]
    groups: NDArray[np.int64]


@dataclass(slots=True)
class TrainResult:
    net: nn.Module
    class_ages: list[float]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    #: Where it trained ("cpu", "cuda"...), so its time can be read for what it is.
    device: str = "cpu"


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` is the first CUDA GPU when torch sees one, else the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("a CUDA device was asked for, but torch sees none")
    return device


def class_ages_for(max_age: int) -> list[float]:
    """Output classes in years: 0.25 for babies, as in the bundled network, then 1…max_age."""
    return [0.25] + [float(a) for a in range(1, max_age + 1)]


def widen_head(net: AgeNet, classes: int) -> None:
    """Grow an 81-way head to ``classes`` ages; new rows copy the oldest one, less likely."""
    old = net.head
    if old.out_features == classes:
        return
    net.replace_head(classes)
    with torch.no_grad():
        keep = min(classes, old.out_features)
        net.head.weight[:keep] = old.weight[:keep]
        net.head.bias[:keep] = old.bias[:keep]
        for row in range(keep, classes):
            net.head.weight[row] = old.weight[keep - 1]
            net.head.bias[row] = old.bias[keep - 1] - 0.05 * (row - keep + 1)


class Normalise:
    """uint8 NHWC chips -> float NCHW input, with the bundle's mean and scale."""

    def __init__(self, mean: tuple[float, float, float], scale: float) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.scale = scale

    def __call__(self, chips: torch.Tensor) -> torch.Tensor:
        return self.pixels(chips.permute(0, 3, 1, 2).float())

    def pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """Float NCHW pixels (0-255) -> network input, channels-last (faster on CPU)."""
        normalised = (batch - self.mean.to(batch.device)) * self.scale
        return normalised.contiguous(memory_format=torch.channels_last)


def augment(
    batch: torch.Tensor, generator: torch.Generator, low_resolution: float = 0.3
) -> torch.Tensor:
    """Flip, small shift/scale/rotation (edges repeated), low resolution, brightness,
    contrast, some grey.

    Low resolution: a share (``low_resolution``) of the chips is shrunk to between a quarter
    and three quarters of its side and enlarged back, as a small face in a photo is.
    Without it, a network fine-tuned on sharp crops reads blurred faces as younger
    (UTKFace test, 96-px chips seen at 48 px: mean error -1.8 years, -3.3 for ages 31-50).
    Works on float NCHW pixels in 0-255, before normalisation.
    """
    n = batch.shape[0]

    def uniform(low: float, high: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * (high - low) + low).to(batch.device)

    flip = (torch.rand(n, generator=generator) < 0.5).to(batch.device)
    batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(3), batch)
    scale, angle = uniform(0.9, 1.1), uniform(-0.14, 0.14)
    shift_x, shift_y = uniform(-0.06, 0.06), uniform(-0.06, 0.06)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1
    )
    grid = functional.affine_grid(theta, list(batch.shape), align_corners=False)
    batch = functional.grid_sample(batch, grid, padding_mode="border", align_corners=False)
    if low_resolution > 0:
        # Skipped at 0, random draws included, so runs made without it replay exactly.
        batch = _at_low_resolution(batch, low_resolution, generator)
    grey = batch.mean(dim=1, keepdim=True)
    to_grey = (torch.rand(n, generator=generator) < 0.15).to(batch.device).view(-1, 1, 1, 1)
    batch = torch.where(to_grey, grey.expand_as(batch), batch)
    mean = batch.mean(dim=(1, 2, 3), keepdim=True)
    contrast, brightness = uniform(0.7, 1.3).view(-1, 1, 1, 1), uniform(0.75, 1.25)
    batch = (batch - mean) * contrast + mean * brightness.view(-1, 1, 1, 1)
    return batch.clamp(0, 255)


def _at_low_resolution(
    batch: torch.Tensor, share: float, generator: torch.Generator
) -> torch.Tensor:
    """``share`` of the chips shrunk to one random side and enlarged back."""
    size = batch.shape[-1]
    side = int(torch.randint(size // 4, size * 3 // 4 + 1, (1,), generator=generator))
    small = functional.interpolate(batch, size=(side, side), mode="area")
    enlarged = functional.interpolate(
        small, size=(size, size), mode="bilinear", align_corners=False
    )
    chosen = (torch.rand(len(batch), generator=generator) < share).to(batch.device)
    chosen = chosen.view(-1, 1, 1, 1)
    return torch.where(chosen, enlarged, batch)


class Objective:
    """The task's loss, and its validation score (lower is better) on probabilities."""

    def __init__(
        self,
        config: TrainConfig,
        class_ages: list[float],
        scheme: GroupScheme | None,
        group_weights: torch.Tensor | None,
        device: torch.device | None = None,
    ) -> None:
        self.config = config
        self.ages = torch.tensor(class_ages, dtype=torch.float32, device=device)
        self.membership = (
            torch.from_numpy(scheme.membership(np.asarray(class_ages))).float().to(device)
            if scheme is not None
            else None
        )
        self.group_weights = None if group_weights is None else group_weights.to(device)

    def loss(self, logits: torch.Tensor, ages: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        log_p = functional.log_softmax(logits, dim=1)
        if self.config.task == "groups":
            return functional.nll_loss(
                self.group_log_probabilities(log_p), groups, weight=self.group_weights
            )
        sigma = self.config.label_sigma
        target = torch.exp(-0.5 * ((self.ages.view(1, -1) - ages.view(-1, 1)) / sigma) ** 2)
        target = target / target.sum(dim=1, keepdim=True)
        divergence = functional.kl_div(log_p, target, reduction="batchmean")
        expected = log_p.exp() @ self.ages
        return divergence + self.config.l1_weight * (expected - ages).abs().mean()

    def group_log_probabilities(self, log_p: torch.Tensor) -> torch.Tensor:
        assert self.membership is not None
        masked = log_p.unsqueeze(2) + torch.log(self.membership.clamp_min(1e-30)).unsqueeze(0)
        return torch.logsumexp(masked, dim=1)

    def score(
        self, probabilities: torch.Tensor, ages: torch.Tensor, groups: torch.Tensor
    ) -> dict[str, float]:
        if self.config.task == "groups":
            assert self.membership is not None
            predicted = (probabilities @ self.membership).argmax(dim=1)
            accuracy = float((predicted == groups).float().mean())
            return {"accuracy": accuracy, "score": 1.0 - accuracy}
        mae = float(((probabilities @ self.ages) - ages).abs().mean())
        return {"mae": mae, "score": mae}


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
) -> TrainResult:
    """Train a copy of ``base``; returns the weights of the best validation epoch, on the CPU.

    On a GPU (``device``) the random draws still come from one CPU generator, so a seed
    shuffles and augments alike on any device.
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
    weights = _group_weights(train_set.groups, scheme) if config.class_weights else None
    objective = Objective(config, class_ages, scheme, weights, device)
    if config.mode == "head":
        history, best_epoch = _train_head(
            net, train_set, val_set, normalise, objective, generator, on_epoch
        )
    else:
        history, best_epoch = _finetune(
            net, train_set, val_set, normalise, objective, generator, on_epoch, on_step
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


def _group_weights(groups: NDArray[np.int64], scheme: GroupScheme | None) -> torch.Tensor:
    """Inverse-frequency weights, normalised to average 1 over the samples."""
    if scheme is None:
        raise ValueError("class weights need a group scheme")
    counts = np.bincount(groups[groups >= 0], minlength=len(scheme.labels)).astype(np.float64)
    weights = np.where(
        counts > 0, counts.sum() / np.maximum(counts, 1) / np.count_nonzero(counts), 0
    )
    return torch.tensor(weights, dtype=torch.float32)


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


def _val_scores(
    objective: Objective, probabilities: torch.Tensor, ages: torch.Tensor, groups: torch.Tensor
) -> dict[str, float]:
    """``val_loss`` and the task's ``val_`` metrics, ``val_score`` (lower is better) among them."""
    device = objective.ages.device
    probabilities, ages, groups = probabilities.to(device), ages.to(device), groups.to(device)
    with torch.inference_mode():
        loss = float(objective.loss(torch.log(probabilities.clamp_min(1e-12)), ages, groups))
    scores = objective.score(probabilities, ages, groups)
    return {"val_loss": loss, **{f"val_{k}": v for k, v in scores.items()}}


def _evaluate(
    net: AgeNet, data: LabelledChips, normalise: Normalise, objective: Objective
) -> dict[str, float]:
    probabilities = predict_probabilities(net, data.chips, normalise)
    return _val_scores(
        objective, probabilities, torch.from_numpy(data.ages), torch.from_numpy(data.groups)
    )


class _BestSoFar:
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


def _finetune(
    net: AgeNet,
    train_set: LabelledChips,
    val_set: LabelledChips,
    normalise: Normalise,
    objective: Objective,
    generator: torch.Generator,
    on_epoch: Callable[[dict[str, float]], None] | None,
    on_step: Callable[[int, int], None] | None,
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
    history: list[dict[str, float]] = []
    best = _BestSoFar(net, config.patience)
    averaged: list[dict[str, torch.Tensor]] = []
    for epoch in range(1, config.epochs + 1):
        net.train()
        order = torch.randperm(len(chips), generator=generator)
        running, seen = 0.0, 0
        for step, start in enumerate(range(0, len(order), config.batch_size)):
            index = order[start : start + config.batch_size].to(device)
            pixels = chips[index].permute(0, 3, 1, 2).float()
            if config.augment:
                pixels = augment(pixels, generator, config.low_resolution)
            x = normalise.pixels(pixels)
            loss = objective.loss(net(x), ages[index], groups[index])
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
            **_evaluate(net, val_set, normalise, objective),
        }
        history.append(row)
        if on_epoch:
            on_epoch(row)
        stop = best.update(row["val_score"], epoch)
        if epoch > config.epochs - config.average_last:
            averaged.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        if stop:
            break
    if len(averaged) > 1:
        # The last epochs' weights, averaged (no batch norm to re-estimate in this network).
        net.load_state_dict({k: sum(s[k] for s in averaged) / len(averaged) for k in averaged[0]})
        row = {
            "epoch": len(history) + 1,
            "averaged_epochs": len(averaged),
            **_evaluate(net, val_set, normalise, objective),
        }
        if on_epoch:
            on_epoch(row)
        if row["val_score"] < best.score:
            history.append({**row, "train_loss": history[-1]["train_loss"]})
            return history, row["epoch"]
    best.restore()
    return history, best.epoch


def _train_head(
    net: AgeNet,
    train_set: LabelledChips,
    val_set: LabelledChips,
    normalise: Normalise,
    objective: Objective,
    generator: torch.Generator,
    on_epoch: Callable[[dict[str, float]], None] | None,
) -> tuple[list[dict[str, float]], int]:
    """Features once (with mirrored copies for training), then the linear head alone."""
    config = objective.config
    net.eval()
    train_features = _features(net, train_set.chips, normalise, mirror=True)
    val_features = _features(net, val_set.chips, normalise, mirror=False)
    device = objective.ages.device
    train_ages = torch.from_numpy(train_set.ages).repeat(2).to(device)
    train_groups = torch.from_numpy(train_set.groups).repeat(2).to(device)
    val_ages, val_groups = torch.from_numpy(val_set.ages), torch.from_numpy(val_set.groups)
    head = net.head
    optimiser = torch.optim.AdamW(
        head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    history: list[dict[str, float]] = []
    best = _BestSoFar(head, config.patience)
    for epoch in range(1, config.epochs + 1):
        order = torch.randperm(len(train_features), generator=generator).to(device)
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
            **_val_scores(objective, probabilities, val_ages, val_groups),
        }
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if best.update(row["val_score"], epoch):
            break
    best.restore()
    return history, best.epoch


def _features(
    net: AgeNet, chips: NDArray[np.uint8], normalise: Normalise, *, mirror: bool
) -> torch.Tensor:
    """Pooled features of every chip, then (``mirror``) of every mirrored chip."""
    device = next(net.parameters()).device
    outputs = []
    with torch.inference_mode():
        for flipped in (False, True) if mirror else (False,):
            for start in range(0, len(chips), 256):
                x = normalise(torch.from_numpy(chips[start : start + 256]).to(device))
                outputs.append(net.features(x.flip(3) if flipped else x))
    return torch.cat(outputs).clone()
