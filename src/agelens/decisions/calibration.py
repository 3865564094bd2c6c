"""Calibrated age intervals by split conformal prediction, scaled by each face's own spread.

For each validation face the score is ``|true age - expected age| / spread``. The
spread is ``sqrt(sd^2 + floor^2)``, with ``sd`` the standard deviation of the predicted
distribution. The interval at level ``L`` is ``expected age +/- q_L x spread``, where
``q_L`` is the conformal quantile of the scores: the ``ceil((n + 1) L)``-th smallest.
It covers a fresh face with probability at least ``L`` when faces are exchangeable
with the validation set, and it is wide where the network is unsure, narrow where it
is sure.

The floor (in years) keeps a network whose softmax is far too sure of itself from
getting absurd intervals: the bundled network gives some faces an ``sd`` under a
year and yet errs by ten. It is the value of :data:`FLOORS` whose 90% intervals are
narrowest on the calibration data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Fewest faces with known ages worth calibrating on.
MIN_FACES = 20
#: Levels stored in a bundle's calibration; other levels fall back to distribution quantiles.
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.98)
METHOD = "split-conformal, scaled by sqrt(sd^2 + floor^2) of the predicted distribution"
FLOORS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0)


def spread(sd: NDArray[np.float64], floor: float) -> NDArray[np.float64]:
    return np.sqrt(sd**2 + floor**2)


def _conformal_quantile(scores: NDArray[np.float64], level: float) -> float:
    ordered = np.sort(scores)
    rank = min(math.ceil((len(ordered) + 1) * level), len(ordered))
    return float(ordered[rank - 1])


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
    mean, sd = moments(distributions, class_ages)
    errors = np.abs(np.asarray(true_ages, dtype=np.float64) - mean)
    if len(errors) == 0:
        raise ValueError("calibration needs at least one labelled face")

    def mean_width(floor: float) -> float:
        widths = spread(sd, floor)
        return float((_conformal_quantile(errors / widths, 0.9) * widths).mean())

    floor = min(FLOORS, key=mean_width)
    scores = errors / spread(sd, floor)
    quantiles = {f"{level:g}": round(_conformal_quantile(scores, level), 5) for level in LEVELS}
    return {
        "method": METHOD,
        "split": split,
        "n": len(errors),
        "floor": floor,
        "quantiles": quantiles,
    }


def quantile_for(calibration: dict[str, Any] | None, level: float) -> float | None:
    """The stored multiplier for ``level``, or None when the bundle has none for it."""
    if not calibration:
        return None
    value = calibration.get("quantiles", {}).get(f"{level:g}")
    return None if value is None else float(value)


def intervals(
    distributions: NDArray[np.floating],
    class_ages: Sequence[float],
    record: dict[str, Any],
    level: float,
) -> NDArray[np.float64]:
    """``[N, 2]`` calibrated intervals at a stored ``level``, clipped to the network's ages."""
    multiplier = quantile_for(record, level)
    if multiplier is None:
        raise ValueError(f"the calibration has no quantile for level {level:g}")
    mean, sd = moments(distributions, class_ages)
    half = multiplier * spread(sd, float(record.get("floor", 0.0)))
    top = float(max(class_ages))
    return np.stack([np.clip(mean - half, 0.0, top), np.clip(mean + half, 0.0, top)], axis=1)


def coverage(interval_rows: NDArray[np.floating], true_ages: NDArray[np.floating]) -> float:
    """Share of true ages inside their interval."""
    truth = np.asarray(true_ages, dtype=np.float64)
    inside = (truth >= interval_rows[:, 0]) & (truth <= interval_rows[:, 1])
    return float(inside.mean()) if len(truth) else float("nan")
