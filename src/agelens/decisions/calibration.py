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

Calibrated on one set of faces, the guarantee holds only for faces like them: intervals
fitted on clean web crops covered 80-83% of the faces of scanned prints. AgeLens
therefore calibrates on the domain suite (:mod:`agelens.evaluation.domains`), taking for
each level the worst domain's quantile, separately for faces that pass the quality check
and faces that fail it (a Mondrian split: each class gets its own guarantee).
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
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
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
    """The calibration record of one set of faces (no domains, no quality classes)."""
    poor = np.zeros(len(true_ages), dtype=bool)
    return fit_domains({CLEAN: (distributions, true_ages, poor)}, class_ages, split=split)


#: One domain's calibration faces: distributions, true ages, and which faces are of poor
#: quality (they get the ``poor_quality`` multipliers).
DomainFaces = tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.bool_]]
CLEAN = "clean"


def fit_domains(
    domains: dict[str, DomainFaces],
    class_ages: Sequence[float],
    *,
    split: str = "val",
) -> dict[str, Any]:
    """The calibration record a bundle manifest stores, fitted so that it holds on the
    worst domain: for each quality class, each level's multiplier is the largest of the
    domains' conformal quantiles, taken at a level raised until a domain left out of the
    fit is still covered (:func:`_unseen_domain_target`).

    Faces the quality check fails (small, blurred, dark, turned, grey) err more, and
    differently in each domain; they get multipliers of their own (``poor_quality``), so
    that good faces keep narrow intervals. A class with fewer than :data:`MIN_FACES`
    faces in a domain does not vote for that domain; without enough good faces in any
    domain, every face is calibrated as one class.
    """
    rows = {
        name: (*moments(p, class_ages), np.asarray(truth, dtype=np.float64), np.asarray(poor))
        for name, (p, truth, poor) in domains.items()
    }
    if sum(len(truth) for _, _, truth, _ in rows.values()) == 0:
        raise ValueError("calibration needs at least one labelled face")

    fewest = MIN_FACES if len(rows) > 1 else 1

    def class_scores(floor: float, poor_class: bool) -> dict[str, NDArray[np.float64]]:
        """Each domain's scores for one quality class, where it has enough faces."""
        found = {}
        for name, (mean, sd, truth, poor) in rows.items():
            chosen = poor == poor_class
            if chosen.sum() >= fewest:
                found[name] = np.abs(truth[chosen] - mean[chosen]) / spread(sd[chosen], floor)
        return found

    def worst(scores: dict[str, NDArray[np.float64]], level: float) -> float:
        return max(_conformal_quantile(values, level) for values in scores.values())

    def mean_width(floor: float) -> float:
        widths = []
        for poor_class in (False, True):
            if scores := class_scores(floor, poor_class):
                multiplier = worst(scores, 0.9)
                widths += [
                    multiplier * spread(sd[poor == poor_class], floor)
                    for _, sd, _, poor in rows.values()
                ]
        return float(np.concatenate(widths).mean())

    if not class_scores(0.0, False):
        # Too few good faces anywhere to stand on their own: one class for every face.
        rows = {name: (*row[:3], np.zeros_like(row[3])) for name, row in rows.items()}

    floor = min(FLOORS, key=mean_width)
    record: dict[str, Any] = {
        "method": METHOD,
        "split": split,
        "domains": {name: len(truth) for name, (_, _, truth, _) in rows.items()},
        "n": sum(len(truth) for _, _, truth, _ in rows.values()),
        "floor": floor,
    }
    for poor_class in (False, True):
        scores = class_scores(floor, poor_class)
        if not scores:
            continue
        target, unseen = _unseen_domain_target(scores)
        table: dict[str, Any] = {
            "quantiles": {
                f"{level:g}": round(worst(scores, _inflated(level, target)), 5) for level in LEVELS
            }
        }
        if unseen:
            table["unseen_domain"] = {"target": target, "coverage": unseen}
        if poor_class:
            count = sum(int(poor.sum()) for *_, poor in rows.values())
            record["poor_quality"] = {"n": count, **table}
        else:
            record.update(table)
    return record


#: The levels at which the 90% multiplier may be taken, so that a domain left out of the
#: fit is still covered (see :func:`_unseen_domain_target`).
TARGETS = (0.9, 0.91, 0.92, 0.93, 0.94, 0.95)


def _unseen_domain_target(
    scores: dict[str, NDArray[np.float64]],
) -> tuple[float, dict[str, float]]:
    """The lowest target in :data:`TARGETS` at which the worst-domain multiplier, fitted
    without a domain, still covers 90% of that domain's faces, for every domain; and
    those leave-one-domain-out coverages.

    Photos users bring come from sources the suite lacks. Leaving each domain out in turn
    measures what a source the fit has not seen does to coverage, and the margin that
    makes up for it is kept.
    """
    if len(scores) < 2:
        return 0.9, {}
    unseen: dict[str, float] = {}
    for target in TARGETS:
        unseen = {}
        for name, values in scores.items():
            others = max(
                _conformal_quantile(v, target) for other, v in scores.items() if other != name
            )
            unseen[name] = round(float((values <= others).mean()), 4)
        if min(unseen.values()) >= 0.9:
            break
    return target, unseen


def _inflated(level: float, target: float) -> float:
    """``level`` with its miss rate shrunk as the 90% level's is shrunk to ``target``."""
    return 1.0 - (1.0 - level) * (1.0 - target) / 0.1


def quantile_for(
    calibration: dict[str, Any] | None, level: float, *, poor: bool = False
) -> float | None:
    """The stored multiplier for ``level`` (for faces of poor quality when ``poor``, where
    the record has them), or None when the bundle has none for it."""
    if not calibration:
        return None
    table = calibration.get("poor_quality", calibration) if poor else calibration
    value = table.get("quantiles", {}).get(f"{level:g}")
    return None if value is None else float(value)


def intervals(
    distributions: NDArray[np.floating],
    class_ages: Sequence[float],
    record: dict[str, Any],
    level: float,
    poor: NDArray[np.bool_] | None = None,
) -> NDArray[np.float64]:
    """``[N, 2]`` calibrated intervals at a stored ``level``, clipped to the network's ages;
    rows marked ``poor`` (faces of poor quality) use the record's multipliers for them."""
    multiplier, poor_multiplier = (
        quantile_for(record, level),
        quantile_for(record, level, poor=True),
    )
    if multiplier is None or poor_multiplier is None:
        raise ValueError(f"the calibration has no quantile for level {level:g}")
    mean, sd = moments(distributions, class_ages)
    multipliers = np.full(len(mean), multiplier)
    if poor is not None:
        multipliers[np.asarray(poor, dtype=bool)] = poor_multiplier
    half = multipliers * spread(sd, float(record.get("floor", 0.0)))
    top = float(max(class_ages))
    return np.stack([np.clip(mean - half, 0.0, top), np.clip(mean + half, 0.0, top)], axis=1)


def coverage(interval_rows: NDArray[np.floating], true_ages: NDArray[np.floating]) -> float:
    """Share of true ages inside their interval."""
    truth = np.asarray(true_ages, dtype=np.float64)
    inside = (truth >= interval_rows[:, 0]) & (truth <= interval_rows[:, 1])
    return float(inside.mean()) if len(truth) else float("nan")


def p_values(
    distributions: NDArray[np.floating],
    class_ages: Sequence[float],
    record: dict[str, Any],
    ages: NDArray[np.floating],
    poor: NDArray[np.bool_] | None = None,
) -> NDArray[np.float64]:
    """For each row, the conformal p-value of ``ages[row]`` being the face's true age.

    It is one minus the smallest level whose calibrated interval reaches that age, read
    between the stored levels by linear interpolation of their multipliers. Past the
    highest stored level (0.99) it is that level's complement, 0.01: an upper bound.
    """
    mean, sd = moments(distributions, class_ages)
    scores = np.abs(np.asarray(ages, dtype=np.float64) - mean) / spread(
        sd, float(record.get("floor", 0.0))
    )
    result = np.empty(len(scores))
    marked = np.zeros(len(scores), dtype=bool) if poor is None else np.asarray(poor, dtype=bool)
    for is_poor in (False, True):
        rows = marked == is_poor
        if not rows.any():
            continue
        levels = [0.0]
        multipliers = [0.0]
        for level in LEVELS:
            multiplier = quantile_for(record, level, poor=is_poor)
            if multiplier is not None and multiplier > multipliers[-1]:
                levels.append(level)
                multipliers.append(multiplier)
        # Rounded, so that a claim at a level's bound reads as exactly that level's share.
        result[rows] = np.round(1.0 - np.interp(scores[rows], multipliers, levels), 6)
    return result
