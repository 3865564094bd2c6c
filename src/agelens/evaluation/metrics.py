"""Scoring an estimator on labelled samples: MAE, CS@5, coverage, groups, bands, fairness, gate."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agelens.batch import EstimatorPool, Source
from agelens.data.datasets import Sample
from agelens.decisions import calibration
from agelens.decisions.gate import Decision, GatePolicy
from agelens.decisions.groups import GroupScheme
from agelens.pipeline.estimates import UNCERTAIN, Face

#: Bands that matter for age assurance (13-17 and 18-24 around the gate) and for fairness.
AGE_BANDS: tuple[tuple[str, int, int], ...] = (
    ("0-12", 0, 12),
    ("13-17", 13, 17),
    ("18-24", 18, 24),
    ("25-39", 25, 39),
    ("40-59", 40, 59),
    ("60+", 60, 10_000),
)


@dataclass(frozen=True, slots=True)
class Prediction:
    """The scored face of a sample; ``found`` is False when the whole image stood in."""

    sample: Sample
    face: Face
    found: bool


def predict_samples(
    pool: EstimatorPool,
    samples: Sequence[Sample],
    *,
    aligned: bool = False,
    distribution: bool = False,
    on_progress: Callable[[], None] | None = None,
    images: Sequence[Source] | None = None,
    gender: bool = False,
) -> Iterator[Prediction]:
    """The largest face of each readable sample; the whole image when no face is found.

    ``images`` stands in for the samples' files, one each (a degraded copy, say).
    """
    results = pool.estimate_files(
        [sample.path for sample in samples] if images is None else images,
        aligned=aligned,
        distribution=distribution,
        whole_if_no_face=True,
        gender=gender,
    )
    for sample, result in zip(samples, results, strict=True):
        if on_progress:
            on_progress()
        if result.faces:
            yield Prediction(sample, result.faces[0], not result.whole_image)


def with_faces(predictions: Sequence[Prediction]) -> list[Prediction]:
    """The predictions of samples where a face was found: an image with no face is
    counted under ``no_face``, never scored as if the whole image were one."""
    return [p for p in predictions if p.found]


def true_group(sample: Sample, scheme: GroupScheme) -> str | None:
    """The sample's group label, or the group its age falls in under ``scheme``."""
    if sample.group is not None:
        return sample.group
    return None if sample.age is None else scheme.group_of(sample.age)


def confusion(
    predictions: Sequence[Prediction], scheme: GroupScheme
) -> tuple[list[str], NDArray[np.int64]]:
    """Labels and the true x predicted count matrix over the scheme's groups (plus any others)."""
    truths = [true_group(p.sample, scheme) for p in predictions]
    labels = list(scheme.labels) + sorted({t for t in truths if t} - set(scheme.labels))
    index = {label: i for i, label in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for prediction, truth in zip(predictions, truths, strict=True):
        if truth is not None:
            matrix[index[truth], index[prediction.face.group]] += 1
    return labels, matrix


def gate_scores(
    predictions: Sequence[Prediction], policy: GatePolicy
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """What ``policy`` compares with its pass age, and the true age, for samples with ages."""
    with_age = [p for p in predictions if p.sample.age is not None]
    scores = np.array([policy.score(p.face) for p in with_age], dtype=np.float64)
    return scores, np.array([p.sample.age for p in with_age], dtype=np.float64)


#: Who a gate over 18 is judged on, as NIST's age-assurance reports give it: each age
#: from 13 to 17, young adults just over the line, and people 25 and older.
GATE_BANDS: tuple[tuple[str, int, int], ...] = (
    *((str(age), age, age) for age in range(13, 18)),
    ("13_17", 13, 17),
    ("18_24", 18, 24),
    ("25_plus", 25, 10_000),
)


def share_text(value: float | None) -> str:
    """A share as people read it: ``1.4%``, or ``-`` where nobody was there to count."""
    return "-" if value is None else f"{value:.1%}"


def gate_figures(predictions: Sequence[Prediction], policy: GatePolicy) -> dict[str, Any]:
    """Under ``policy`` (quality check included): the share passing in each of
    :data:`GATE_BANDS`, and the share referred because the face could not be judged."""
    with_age = [p for p in predictions if p.sample.age is not None]
    truth = np.array([p.sample.age for p in with_age], dtype=np.float64)
    passed = np.array([policy.decide(p.face) is Decision.PASS for p in with_age], dtype=bool)
    unjudged = np.array(
        [bool(policy.quality and policy.quality.reasons(p.face.quality)) for p in with_age]
    )
    figures: dict[str, Any] = policy.to_dict()
    for name, low, high in GATE_BANDS:
        mask = (truth >= low) & (truth <= high)
        # None, not NaN, where a band has nobody: JSON has no NaN.
        figures[f"pass_{name}"] = round(float(passed[mask].mean()), 4) if mask.any() else None
        figures[f"n_{name}"] = int(mask.sum())
    figures["referred_for_quality"] = round(float(unjudged.mean()), 4) if len(truth) else None
    return figures


def _mae_by(
    attribute: str, with_age: Sequence[Prediction], errors: NDArray[np.float64]
) -> dict[str, Any]:
    """MAE per value of ``gender`` or ``race``, with the largest minus smallest."""
    values = np.array([getattr(p.sample, attribute) for p in with_age], dtype=object)
    groups = {
        str(value): {"n": int(mask.sum()), "mae": round(float(errors[mask].mean()), 4)}
        for value in sorted({v for v in values if v is not None})
        if (mask := values == value).any()
    }
    if not groups:
        return {}
    maes = [entry["mae"] for entry in groups.values()]
    return {"groups": groups, "gap": round(max(maes) - min(maes), 4)}


#: How a dataset may write a gender label, and the network label it stands for.
_GENDER_NAMES = {
    "m": "male",
    "man": "male",
    "male": "male",
    "f": "female",
    "woman": "female",
    "female": "female",
}


@dataclass(frozen=True, slots=True)
class _GenderRow:
    sample: Sample
    right: bool
    answered: bool


def gender_figures(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """How often the apparent-gender answer matches the dataset's label: ``accuracy`` of
    the likelier label on every face, ``answered`` (the share not ``uncertain``) and
    ``answered_accuracy``, over all faces, those aged 20 and over, each age band and each
    race the data labels. Empty when no face has both a label and an answer."""
    rows = []
    for p in predictions:
        answer = p.face.gender
        truth = _GENDER_NAMES.get(str(p.sample.gender).strip().lower())
        if answer is None or truth is None:
            continue
        rows.append(_GenderRow(p.sample, answer.likelier == truth, answer.label != UNCERTAIN))
    if not rows:
        return {}
    result = _gender_figures(rows)
    aged = [(row.sample.age, row) for row in rows if row.sample.age is not None]
    if adults := [row for age, row in aged if age >= 20]:
        result["aged_20_plus"] = _gender_figures(adults)
    result["per_band"] = {
        name: _gender_figures(chosen)
        for name, low, high in AGE_BANDS
        if (chosen := [row for age, row in aged if low <= age <= high])
    }
    races = sorted({row.sample.race for row in rows if row.sample.race is not None})
    result["by_race"] = {
        race: _gender_figures([row for row in rows if row.sample.race == race]) for race in races
    }
    return result


def _gender_figures(rows: Sequence[_GenderRow]) -> dict[str, Any]:
    right = np.array([row.right for row in rows])
    answered = np.array([row.answered for row in rows])
    return {
        "n": len(rows),
        "accuracy": round(float(right.mean()), 4),
        "answered": round(float(answered.mean()), 4),
        "answered_accuracy": round(float(right[answered].mean()), 4) if answered.any() else None,
    }


def metrics(
    predictions: Sequence[Prediction],
    *,
    scheme: GroupScheme | None = None,
    policy: GatePolicy | None = None,
) -> dict[str, Any]:
    """``n``, ``no_face``, ``mae``, ``cs5``, ``coverage90``, ``accuracy``, ``per_band``...

    ``coverage90`` is the share of true ages inside the reported interval (90% by
    default). ``by_gender`` and ``by_race`` appear when the data has them, ``gate``
    when ``policy`` is given and the data has ages, ``apparent_gender`` when the faces
    were estimated with ``gender=True`` and the data labels gender (:func:`gender_figures`).
    Images with no face count in ``no_face`` only; every other figure is over the ``scored`` faces.
    """
    scored = with_faces(predictions)
    result: dict[str, Any] = {
        "n": len(predictions),
        "no_face": len(predictions) - len(scored),
        "scored": len(scored),
    }
    with_age = [p for p in scored if p.sample.age is not None]
    if with_age:
        truth = np.array([p.sample.age for p in with_age], dtype=np.float64)
        signed = np.array([p.face.age for p in with_age]) - truth
        errors = np.abs(signed)
        result["mae"] = round(float(errors.mean()), 4)
        result["cs5"] = round(float((errors <= 5).mean()), 4)
        intervals = np.array([p.face.interval for p in with_age], dtype=np.float64)
        result["coverage90"] = round(calibration.coverage(intervals, truth), 4)
        result["bias"] = round(float(signed.mean()), 4)
        result["per_band"] = {
            name: {
                "n": int(mask.sum()),
                "mae": round(float(errors[mask].mean()), 4),
                "bias": round(float(signed[mask].mean()), 4),
            }
            for name, low, high in AGE_BANDS
            if (mask := (truth >= low) & (truth <= high)).any()
        }
        for attribute in ("gender", "race"):
            if by := _mae_by(attribute, with_age, errors):
                result[f"by_{attribute}"] = by
        if policy is not None:
            result["gate"] = gate_figures(with_age, policy)
    if gender := gender_figures(scored):
        result["apparent_gender"] = gender
    if scheme is not None:
        labels, matrix = confusion(scored, scheme)
        if matrix.sum():
            result["accuracy"] = round(float(np.trace(matrix) / matrix.sum()), 4)
            result["confusion"] = {"labels": labels, "matrix": matrix.tolist()}
    return result
