"""Calibrated age intervals by split conformal prediction, scaled by each face's own spread.

For each validation face the score is ``|true age - expected age| / spread``, with
the spread the standard deviation of the predicted distribution. The interval at
level ``L`` is ``expected age +/- q_L x spread``, where ``q_L`` is the conformal
quantile of the scores: the ``ceil((n + 1) L)``-th smallest. It covers a fresh
face with probability at least ``L`` when faces are exchangeable with the
validation set, and it is wide where the network is unsure, narrow where it is sure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Levels stored in a bundle's calibration; other levels fall back to distribution quantiles.
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.98)
METHOD = "split-conformal, scaled by the distribution's standard deviation"


def moments(
    distributions: NDArray[np.floating], class_ages: Sequence[float]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Expected age and standard deviation of each row's distribution."""
    values = np.asarray(class_ages, dtype=np.float64)
    probabilities = distributions.astype(np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    mean = probabilities @ values
    variance = probabilities @ values**2 - mean**2
    return mean, np.sqrt(np.maximum(variance, 1e-6))


def fit(
    distributions: NDArray[np.floating],
    class_ages: Sequence[float],
    true_ages: NDArray[np.floating],
    *,
    split: str = "val",
) -> dict[str, Any]:
    """The calibration record a bundle manifest stores."""
    mean, spread = moments(distributions, class_ages)
    scores = np.sort(np.abs(np.asarray(true_ages, dtype=np.float64) - mean) / spread)
    n = len(scores)
    if n == 0:
        raise ValueError("calibration needs at least one labelled face")
    quantiles = {}
    for level in LEVELS:
        rank = min(math.ceil((n + 1) * level), n)
        quantiles[f"{level:g}"] = round(float(scores[rank - 1]), 5)
    return {"method": METHOD, "split": split, "n": n, "quantiles": quantiles}


def quantile_for(calibration: dict[str, Any] | None, level: float) -> float | None:
    """The stored multiplier for ``level``, or None when the bundle has none for it."""
    if not calibration:
        return None
    value = calibration.get("quantiles", {}).get(f"{level:g}")
    return None if value is None else float(value)


def intervals(
    mean: NDArray[np.float64], spread: NDArray[np.float64], multiplier: float, max_age: float
) -> NDArray[np.float64]:
    """``[N, 2]`` calibrated intervals, clipped to the ages the network covers."""
    low = np.clip(mean - multiplier * spread, 0.0, max_age)
    high = np.clip(mean + multiplier * spread, 0.0, max_age)
    return np.stack([low, high], axis=1)


def coverage(interval_rows: NDArray[np.floating], true_ages: NDArray[np.floating]) -> float:
    """Share of true ages inside their interval."""
    truth = np.asarray(true_ages, dtype=np.float64)
    inside = (truth >= interval_rows[:, 0]) & (truth <= interval_rows[:, 1])
    return float(inside.mean()) if len(truth) else float("nan")
