"""The output classes (ages) and the loss over them, for both tasks.

- ``age``: a label-distribution loss (KL to a Gaussian around the true age) plus the
  L1 error of the expected age, as in DLDL-v2. The head is widened from 0-80 to
  ``max_age`` years, the new rows starting from the 80-year row.
- ``groups``: cross-entropy on the group masses (sums of the distribution over each
  group's ages), with optional class weights against unbalanced classes.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch.nn import functional

from agelens.decisions.groups import GroupScheme
from agelens.networks.resnet10 import AgeNet
from agelens.training.config import TrainConfig

#: On mixed data, the validation score adds this many years of MAE per unit of group
#: error: a point of accuracy on the group-labelled set weighs as 0.1 years.
GROUP_ERROR_YEARS = 10.0


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
        """Mean loss over the batch. In the age task, a sample without an age (NaN) but
        with a group (another dataset's labels) counts by the mass on its group."""
        log_p = functional.log_softmax(logits, dim=1)
        if self.config.task == "groups":
            return self._group_loss(log_p, groups)
        known = ~torch.isnan(ages)
        if bool(known.all()):
            return self._age_loss(log_p, ages)
        grouped = ~known & (groups >= 0)
        total = log_p.new_zeros(())
        if bool(known.any()):
            total = total + self._age_loss(log_p[known], ages[known]) * known.sum()
        if self.membership is not None and bool(grouped.any()):
            total = total + self._group_loss(log_p[grouped], groups[grouped]) * grouped.sum()
        return total / (known | grouped).sum().clamp_min(1)

    def _age_loss(self, log_p: torch.Tensor, ages: torch.Tensor) -> torch.Tensor:
        sigma = self.config.label_sigma
        target = torch.exp(-0.5 * ((self.ages.view(1, -1) - ages.view(-1, 1)) / sigma) ** 2)
        target = target / target.sum(dim=1, keepdim=True)
        divergence = functional.kl_div(log_p, target, reduction="batchmean")
        expected = log_p.exp() @ self.ages
        return divergence + self.config.l1_weight * (expected - ages).abs().mean()

    def _group_loss(self, log_p: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
        return functional.nll_loss(
            self.group_log_probabilities(log_p), groups, weight=self.group_weights
        )

    def group_log_probabilities(self, log_p: torch.Tensor) -> torch.Tensor:
        assert self.membership is not None
        masked = log_p.unsqueeze(2) + torch.log(self.membership.clamp_min(1e-30)).unsqueeze(0)
        return torch.logsumexp(masked, dim=1)

    def score(
        self, probabilities: torch.Tensor, ages: torch.Tensor, groups: torch.Tensor
    ) -> dict[str, float]:
        """Group accuracy (groups task); MAE (age task), and on mixed data
        ``group_only_accuracy``: the accuracy on the samples known only by group, scored
        as ``GROUP_ERROR_YEARS`` per unit of error."""
        accuracy = None
        if self.config.task == "groups" or self.membership is not None:
            grouped = (
                groups >= 0 if self.config.task == "groups" else torch.isnan(ages) & (groups >= 0)
            )
            if bool(grouped.any()):
                predicted = (probabilities[grouped] @ self.membership).argmax(dim=1)
                accuracy = float((predicted == groups[grouped]).float().mean())
        if self.config.task == "groups":
            assert accuracy is not None
            return {"accuracy": accuracy, "score": 1.0 - accuracy}
        known = ~torch.isnan(ages)
        mae = float(((probabilities[known] @ self.ages) - ages[known]).abs().mean())
        if accuracy is None:
            return {"mae": mae, "score": mae}
        score = mae + GROUP_ERROR_YEARS * (1.0 - accuracy)
        return {"mae": mae, "group_only_accuracy": accuracy, "score": score}


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """KL(teacher || network), averaged over the batch: the teacher is the starting network
    in tail mode (learning without forgetting) or a stronger bundle (distillation)."""
    return functional.kl_div(functional.log_softmax(logits, dim=1), teacher, reduction="batchmean")


def group_weights(groups: NDArray[np.int64], scheme: GroupScheme | None) -> torch.Tensor:
    """Inverse-frequency weights, normalised to average 1 over the samples."""
    if scheme is None:
        raise ValueError("class weights need a group scheme")
    counts = np.bincount(groups[groups >= 0], minlength=len(scheme.labels)).astype(np.float64)
    weights = np.where(
        counts > 0, counts.sum() / np.maximum(counts, 1) / np.count_nonzero(counts), 0
    )
    return torch.tensor(weights, dtype=torch.float32)
