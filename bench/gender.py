"""Apparent gender: each gender bundle's accuracy, its ``uncertain`` threshold, its cost.

For every gender bundle given with -g (a name or folder):

- ``fit``: on UTKFace val (content-hash dedup, sha1 60/20/20), aligned crops, the
  lowest threshold (0.50-0.99, in steps of 0.01) at which the faces it answers are
  right at least ``--target`` of the time (all ages); below it a face is ``uncertain``;
- ``test``: UTKFace test with that threshold: accuracy of the likelier label, the share
  answered and their accuracy, for all faces, those aged 20 and over, each age band,
  each race and each labelled gender;
- ``held_out``: with ``--collections DIR``, each real collection built there that labels
  gender (``distinct.csv``; of ``aaf``, its test split), as photos (faces found, the
  largest read), with the same threshold and figures; faces not found are counted;
- ``cost``: ``agelens predict FOLDER --json`` on N photos (test crops padded to 400x400)
  with and without ``--gender``, start-up included, in alternating pairs: the median
  ratio of the times.

    python bench/gender.py --data data/UTKFace -g cydral-gender-v1 \\
        --collections data/collections --out bench/results/gender.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from benchmark import make_photos
from leave_one_out import built_collections

from agelens import AgeEstimator
from agelens.batch import EstimatorPool
from agelens.data.datasets import read_dataset, select_split
from agelens.evaluation.leave_one_out import Collection
from agelens.evaluation.metrics import Prediction, gender_figures, predict_samples, with_faces
from agelens.pipeline.estimates import gender_estimates
from agelens.pipeline.runtime import machine_record

THRESHOLDS = np.round(np.arange(0.50, 1.00, 0.01), 2)


def predictions(estimator: AgeEstimator, data: Path, split: str) -> list[Prediction]:
    samples = select_split(read_dataset(f"utkface:{data}"), split)  # type: ignore[arg-type]
    with EstimatorPool(estimator) as pool:
        return list(predict_samples(pool, samples, aligned=True, gender=True))


def held_out(estimator: AgeEstimator, folder: Path) -> dict[Collection, list[Prediction]]:
    """The predictions on each built collection that labels gender, as photos."""
    found = {}
    for collection in built_collections(folder):
        dataset = read_dataset(collection.spec)
        samples = [s for s in select_split(dataset, collection.split) if s.gender]
        if samples:
            with EstimatorPool(estimator) as pool:
                found[collection] = list(predict_samples(pool, samples, aligned=False, gender=True))
    return found


def relabelled(found: list[Prediction], labels: list[str], threshold: float) -> list[Prediction]:
    """The predictions with their gender answered under ``threshold``."""
    rows = []
    for p in found:
        assert p.face.gender is not None
        probabilities = np.array([[p.face.gender.probabilities[label] for label in labels]])
        (answer,) = gender_estimates(probabilities, labels, threshold)
        rows.append(replace(p, face=replace(p.face, gender=answer)))
    return rows


def fitted_threshold(found: list[Prediction], labels: list[str], target: float) -> float:
    """The lowest threshold at which the answered faces are right ``target`` of the time."""
    for threshold in THRESHOLDS:
        figures = gender_figures(relabelled(found, labels, float(threshold)))
        if (figures["answered_accuracy"] or 0.0) >= target:
            return float(threshold)
    return float(THRESHOLDS[-1])


def by_labelled_gender(found: list[Prediction]) -> dict[str, Any]:
    genders = sorted({str(p.sample.gender) for p in found if p.sample.gender})
    return {
        gender: gender_figures([p for p in found if p.sample.gender == gender])
        for gender in genders
    }


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def cost(data: Path, model: str, photos: int, pairs: int) -> dict[str, Any]:
    samples = select_split(read_dataset(f"utkface:{data}"), "test")
    chosen = sorted(random.Random(0).sample(samples, photos), key=lambda s: s.path)
    ratios = []
    with tempfile.TemporaryDirectory() as folder:
        make_photos([sample.path for sample in chosen], Path(folder))
        without = [sys.executable, "-m", "agelens", "predict", folder, "--json"]
        with_gender = [*without, "--gender", "--gender-model", model]
        timed(without)
        timed(with_gender)
        for _ in range(pairs):
            off, on = timed(without), timed(with_gender)
            ratios.append(
                {"off_s": round(off, 2), "on_s": round(on, 2), "ratio": round(on / off, 3)}
            )
    return {
        "photos": f"{photos} UTKFace test crops (seeded sample) padded to 400x400, JPEG 95",
        "pairs": ratios,
        "median_ratio": statistics.median(pair["ratio"] for pair in ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/UTKFace"))
    parser.add_argument("-g", "--gender-model", action="append", required=True)
    parser.add_argument("--target", type=float, default=0.95)
    parser.add_argument("--collections", type=Path, help="built real collections to score")
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gender.json"))
    args = parser.parse_args()
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    models = results.setdefault("models", {})
    for name in args.gender_model:
        estimator = AgeEstimator(gender_model=name)
        labels = estimator.gender.bundle.labels
        threshold = fitted_threshold(predictions(estimator, args.data, "val"), labels, args.target)
        test = relabelled(predictions(estimator, args.data, "test"), labels, threshold)
        models[estimator.gender.bundle.name] = {
            "fit": {
                "data": "UTKFace val, aligned crops",
                "rule": f"lowest threshold (0.01 steps) with answered faces right >= {args.target}",
                "uncertain_below": threshold,
            },
            "test": {
                "data": "UTKFace test, aligned crops",
                **gender_figures(test),
                "by_labelled_gender": by_labelled_gender(test),
            },
            "cost": cost(args.data, name, args.photos, args.pairs),
        }
        if args.collections:
            scored = {}
            for collection, found in held_out(estimator, args.collections).items():
                answered = relabelled(with_faces(found), labels, threshold)
                split = "all" if collection.split == "all" else f"{collection.split} split"
                scored[collection.name] = {
                    "data": f"{collection.name} ({split}), photos: the largest face found",
                    "no_face": sum(not p.found for p in found),
                    **gender_figures(answered),
                    "by_labelled_gender": by_labelled_gender(answered),
                }
            models[estimator.gender.bundle.name]["held_out"] = scored
        print(json.dumps({name: models[estimator.gender.bundle.name]["fit"]}, indent=2))
    results["split"] = "content-hash dedup, sha1 60/20/20 (agelens.data.datasets)"
    results["machine"] = machine_record()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
