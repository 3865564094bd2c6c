"""Calibrated age intervals by split conformal prediction, scaled by each face's own spread.

For each validation face the score is ``|true age - expected age| / spread``. The
spread is ``sqrt(sd^2 + floor^2)``, with ``sd`` the standard deviation of the predicted
distribution. The interval at level ``L`` is ``expected age +/- q_L x spread``, where
``q_L`` is the conformal quantile of the scores: the ``ceil((n + 1) L)``-th smallest.
It covers a fresh face with probability at least ``L`` when faces are exchangeable
with the validation set, and it is wide where the network is unsure, narrow where it
is sure.

The floor keeps a network far too sure of itself (an ``sd`` under a year, errors of ten)
from absurd intervals. Errors grow with age, so the floor does: ``floor x (age + 5) / 40``
years (records without ``floor_grows_with_age`` keep a constant one). It is the value of
:data:`FLOORS` whose 90% intervals are narrowest on the calibration data.

The guarantee holds only for faces like the calibration's: intervals fitted on clean web
crops covered 80-83% of scanned prints. So AgeLens calibrates on the domain suite
(:mod:`agelens.evaluation.domains`), with each level's worst-domain quantile, per quality
class (large judged faces, small ones, faces the quality check fails: a Mondrian split).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agelens.decisions.quality import QualityClass

#: Fewest faces with known ages worth calibrating on.
MIN_FACES = 20
#: Levels stored in a bundle's calibration; other levels fall back to distribution quantiles.
LEVELS = (0.5, 0.8, 0.9, 0.95, 0.98, 0.99)
METHOD = (
    "split-conformal per quality class, worst domain, scaled by sqrt(sd^2 + floor^2) of the "
    "predicted distribution with the floor growing with age"
)
FLOORS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 10.0, 12.0, 16.0)
#: Where a record keeps each class's table; the large-face class's is the record itself.
CLASS_KEYS = {QualityClass.SMALL_FACE: "small_face", QualityClass.POOR_QUALITY: "poor_quality"}
#: No domain may be covered more than this in the fit: a margin for unseen sources stops here.
MOST_COVERAGE = 0.95


def spread(
    mean: NDArray[np.float64], sd: NDArray[np.float64], floor: float, grows: bool = True
) -> NDArray[np.float64]:
    """The scale of a face's error: its distribution's spread, with the floor (in years at
    age 35) growing with the estimated age when ``grows``."""
    floors = floor * (np.asarray(mean) + 5.0) / 40.0 if grows else floor
    return np.sqrt(sd**2 + floors**2)


def _record_spread(
    record: dict[str, Any], mean: NDArray[np.float64], sd: NDArray[np.float64]
) -> NDArray[np.float64]:
    grows = bool(record.get("floor_grows_with_age", False))
    return spread(mean, sd, float(record.get("floor", 0.0)), grows)


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
    """The calibration record of one set of faces (no domains, one quality class)."""
    classes = np.full(len(true_ages), QualityClass.LARGE_FACE)
    return fit_domains({CLEAN: (distributions, true_ages, classes)}, class_ages, split=split)


#: One domain's calibration faces: distributions, true ages, and each face's
#: :class:`~agelens.decisions.quality.QualityClass`.
DomainFaces = tuple[NDArray[np.floating], NDArray[np.floating], NDArray[np.integer]]
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

    Small faces and faces the quality check fails err more, and differently in each
    domain; each class gets multipliers of its own, so that large clear faces keep narrow
    intervals. A class with fewer than :data:`MIN_FACES` faces in a domain does not vote
    for that domain; a class with too few faces anywhere gets no table, and its faces
    take the widest of the others (:func:`quantile_for`).
    """
    rows = {
        name: (*moments(p, class_ages), np.asarray(truth, dtype=np.float64), np.asarray(classes))
        for name, (p, truth, classes) in domains.items()
    }
    if sum(len(truth) for _, _, truth, _ in rows.values()) == 0:
        raise ValueError("calibration needs at least one labelled face")
    fewest = MIN_FACES if len(rows) > 1 else 1

    def class_scores(floor: float, kind: int) -> dict[str, NDArray[np.float64]]:
        """Each domain's scores for one quality class, where it has enough faces."""
        found = {}
        for name, (mean, sd, truth, classes) in rows.items():
            chosen = classes == kind
            if chosen.sum() >= fewest:
                scale = spread(mean[chosen], sd[chosen], floor)
                found[name] = np.abs(truth[chosen] - mean[chosen]) / scale
        return found

    def mean_width(floor: float) -> float:
        widths = []
        for kind in QualityClass:
            if scores := class_scores(floor, kind):
                multiplier = _worst(scores, 0.9)
                for mean, sd, _, classes in rows.values():
                    chosen = classes == kind
                    widths.append(multiplier * spread(mean[chosen], sd[chosen], floor))
        return float(np.concatenate(widths).mean())

    floor = min(FLOORS, key=mean_width)
    record: dict[str, Any] = {
        "method": METHOD,
        "split": split,
        "domains": {name: len(truth) for name, (_, _, truth, _) in rows.items()},
        "n": sum(len(truth) for _, _, truth, _ in rows.values()),
        "floor": floor,
        "floor_grows_with_age": True,
    }
    tables: dict[int, dict[str, Any]] = {}
    for kind in QualityClass:
        if not (scores := class_scores(floor, kind)):
            continue
        target, unseen = _unseen_domain_target(scores)
        tables[kind] = {
            "n": sum(int((classes == kind).sum()) for *_, classes in rows.values()),
            "quantiles": {
                f"{level:g}": round(_worst(scores, _inflated(level, target)), 5) for level in LEVELS
            },
            **({"unseen_domain": {"target": target, "coverage": unseen}} if unseen else {}),
        }
    large = tables.pop(QualityClass.LARGE_FACE, None) or {
        "n": 0,
        "quantiles": {
            key: max(table["quantiles"][key] for table in tables.values())
            for key in next(iter(tables.values()))["quantiles"]
        },
    }
    record.update({key: value for key, value in large.items() if key != "n"})
    record.update({CLASS_KEYS[QualityClass(kind)]: table for kind, table in tables.items()})
    return record


def _worst(scores: dict[str, NDArray[np.float64]], level: float) -> float:
    return max(_conformal_quantile(values, level) for values in scores.values())


#: The levels at which the 90% multiplier may be taken, so that a domain left out of the
#: fit is still covered (see :func:`_unseen_domain_target`).
TARGETS = (0.9, 0.91, 0.92, 0.93, 0.94, 0.95)


def _unseen_domain_target(
    scores: dict[str, NDArray[np.float64]],
) -> tuple[float, dict[str, float]]:
    """The lowest target in :data:`TARGETS` at which the worst-domain multiplier, fitted
    without a domain, still covers 90% of that domain's faces, for every domain; and
    those leave-one-domain-out coverages. The target stops rising before any domain in
    the fit would be covered more than :data:`MOST_COVERAGE`.

    Photos users bring come from sources the suite lacks. Leaving each domain out in turn
    measures what a source the fit has not seen does to coverage, and the margin that
    makes up for it is kept, as far as the domains it was fitted on allow.
    """
    if len(scores) < 2:
        return 0.9, {}
    chosen, found = 0.9, {}
    for target in TARGETS:
        multiplier = _worst(scores, target)
        if target > 0.9 and max((v <= multiplier).mean() for v in scores.values()) > (
            MOST_COVERAGE
        ):
            break
        unseen = {}
        for name, values in scores.items():
            others = _worst({k: v for k, v in scores.items() if k != name}, target)
            unseen[name] = round(float((values <= others).mean()), 4)
        chosen, found = target, unseen
        if min(unseen.values()) >= 0.9:
            break
    return chosen, found


def _inflated(level: float, target: float) -> float:
    """``level`` with its miss rate shrunk as the 90% level's is shrunk to ``target``."""
    return 1.0 - (1.0 - level) * (1.0 - target) / 0.1


def quantile_for(
    calibration: dict[str, Any] | None,
    level: float,
    kind: int = QualityClass.LARGE_FACE,
) -> float | None:
    """The stored multiplier for ``level`` in quality class ``kind``, or None when the
    bundle has none for the level. A class without a table of its own (a record fitted
    before classes, or a class with too few faces) takes the widest the record has."""
    if not calibration:
        return None
    key = f"{level:g}"
    if kind == QualityClass.LARGE_FACE:
        value = calibration.get("quantiles", {}).get(key)
        return None if value is None else float(value)
    own = calibration.get(CLASS_KEYS[QualityClass(kind)])
    if own is not None:
        value = own.get("quantiles", {}).get(key)
        return None if value is None else float(value)
    present = [
        float(table["quantiles"][key])
        for table in (calibration, *(calibration.get(k) for k in CLASS_KEYS.values()))
        if table is not None and key in table.get("quantiles", {})
    ]
    return max(present) if present else None


def _multipliers(
    record: dict[str, Any], level: float, classes: NDArray[np.integer] | None, n: int
) -> NDArray[np.float64] | None:
    """Each row's multiplier at ``level`` by its quality class (large faces without classes)."""
    kinds = np.full(n, QualityClass.LARGE_FACE) if classes is None else np.asarray(classes)
    result = np.empty(n)
    for kind in QualityClass:
        chosen = kinds == kind
        if chosen.any():
            multiplier = quantile_for(record, level, kind)
            if multiplier is None:
                return None
            result[chosen] = multiplier
    return result


def intervals(
    distributions: NDArray[np.floating],
    class_ages: Sequence[float],
    record: dict[str, Any],
    level: float,
    classes: NDArray[np.integer] | None = None,
) -> NDArray[np.float64]:
    """``[N, 2]`` calibrated intervals at a stored ``level``, clipped to the network's ages;
    each row with its quality class's multiplier (the large-face class's without ``classes``)."""
    multipliers = _multipliers(record, level, classes, len(distributions))
    if multipliers is None:
        raise ValueError(f"the calibration has no quantile for level {level:g}")
    mean, sd = moments(distributions, class_ages)
    half = multipliers * _record_spread(record, mean, sd)
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
    classes: NDArray[np.integer] | None = None,
) -> NDArray[np.float64]:
    """For each row, the conformal p-value of ``ages[row]`` being the face's true age.

    It is one minus the smallest level whose calibrated interval reaches that age, read
    between the stored levels by linear interpolation of their multipliers. Past the
    highest stored level (0.99) it is that level's complement, 0.01: an upper bound.
    """
    mean, sd = moments(distributions, class_ages)
    scores = np.abs(np.asarray(ages, dtype=np.float64) - mean) / _record_spread(record, mean, sd)
    kinds = np.full(len(scores), QualityClass.LARGE_FACE) if classes is None else classes
    result = np.empty(len(scores))
    for kind in QualityClass:
        rows = np.asarray(kinds) == kind
        if not rows.any():
            continue
        levels, multipliers = [0.0], [0.0]
        for level in LEVELS:
            multiplier = quantile_for(record, level, kind)
            if multiplier is not None and multiplier > multipliers[-1]:
                levels.append(level)
                multipliers.append(multiplier)
        # Rounded, so that a claim at a level's bound reads as exactly that level's share.
        result[rows] = np.round(1.0 - np.interp(scores[rows], multipliers, levels), 6)
    return result
