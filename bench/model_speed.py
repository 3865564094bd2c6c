"""Faces per second of each age model, in one run, on the same UTKFace test crops.

End to end as ``agelens predict --aligned`` runs a folder (decode, landmarks, chip,
network with each bundle's flip-TTA choice, on one worker process per core), after the
pool has started; the median of three runs. The first model given is the reference the
others are compared with.

    python bench/model_speed.py --data data/UTKFace -m cydral-v1 \\
        -m agelens-research-v2 --out bench/results/model_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from agelens import AgeEstimator
from agelens.batch import EstimatorPool
from agelens.data.datasets import read_dataset, select_split
from agelens.pipeline.runtime import machine_record


def faces_per_second(model: str, paths: list[Path], repeats: int) -> list[float]:
    estimator = AgeEstimator(model)
    rates = []
    with EstimatorPool(estimator) as pool:
        list(pool.estimate_files(paths[:64], aligned=True))  # workers and models warm
        for _ in range(repeats):
            started = time.perf_counter()
            results = list(pool.estimate_files(paths, aligned=True))
            faces = sum(len(result.faces) for result in results)
            rates.append(round(faces / (time.perf_counter() - started), 1))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/UTKFace"))
    parser.add_argument("-m", "--model", action="append", required=True)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/model_speed.json"))
    args = parser.parse_args()
    samples = select_split(read_dataset(f"utkface:{args.data}"), "test")[: args.files]
    paths = [sample.path for sample in samples]
    rows = {}
    for model in args.model:
        runs = faces_per_second(model, paths, args.repeats)
        rows[model] = {"faces/s": statistics.median(runs), "runs": runs}
    reference = rows[args.model[0]]["faces/s"]
    for row in rows.values():
        row["time x reference"] = round(reference / row["faces/s"], 2)
    result = {
        "data": f"UTKFace test split, first {len(paths)} crops (sha1 60/20/20 after dedup)",
        "reference": args.model[0],
        "models": rows,
        "machine": machine_record(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
