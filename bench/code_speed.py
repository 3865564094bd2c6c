"""Faces per second of one model with this checkout's code against an earlier commit's,
in alternating runs on the same UTKFace test crops: what a change cost in speed.

End to end as ``agelens predict --aligned`` runs a folder (decode, landmarks, quality,
chip, network, on one worker process per core), after the pool has started. The earlier
commit is checked out into a temporary git worktree and imported from there; runs
alternate so that the machine's drift hits both alike. The median of each side is kept.

    python bench/code_speed.py --before 5f27af7 -m cydral-v1 --runs 11 \\
        --out bench/results/code_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from agelens.pipeline.runtime import machine_record

ROOT = Path(__file__).resolve().parents[1]
ONE_RUN = r"""
import json, sys, time
from agelens import AgeEstimator
from agelens.batch import EstimatorPool
from agelens.data.datasets import read_dataset, select_split
samples = select_split(read_dataset(f"utkface:{sys.argv[2]}"), "test")
paths = [sample.path for sample in samples][: int(sys.argv[3])]
with EstimatorPool(AgeEstimator(sys.argv[1])) as pool:
    list(pool.estimate_files(paths[:64], aligned=True))
    started = time.perf_counter()
    faces = sum(len(result.faces) for result in pool.estimate_files(paths, aligned=True))
    print(json.dumps(faces / (time.perf_counter() - started)))
"""


def faces_per_second(source: Path, model: str, data: Path, faces: int) -> float:
    environment = {**os.environ, "PYTHONPATH": str(source)}
    command = [sys.executable, "-c", ONE_RUN, model, str(data), str(faces)]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
    return round(float(done.stdout.strip().splitlines()[-1]), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the earlier commit")
    parser.add_argument("-m", "--model", default="cydral-v1")
    parser.add_argument("--data", type=Path, default=Path("data/UTKFace"))
    parser.add_argument("--faces", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--out", type=Path, default=Path("bench/results/code_speed.json"))
    args = parser.parse_args()
    rates: dict[str, list[float]] = {"before": [], "now": []}
    with tempfile.TemporaryDirectory() as folder:
        earlier = Path(folder) / "before"
        subprocess.run(
            [
                "git",
                "-C",
                str(ROOT),
                "worktree",
                "add",
                "-q",
                "--detach",
                str(earlier),
                args.before,
            ],
            check=True,
        )
        try:
            for _ in range(args.runs):
                for side, source in (("before", earlier / "src"), ("now", ROOT / "src")):
                    rate = faces_per_second(source, args.model, args.data.resolve(), args.faces)
                    rates[side].append(rate)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(earlier)])
    before, now = statistics.median(rates["before"]), statistics.median(rates["now"])
    result = {
        "model": args.model,
        "data": f"UTKFace test split, first {args.faces} crops (sha1 60/20/20 after dedup)",
        "before": args.before,
        "now": subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip(),
        "runs": rates,
        "median faces/s": {"before": before, "now": now},
        "now / before": round(now / before, 3),
        "machine": machine_record(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median faces/s"]), result["now / before"])


if __name__ == "__main__":
    main()
