"""Scoring an estimator on labelled samples: MAE, CS@5, group accuracy, error by age band."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agelens.batch import estimate_files
from agelens.datasets import Sample
from agelens.estimates import Face
from agelens.estimator import AgeEstimator

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
    estimator: AgeEstimator,
    samples: Sequence[Sample],
    *,
    aligned: bool = False,
    on_progress: Callable[[], None] | None = None,
) -> Iterator[Prediction]:
    """The largest face of each readable sample; the whole image when no face is found."""
    results = estimate_files(estimator, [sample.path for sample in samples], aligned=aligned)
    for sample, result in zip(samples, results, strict=True):
        if on_progress:
            on_progress()
        if result.image is None:
            continue
        if result.faces:
            yield Prediction(sample, result.faces[0], True)
        else:
            (whole,) = estimator.estimate_arrays([result.image], aligned=True)
            yield Prediction(sample, whole[0], False)


def metrics(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """``n``, ``no_face``, ``mae``, ``cs5``, ``accuracy`` (with group labels), ``per_band``."""
    result: dict[str, Any] = {
        "n": len(predictions),
        "no_face": sum(not p.found for p in predictions),
    }
    with_age = [p for p in predictions if p.sample.age is not None]
    if with_age:
        truth = np.array([p.sample.age for p in with_age], dtype=np.float64)
        errors = np.abs(np.array([p.face.age for p in with_age]) - truth)
        result["mae"] = round(float(errors.mean()), 4)
        result["cs5"] = round(float((errors <= 5).mean()), 4)
        result["per_band"] = {
            name: {"n": int(mask.sum()), "mae": round(float(errors[mask].mean()), 4)}
            for name, low, high in AGE_BANDS
            if (mask := (truth >= low) & (truth <= high)).any()
        }
    with_group = [p for p in predictions if p.sample.group is not None]
    if with_group:
        result["accuracy"] = round(
            float(np.mean([p.face.group == p.sample.group for p in with_group])), 4
        )
    return result
