"""How well can a gate over 18 separate UTKFace's 13-17-year-olds from people aged 25+?

For each bundle and each score a gate could compare with a threshold (the expected age,
the median and low percentiles of the predicted distribution, the probability of being
18+ or 21+, the lower end of the calibrated 90% interval), two figures on UTKFace test
(content-hash dedup, sha1 60/20/20, aligned crops, each bundle's default precision and
flip-TTA choice):

- ``val_fitted``: the threshold chosen on val, as ``agelens calibrate`` does (the lowest
  one letting at most 2% of val's 13-17-year-olds pass), applied to test;
- ``best_on_test``: the threshold chosen on test itself, the most people aged 25+ that
  any threshold on that score passes while at most 2% of test's minors pass. No policy
  can be fitted this way; it bounds what the score can do on this data.

    python bench/gate_limits.py --data data/UTKFace -m agelens-utk-v1 -m cydral-v1 \
        --out bench/results/gate_limits.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agelens.decisions import calibration
from agelens.decisions.gate import ADULTS_FROM, MINORS, pass_rates
from agelens.models.bundles import load_bundle
from agelens.pipeline.estimates import quantile_classes
from agelens.pipeline.network import AgeModel
from agelens.pipeline.runtime import machine_record
from agelens.training.config import TrainConfig
from agelens.training.prepared import JobOptions, prepare

MAX_MINOR_PASS = 0.02
Scores = dict[str, Callable[[NDArray[np.float64]], NDArray[np.float64]]]


def quantile(level: float, ages: NDArray[np.float64]) -> Callable:
    def score(p: NDArray[np.float64]) -> NDArray[np.float64]:
        return ages[quantile_classes(p, level)]

    return score


def scores_for(ages: NDArray[np.float64], record: dict | None) -> Scores:
    scores: Scores = {
        "expected age": lambda p: p @ ages,
        "median": quantile(0.5, ages),
        "20th percentile": quantile(0.2, ages),
        "10th percentile": quantile(0.1, ages),
        "5th percentile": quantile(0.05, ages),
        "P(age >= 18)": lambda p: p[:, ages >= 18].sum(axis=1),
        "P(age >= 21)": lambda p: p[:, ages >= 21].sum(axis=1),
    }
    if record:
        scores["calibrated 90% lower bound"] = lambda p: calibration.intervals(
            p, ages, record, 0.9
        )[:, 0]
    return scores


def lowest_threshold(score: NDArray[np.float64], truth: NDArray[np.float64]) -> float:
    """The lowest threshold at which at most MAX_MINOR_PASS of the minors reach it."""
    minors = np.sort(score[(truth >= MINORS[0]) & (truth <= MINORS[1])])[::-1]
    allowed = int(np.floor(MAX_MINOR_PASS * len(minors)))
    # Above the (allowed + 1)-th highest minor's score; ties push it up, never down.
    return float(np.nextafter(minors[allowed], np.inf)) if allowed < len(minors) else -np.inf


def figures(score: NDArray[np.float64], truth: NDArray[np.float64], threshold: float) -> dict:
    minors, adults = pass_rates(score, truth, threshold)
    return {"pass_13_17": round(minors, 4), "pass_25_plus": round(adults, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/UTKFace"))
    parser.add_argument("-m", "--model", action="append", required=True)
    parser.add_argument("--out", type=Path, default=Path("bench/results/gate_limits.json"))
    parser.add_argument("--cache", type=Path, default=None, help="chip cache folder")
    args = parser.parse_args()
    results: dict = {
        "data": "utkface test split (sha1 60/20/20 after dedup), aligned crops",
        "over": 18,
        "minors": list(MINORS),
        "adults_from": ADULTS_FROM,
        "max_minor_pass": MAX_MINOR_PASS,
        # Models not given this time keep their earlier rows.
        "models": json.loads(args.out.read_text())["models"] if args.out.is_file() else {},
    }
    for name in args.model:
        bundle = load_bundle(name)
        with tempfile.TemporaryDirectory() as folder:
            options = JobOptions(
                f"utkface:{args.data}",
                Path(folder),
                TrainConfig(),
                base=name,
                size=bundle.input_size,
                border=bundle.chip_border,
                cache_dir=args.cache,
            )
            data = prepare(options, show_progress=False)
        model = AgeModel(bundle)
        flip = bool(bundle.manifest.get("inference", {}).get("flip_tta", False))
        ages = np.asarray(bundle.ages, dtype=np.float64)
        split = {}
        for part in ("val", "test"):
            p = model.distributions(data.sets[part].chips, flip=flip).astype(np.float64)
            truth = data.sets[part].ages.astype(np.float64)
            split[part] = (p / p.sum(axis=1, keepdims=True), truth)
        rows = {}
        for label, score in scores_for(ages, bundle.manifest.get("calibration")).items():
            (val_p, val_truth), (test_p, test_truth) = split["val"], split["test"]
            val_score, test_score = score(val_p), score(test_p)
            rows[label] = {
                "val_fitted": figures(
                    test_score, test_truth, lowest_threshold(val_score, val_truth)
                ),
                "best_on_test": figures(
                    test_score, test_truth, lowest_threshold(test_score, test_truth)
                ),
            }
            print(name, label, rows[label], flush=True)
        results["models"][bundle.name] = {
            "precision": bundle.precision,
            "flip_tta": flip,
            "scores": rows,
            "machine": machine_record(),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
