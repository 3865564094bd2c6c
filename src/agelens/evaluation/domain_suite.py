"""A model's predictions on each domain of the suite, and the figures a domain is judged by.

The suite (:mod:`agelens.evaluation.domains`) turns labelled face crops into the
pictures other photo sources make of them. Calibration and the gate are fitted on
every domain's validation faces together, and a model is judged by its worst domain.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image

from agelens.batch import EstimatorPool, InMemory, Source
from agelens.data.datasets import Sample
from agelens.errors import ImageError
from agelens.evaluation.domains import DOMAINS, degrade
from agelens.evaluation.metrics import Prediction, metrics, predict_samples
from agelens.pipeline.images import load_image

#: Samples degraded and estimated together: bounds the memory their images take.
BLOCK = 512


def _degraded(sample: Sample, domain: str, seed: int) -> Source:
    """The sample's picture in ``domain``, as lossless bytes; its file when it is unreadable
    (the estimator then reports it as it reports any unreadable file)."""
    try:
        image = load_image(sample.path)
    except ImageError:
        return sample.path
    buffer = io.BytesIO()
    Image.fromarray(degrade(image, domain, sample.path.name, seed)).save(
        buffer, format="PNG", compress_level=1
    )
    return InMemory(str(sample.path), sample.path.name, buffer.getvalue())


def predict_domain(
    pool: EstimatorPool,
    samples: Sequence[Sample],
    domain: str,
    *,
    seed: int = 0,
    on_progress: Callable[[], None] | None = None,
) -> list[Prediction]:
    """Each sample's face crop as ``domain`` shows it, estimated with its distribution."""
    predictions: list[Prediction] = []
    for start in range(0, len(samples), BLOCK):
        block = samples[start : start + BLOCK]
        predictions.extend(
            predict_samples(
                pool,
                block,
                aligned=True,
                distribution=True,
                on_progress=on_progress,
                images=[_degraded(sample, domain, seed) for sample in block],
            )
        )
    return predictions


def score_suite(
    pool: EstimatorPool,
    datasets: dict[str, Sequence[Sample]],
    *,
    domains: Sequence[str] = tuple(DOMAINS),
    over: float = 18,
    seed: int = 0,
    on_progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Per dataset and domain: :func:`~agelens.evaluation.metrics.metrics` under the
    bundle's own gate policy, and the share of faces the quality check refers; then the
    worst domain's figures, which are what a model is judged by."""
    estimator = pool.estimator
    policy = estimator.bundle.gate_policy(over)
    limits = estimator.bundle.quality_limits
    results: dict[str, Any] = {}
    for dataset, samples in datasets.items():
        results[dataset] = {}
        for domain in domains:
            predictions = predict_domain(pool, samples, domain, seed=seed, on_progress=on_progress)
            figures = metrics(predictions, scheme=estimator.groups, policy=policy)
            figures.pop("confusion", None)
            unjudged = [bool(limits.reasons(p.face.quality)) for p in predictions]
            figures["poor_quality"] = round(sum(unjudged) / len(unjudged), 4) if unjudged else None
            results[dataset][domain] = figures
    return {"domains": results, "worst": worst_domain(results)}


def worst_domain(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """The extremes over every dataset and domain: lowest and highest coverage, the most
    13-17-year-olds passing, the largest MAE and |bias|, the lowest group accuracy."""
    rows = [figures for domains in results.values() for figures in domains.values()]

    def values(key: str, inner: str | None = None) -> list[float]:
        found = [(row.get(key) or {}).get(inner) if inner else row.get(key) for row in rows]
        return [float(v) for v in found if v is not None]

    worst: dict[str, Any] = {}
    for name, key, inner, pick in (
        ("coverage90_min", "coverage90", None, min),
        ("coverage90_max", "coverage90", None, max),
        ("pass_13_17_max", "gate", "pass_13_17", max),
        ("pass_25_plus_min", "gate", "pass_25_plus", min),
        ("mae_max", "mae", None, max),
        ("accuracy_min", "accuracy", None, min),
    ):
        if found := values(key, inner):
            worst[name] = pick(found)
    if biases := values("bias"):
        worst["abs_bias_max"] = max(abs(b) for b in biases)
    return worst
