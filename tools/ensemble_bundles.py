"""Average trained AgeLens age bundles into one ensemble bundle, calibrated and scored.

The members must share chip size, normalisation, alignment and output ages (bundles
trained by ``agelens train`` with the same ``--size`` do). The ensemble's graph averages
the members' probabilities; its weights are stored as float16 to halve the file, the
computation stays float32. Flip TTA, conformal intervals and the gate buffer are fitted
on the val split of --data, and test is scored, as ``agelens train`` does.

    python tools/ensemble_bundles.py --model models/a --model models/b \\
        --data utkface:../shared/data/UTKFace --out src/agelens/models/agelens-utk-v1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agelens.models.bundles import FP32, load_bundle
from agelens.networks.resnet10 import Ensemble, load_onnx_weights
from agelens.training.config import TrainConfig, TrainResult
from agelens.training.job import write_bundle
from agelens.training.prepared import JobOptions, prepare

SHARED = ("input", "alignment")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="member bundle folder")
    parser.add_argument("--data", required=True, help="the members' training data spec")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    members = [load_bundle(path, precision=FP32) for path in args.model]
    first = members[0]
    for member in members[1:]:
        for section in SHARED:
            if member.manifest[section] != first.manifest[section]:
                parser.error(f"{member.name}: its {section!r} differs from {first.name}'s")
        if member.ages != first.ages:
            parser.error(f"{member.name}: its output ages differ from {first.name}'s")
    options = JobOptions(
        args.data,
        args.out,
        TrainConfig(),
        base=args.model[0],
        size=first.input_size,
        name=args.name,
    )
    data = prepare(options)
    trained = [member.manifest.get("training", {}) for member in members]
    result = TrainResult(
        Ensemble([load_onnx_weights(member.model_path) for member in members]),
        first.ages,
        seconds=sum(record.get("seconds", 0.0) for record in trained),
        config={"ensemble_of": [member.name for member in members]},
    )
    manifest = write_bundle(options, data, result, half_weights=True)
    manifest["description"] = (
        f"Ensemble of {len(members)} ResNet-10 age networks fine-tuned by AgeLens from "
        f"cydral-v1 on {data.dataset.kind}, {first.input_size}x{first.input_size} chips; "
        "probabilities averaged."
    )
    manifest["source"] = "AgeLens fine-tunes of cydral-v1, averaged"
    manifest["training"]["members"] = [
        {"name": member.name, **record} for member, record in zip(members, trained, strict=True)
    ]
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest["metrics"], indent=2))


if __name__ == "__main__":
    main()
