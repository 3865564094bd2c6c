"""What decides a training run, what it trains on, what it returns, and where it runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

Task = Literal["age", "groups"]
Mode = Literal["head", "finetune", "tail"]


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
    #: ``tail`` mode: the node whose cached activation training starts from.
    cut: str = ""
    #: ``tail`` mode: weight of the distillation from the starting network (LwF).
    distill: float = 0.0
    #: ``tail`` mode: weight of the L2 penalty towards the starting weights (L2-SP).
    l2sp: float = 0.0
    #: ``finetune`` mode: a bundle whose distributions on the training chips are learnt
    #: besides the labels (knowledge distillation into a smaller student), and their weight.
    teacher: str = ""
    teacher_weight: float = 1.0
    #: How far each epoch evens out collections and age bands (:mod:`agelens.data.sampling`): 0 the
    #: data's own mix, 1 every collection-and-band cell alike.
    balance: float = 0.0

    def __post_init__(self) -> None:
        # Only the fine-tuning loop learns from a teacher: elsewhere it would be computed
        # and silently ignored.
        if self.teacher and self.mode != "finetune":
            raise ValueError("a teacher (--teacher) trains a student in --mode finetune only")
        if not 0 <= self.balance <= 1:
            raise ValueError(f"--balance is 0-1, got {self.balance}")


@dataclass(slots=True)
class LabelledChips:
    """uint8 chips ``[N, S, S, 3]`` with ages (years) and/or group indices (-1 when unknown),
    and, when a teacher is distilled, its distribution over the output ages for each chip."""

    chips: NDArray[np.uint8]
    ages: NDArray[np.float32]
    groups: NDArray[np.int64]
    teacher: NDArray[np.float32] | None = None
    #: Which ``--data`` each chip came from (its position), so that figures can be given
    #: per collection as well as pooled.
    sources: NDArray[np.int64] | None = None

    def rows(self, chosen: NDArray[np.bool_]) -> LabelledChips:
        """The chips where ``chosen`` holds, with all they carry."""
        return LabelledChips(
            self.chips[chosen],
            self.ages[chosen],
            self.groups[chosen],
            None if self.teacher is None else self.teacher[chosen],
            None if self.sources is None else self.sources[chosen],
        )


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
