"""Scoring an estimator on labelled samples: MAE, CS@5, group accuracy, error by age band."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from agelens.datasets import Sample
from agelens.estimates import Face
from agelens.estimator import AgeEstimator
from agelens.images import load_image

#: Bands that matter for age assurance (13-17 and 18-24 around the gate) and for fairness.
AGE_BANDS: tuple[tuple[str, int, int], ...] = (
    ("0-12", 0, 12),
    ("13-17", 13, 17),
    ("18-24", 18, 24),
    ("25-39", 25, 39),
    ("40-59", 40, 59),
    ("60+", 60, 10_000),
)
CHUNK = 64


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
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Prediction]:
    """The largest face of each sample; the whole image when no face is found.

    Decoding runs in a thread pool (Pillow releases the GIL) while faces go
    through the network in chunks.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(samples), CHUNK):
            chunk = samples[start : start + CHUNK]
            images = list(
                pool.map(lambda s: load_image(s.path, max_pixels=estimator.max_pixels), chunk)
            )
            faces = estimator.estimate_arrays(images, aligned=aligned)
            missing = [i for i, found in enumerate(faces) if not found]
            fallback = estimator.estimate_arrays([images[i] for i in missing], aligned=True)
            for i, whole in zip(missing, fallback, strict=True):
                faces[i] = whole
            for i, sample in enumerate(chunk):
                yield Prediction(sample, faces[i][0], i not in missing)
            if on_progress:
                on_progress(len(chunk))


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
