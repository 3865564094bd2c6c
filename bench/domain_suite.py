"""Every age model on the domain suite: UTKFace test and the Indian actors' test, each as a
clean crop, an old scanned print, a low-light webcam frame, a CCTV crowd shot and a phone
photo (seeded, see ``agelens.evaluation.domains``).

Per model, dataset and domain: MAE, bias, MAE by age band, 90% coverage, the share of
faces the quality check refers, group accuracy (Indian actors: YOUNG/MIDDLE/OLD from the
sums of the age distribution), and the gate over 18 under the model's own policy: the
share passing at each age 13-17, 18-24 and 25+. Then each model's worst domain.

Splits: content-hash dedup, then sha1 60/20/20 (``test``). Calibration and gate were
fitted on UTKFace ``val`` with ``agelens calibrate --aligned`` (all domains).

    python bench/domain_suite.py --data data -m cydral-v1 \\
        --out bench/results/domain_suite.json

Models not run this time keep their rows from the last run.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agelens import AgeEstimator
from agelens.batch import EstimatorPool
from agelens.data.datasets import read_dataset, select_split
from agelens.evaluation.domain_suite import score_suite
from agelens.evaluation.domains import DOMAINS
from agelens.pipeline.runtime import machine_record

DATASETS = {"utkface-test": "utkface:{}/UTKFace", "imfdb-test": "imfdb:{}/imfdb-age/train"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("-m", "--model", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/results/domain_suite.json"))
    parser.add_argument("--limit", type=int, default=None, help="a seeded sample per dataset")
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print the tables of the docs from --out; run nothing",
    )
    args = parser.parse_args()
    if args.markdown:
        markdown(json.loads(args.out.read_text()))
        return
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    datasets = {}
    for name, spec in DATASETS.items():
        samples = select_split(read_dataset(spec.format(args.data)), "test")
        if args.limit:
            samples = random.Random(0).sample(samples, min(args.limit, len(samples)))
        datasets[name] = samples
    results.setdefault("models", {})
    results["data"] = {name: len(samples) for name, samples in datasets.items()}
    results["split"] = "test (content-hash dedup, sha1 60/20/20)"
    results["domains"] = list(DOMAINS)
    for model in args.model:
        estimator = AgeEstimator(model)
        started = time.perf_counter()
        with EstimatorPool(estimator) as pool:
            scored = score_suite(pool, datasets)
        manifest = estimator.bundle.manifest
        results["models"][estimator.bundle.name] = {
            "precision": estimator.bundle.precision,
            "calibration": {
                key: manifest.get("calibration", {}).get(key) for key in ("domains", "split")
            },
            "gate": manifest.get("gate"),
            **scored,
            "seconds": round(time.perf_counter() - started, 1),
            "machine": machine_record(),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(model, json.dumps(scored["worst"]), flush=True)
    show(results)


def show(results: dict[str, Any]) -> None:
    """One table per model: a row per dataset and domain."""
    for model, row in results["models"].items():
        table = Table(title=model)
        for column in ("data", "domain", "MAE", "bias", "cov90", "poor", "13-17", "25+", "acc"):
            table.add_column(column)
        for dataset, domains in row["domains"].items():
            for domain, figures in domains.items():
                gate = figures.get("gate") or {}
                cells = [
                    figures.get("mae"),
                    figures.get("bias"),
                    figures.get("coverage90"),
                    figures.get("poor_quality"),
                    gate.get("pass_13_17"),
                    gate.get("pass_25_plus"),
                    figures.get("accuracy"),
                ]
                table.add_row(dataset, domain, *("-" if c is None else f"{c:.3g}" for c in cells))
        Console().print(table)


def _cell(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if percent else f"{value:.2f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown(results: dict[str, Any]) -> None:
    """The per-domain tables of docs/accuracy.md and docs/age-gate.md."""
    header = ["model", "domain", "MAE", "bias", "MAE 0-12 / 13-17 / 18-24 / 60+", "90% covers"]
    header += ["poor quality", "Indian actors", "poor quality"]
    print(_row(header) + "\n" + _row(["---"] * len(header)))
    for model, row in results["models"].items():
        utk, imfdb = row["domains"]["utkface-test"], row["domains"]["imfdb-test"]
        for domain, figures in utk.items():
            bands = figures.get("per_band", {})
            by_band = [
                _cell(bands.get(b, {}).get("mae")) for b in ("0-12", "13-17", "18-24", "60+")
            ]
            cells = [f"`{model}`", domain, _cell(figures["mae"]), f"{figures['bias']:+.2f}"]
            cells += [" / ".join(by_band), f"{figures['coverage90']:.3f}"]
            cells += [_cell(figures["poor_quality"], True)]
            cells += [_cell(imfdb[domain].get("accuracy"), True)]
            cells += [_cell(imfdb[domain]["poor_quality"], True)]
            print(_row(cells))
    ages = ["13", "14", "15", "16", "17", "13_17", "18_24", "25_plus"]
    header = ["model", "domain", *(a.replace("_plus", "+").replace("_", "-") for a in ages)]
    header.append("referred for quality")
    print("\n" + _row(header) + "\n" + _row(["---"] * len(header)))
    for model, row in results["models"].items():
        for domain, figures in row["domains"]["utkface-test"].items():
            gate = figures["gate"]
            cells = [f"`{model}`", domain, *(_cell(gate[f"pass_{a}"], True) for a in ages)]
            print(_row([*cells, _cell(gate["referred_for_quality"], True)]))


if __name__ == "__main__":
    main()
