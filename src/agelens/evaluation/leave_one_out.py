"""Leave one collection out: each model is judged on real photo collections it never saw,
and by the worst of them.

Made-up degradations of one collection are not another photo source: a model tuned on
degraded UTKFace beat its parent on every degraded copy and lost on every outside
collection. So the judge is real collections, each held out in turn. A model's own
training collections are scored on their test split and reported, but they never count
towards its worst held-out figures.

A fold trains on every collection but one with ``agelens train`` and scores the result on
the one left out (:func:`train_fold`); the shipped models are scored as they are, held out
from every collection they were not trained on (:func:`seen_kinds`).
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agelens.batch import EstimatorPool
from agelens.data.datasets import Sample, Split, read_dataset, select_split, source_name
from agelens.errors import AgeLensError
from agelens.evaluation.domain_suite import worst_domain
from agelens.evaluation.metrics import metrics, predict_samples
from agelens.models.bundles import Bundle


@dataclass(frozen=True, slots=True)
class Collection:
    """A labelled photo collection: its name, dataset spec, the split scored, and whether
    its images are aligned face crops (else faces are found in them)."""

    name: str
    spec: str
    split: Split = "all"
    aligned: bool = False


def seen_kinds(bundle: Bundle) -> set[str]:
    """The sources a bundle was trained on (``source_name`` of each), from its manifest."""
    training = bundle.manifest.get("training") or {}
    records = filter(None, [training.get("data"), *(training.get("more_data") or [])])
    # Manifests record a spec, or (newer ones) the spec with its files' hash.
    return {
        source_name(record if isinstance(record, str) else record["spec"]) for record in records
    }


def was_seen(collection: Collection, seen: set[str]) -> bool:
    """Whether a model trained on ``seen`` saw this collection."""
    return source_name(collection.spec) in seen


@functools.cache
def _samples(spec: str, split: Split) -> tuple[Sample, ...]:
    """A collection's scored samples, read and hashed once a process for every model."""
    return tuple(select_split(read_dataset(spec), split))


def score_collections(
    pool: EstimatorPool,
    collections: Sequence[Collection],
    *,
    seen: set[str],
    over: float = 18,
    on_progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Per collection, :func:`~agelens.evaluation.metrics.metrics` under the bundle's own
    gate policy and whether the model was trained on it; then the worst held-out figures."""
    estimator = pool.estimator
    policy = estimator.bundle.gate_policy(over)
    results: dict[str, Any] = {}
    for collection in collections:
        samples = _samples(collection.spec, collection.split)
        if not samples:
            raise AgeLensError(f"{collection.name}: no samples in split {collection.split!r}")
        predictions = list(
            predict_samples(pool, samples, aligned=collection.aligned, on_progress=on_progress)
        )
        figures = metrics(predictions, scheme=estimator.groups, policy=policy)
        figures.pop("confusion", None)
        figures["split"] = collection.split
        figures["held_out"] = not was_seen(collection, seen)
        results[collection.name] = figures
    held_out = {name: figures for name, figures in results.items() if figures["held_out"]}
    return {"collections": results, "worst_held_out": worst_domain({"held_out": held_out})}


def fold_plan(collections: Sequence[Collection]) -> list[tuple[Collection, list[Collection]]]:
    """Each collection with the others: the one held out, and what a fold trains on."""
    return [(c, [o for o in collections if o is not c]) for c in collections]


def train_fold(
    held_out: Collection, training: Sequence[Collection], out: Path, options: Sequence[str]
) -> Path:
    """Train a bundle on ``training`` with ``agelens train``, never on ``held_out``: on each
    collection's content-hash train split, stopping early and calibrating on their val
    splits; returns the bundle's folder."""
    if any(c.aligned != training[0].aligned for c in training):
        raise AgeLensError("a fold trains on crops or on photos, not both: align one kind first")
    command = [sys.executable, "-m", "agelens", "train", "--out", str(out)]
    for collection in training:
        if collection.spec == held_out.spec:
            raise AgeLensError(f"{held_out.name} is held out and cannot be trained on")
        command += ["--data", collection.spec]
    if not training[0].aligned:
        command.append("--photos")
    done = subprocess.run([*command, *options], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AgeLensError(f"training without {held_out.name} failed: {done.stderr[-2000:]}")
    return out
