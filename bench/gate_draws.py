"""Does a model's gate hold on other draws of the domain suite, not only the one it is
judged by? UTKFace test's 13-17-year-olds, each domain drawn again with other seeds (the
suite itself uses seed 0), under each model's own gate policy over 18.

A policy fitted on one draw can be lucky: a domain's noise, light or blur falls
differently on the next photos of the same people. This counts, per model, domain and
seed, how many of the minors pass.

    python bench/gate_draws.py --data data --seeds 0,1,2,3,4 -m cydral-v1 \\
        --out bench/results/gate_draws.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agelens import AgeEstimator
from agelens.batch import EstimatorPool
from agelens.data.datasets import read_dataset, select_split
from agelens.decisions.gate import MINORS, Decision
from agelens.evaluation.domain_suite import predict_domain
from agelens.evaluation.domains import CLEAN, DOMAINS
from agelens.pipeline.runtime import machine_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("-m", "--model", action="append", default=[])
    parser.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated draw seeds")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gate_draws.json"))
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    low, high = MINORS
    samples = [
        sample
        for sample in select_split(read_dataset(f"utkface:{args.data}/UTKFace"), "test")
        if sample.age is not None and low <= sample.age <= high
    ]
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results.update(split="test (content-hash dedup, sha1 60/20/20)", minors=len(samples))
    results.setdefault("models", {})
    for model in args.model:
        estimator = AgeEstimator(model)
        policy = estimator.bundle.gate_policy(18)
        passed: dict[str, dict[str, int]] = {}
        with EstimatorPool(estimator) as pool:
            for domain in DOMAINS:
                for seed in [0] if domain == CLEAN else seeds:  # a clean crop is one picture
                    faces = predict_domain(pool, samples, domain, seed=seed)
                    count = sum(policy.decide(p.face) is Decision.PASS for p in faces)
                    passed.setdefault(domain, {})[str(seed)] = count
        results["models"][estimator.bundle.name] = {
            "passed": passed,
            "most": max(max(by_seed.values()) for by_seed in passed.values()),
            "machine": machine_record(),
        }
        print(model, json.dumps(passed), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
