"""Every age model on real photo collections held out one at a time, judged by the worst.

The collections: UTKFace test and the Indian actors' test (content-hash dedup, sha1
60/20/20: the models train on these sets' train splits, so they are reported, not counted
as held out for models trained on them), and every collection that
``tools/face_collections.py`` built under ``DATA/collections`` (its ``distinct.csv``,
every file; of ``aaf``, whose val split the intervals and gates are fitted on, the test
split, split by file). Per model and collection: MAE, bias, MAE by age band, 90% coverage, group
accuracy, and the gate over 18 under the model's own policy (the share passing at each
age 13-17, 18-24 and 25+); then the model's worst held-out collection.

    python tools/face_collections.py build nycu-screens --git-dir CLONE --out data/collections
    python tools/face_collections.py dedup --out data/collections \\
        --against utkface:data/UTKFace --against imfdb:data/imfdb-age/train
    python bench/leave_one_out.py --data data -m cydral-v1 -m agelens-research-v2
    python bench/leave_one_out.py --markdown      # the tables of docs/accuracy.md
    python bench/leave_one_out.py --record        # each shipped manifest's checked_on

With ``--folds``, each collection is also held out from a model trained with
``agelens train`` on the others (the options after ``--``), and that model is scored on it.
Models not run this time keep their rows from the last run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from agelens import AgeEstimator
from agelens.batch import EstimatorPool
from agelens.data.datasets import Split
from agelens.errors import AgeLensError
from agelens.evaluation.leave_one_out import (
    Collection,
    fold_plan,
    score_collections,
    seen_kinds,
    train_fold,
)
from agelens.pipeline.runtime import machine_record

#: Collections whose val split the shipped intervals and gates are fitted on: only their
#: test split is scored here.
FITTED_ON = ("aaf",)
BUNDLES = Path(__file__).resolve().parents[1] / "src" / "agelens" / "models"
BANDS = ("0-12", "13-17", "18-24", "25-39", "40-59", "60+")


def collections(data: Path) -> list[Collection]:
    """The two sets AgeLens trains on (their test splits), then each built collection."""
    return [
        Collection("utkface", f"utkface:{data / 'UTKFace'}", "test", aligned=True),
        Collection("imfdb", f"imfdb:{data / 'imfdb-age' / 'train'}", "test", aligned=True),
        *built_collections(data / "collections"),
    ]


def built_collections(folder: Path) -> list[Collection]:
    """Each collection ``tools/face_collections.py`` built under ``folder``, with the split
    scored: all of it, or the test split of one the shipped fits used."""
    found = []
    for table in sorted(folder.glob("*/distinct.csv")):
        split: Split = "test" if table.parent.name in FITTED_ON else "all"
        found.append(Collection(table.parent.name, f"csv:{table}", split))
    return found


def score(model: str, chosen: list[Collection]) -> dict[str, Any]:
    estimator = AgeEstimator(model)
    started = time.perf_counter()
    with EstimatorPool(estimator) as pool:
        scored = score_collections(pool, chosen, seen=seen_kinds(estimator.bundle))
    return {
        "precision": estimator.bundle.precision,
        "trained_on": sorted(seen_kinds(estimator.bundle)),
        **scored,
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine_record(),
    }


def main() -> None:
    argv = sys.argv[1:]
    train_options = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("-m", "--model", action="append", default=[])
    parser.add_argument("--out", type=Path, default=Path("bench/results/leave_one_out.json"))
    parser.add_argument("--folds", type=Path, help="train one model per fold in this folder")
    parser.add_argument("--markdown", action="store_true", help="print the docs' tables only")
    parser.add_argument(
        "--record", action="store_true", help="write each shipped model's held-out check"
    )
    args = parser.parse_args(argv)
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.markdown:
        markdown(results)
        return
    if args.record:
        record(results)
        return
    chosen = collections(args.data)
    results["collections"] = {c.name: {"spec": c.spec, "split": c.split} for c in chosen}
    models = results.setdefault("models", {})
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def keep(name: str, row: dict[str, Any]) -> None:
        models[name] = row
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(name, json.dumps(row["worst_held_out"]), flush=True)

    try:
        for model in args.model:
            keep(AgeEstimator(model).bundle.name, score(model, chosen))
        if args.folds:
            crops = [c for c in chosen if c.aligned]
            for held_out, training in fold_plan(crops):
                bundle = train_fold(held_out, training, args.folds / held_out.name, train_options)
                row = score(str(bundle), [held_out])
                keep(f"fold without {held_out.name}", {**row, "train_options": train_options})
    except AgeLensError as error:
        sys.exit(f"error: {error}")


def record(results: dict[str, Any]) -> None:
    """Into each shipped model's manifest, what its interval and gate did on the real
    collections held out of its training and of their fit (``checked_on``), so that the
    manifest says where its figures hold as well as where they were fitted."""
    for name, row in results["models"].items():
        folder = BUNDLES / name
        if not (folder / "manifest.json").is_file():
            continue
        manifest = json.loads((folder / "manifest.json").read_text())
        checked = {}
        for collection, figures in row["collections"].items():
            if not figures["held_out"] or figures.get("mae") is None:
                continue
            gate = figures.get("gate") or {}
            checked[collection] = {
                "split": results["collections"][collection]["split"],
                "faces": figures["scored"],
                "mae": figures["mae"],
                "coverage90": figures.get("coverage90"),
                "pass_13_17": gate.get("pass_13_17"),
                "n_13_17": gate.get("n_13_17"),
                "pass_25_plus": gate.get("pass_25_plus"),
            }
        manifest["checked_on"] = {
            "what": "real collections the model was neither trained nor calibrated on",
            "command": "python bench/leave_one_out.py --data data -m MODEL, then --record",
            "collections": checked,
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        print(name, ", ".join(checked))


def _cell(value: float | None, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if percent else f"{value:.2f}"


def markdown(results: dict[str, Any]) -> None:
    """One row per model and collection, then the worst held-out row per model."""
    header = ["model", "collection", "n", "MAE", "bias", *(f"MAE {b}" for b in BANDS)]
    header += ["90% covers", "groups", "13-17 pass", "25+ pass"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for model, row in results["models"].items():
        for name, figures in row["collections"].items():
            bands = figures.get("per_band", {})
            gate = figures.get("gate") or {}
            label = name if figures["held_out"] else f"{name} (trained on; test split)"
            cells = [f"`{model}`", label, str(figures["scored"]), _cell(figures.get("mae"))]
            cells.append("-" if figures.get("bias") is None else f"{figures['bias']:+.2f}")
            cells += [_cell(bands.get(b, {}).get("mae")) for b in BANDS]
            cells += [_cell(figures.get("coverage90")), _cell(figures.get("accuracy"), True)]
            cells += [_cell(gate.get("pass_13_17"), True), _cell(gate.get("pass_25_plus"), True)]
            print("| " + " | ".join(cells) + " |")
    header = ["model", "worst MAE", "worst abs bias", "coverage min-max", "13-17 pass max"]
    print("\n| " + " | ".join([*header, "25+ pass min"]) + " |\n|" + "---|" * (len(header) + 1))
    for model, row in results["models"].items():
        worst = row["worst_held_out"]
        cells = [f"`{model}`", _cell(worst.get("mae_max")), _cell(worst.get("abs_bias_max"))]
        low, high = worst.get("coverage90_min"), worst.get("coverage90_max")
        cells.append("-" if low is None else f"{low:.3f}-{high:.3f}")
        cells.append(_cell(worst.get("pass_13_17_max"), True))
        cells.append(_cell(worst.get("pass_25_plus_min"), True))
        print("| " + " | ".join(cells) + " |")
    bias_table(results)
    gate_table(results)


def bias_table(results: dict[str, Any]) -> None:
    """The bias (estimate minus true age) by age band, per model and collection with ages."""
    print("\n| " + " | ".join(["model", "collection", *(f"bias {b}" for b in BANDS)]) + " |")
    print("|" + "---|" * (len(BANDS) + 2))
    for model, row in results["models"].items():
        for name, figures in row["collections"].items():
            if figures.get("mae") is None:
                continue
            bands = figures.get("per_band", {})
            label = name if figures["held_out"] else f"{name} (trained on; test split)"
            cells = [f"`{model}`", label]
            cells += [
                "-" if bands.get(b, {}).get("bias") is None else f"{bands[b]['bias']:+.2f}"
                for b in BANDS
            ]
            print("| " + " | ".join(cells) + " |")


def gate_table(results: dict[str, Any]) -> None:
    """The gate over 18 under each model's policy, per collection with ages: the share
    passing (and how many there were) at 13-17, 18-24 and 25+, and the share referred
    because the face could not be judged; docs/age-gate.md's table."""
    header = ["model", "collection", "13-17 pass", "18-24 pass", "25+ pass", "referred for quality"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for model, row in results["models"].items():
        for name, figures in row["collections"].items():
            gate = figures.get("gate") or {}
            if figures.get("mae") is None or not gate:
                continue
            label = name if figures["held_out"] else f"{name} (trained on; test split)"
            cells = [f"`{model}`", label]
            for band in ("13_17", "18_24", "25_plus"):
                share, count = gate.get(f"pass_{band}"), gate.get(f"n_{band}", 0)
                cells.append("-" if not count else f"{_cell(share, True)} of {count}")
            cells.append(_cell(gate.get("referred_for_quality"), True))
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
