"""Average trained AgeLens age bundles into one ensemble bundle, calibrated and scored.

The members must share chip size, normalisation, alignment and output ages (bundles
trained by ``agelens train`` with the same ``--size`` do). The ensemble's graph averages
the members' probabilities; its weights are stored as float16 to halve the file, the
computation stays float32. Members trained with ``--mode tail`` from the same node of one
imported network share everything before that node: the ensemble then runs that trunk
once, so two members cost little more than one. Flip TTA, conformal intervals and the
gate buffer are fitted on the val split of --data, and test is scored, as ``agelens
train`` does.

    python tools/ensemble_bundles.py --model models/a --model models/b \\
        --data utkface:data/UTKFace --out src/agelens/models/agelens-utk-v1
    python tools/ensemble_bundles.py --model models/tail-a --model models/tail-b \\
        --data utkface:data/UTKFace --data imfdb:data/imfdb-age/train \\
        --groups imfdb --cache chips/ --out models/ensemble
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from agelens.decisions.groups import resolve_scheme
from agelens.models.bundles import FP32, Bundle, load_bundle
from agelens.networks.graph_age_net import SharedTrunkEnsemble, load_graph_network
from agelens.networks.resnet10 import Ensemble, load_onnx_weights
from agelens.training.config import TrainConfig, TrainResult
from agelens.training.job import write_bundle
from agelens.training.prepared import JobOptions, prepare

SHARED = ("input", "alignment")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="member bundle folder")
    parser.add_argument(
        "--data", action="append", required=True, help="the members' training data specs"
    )
    parser.add_argument("--cache", type=Path, default=None, help="chip cache folder")
    parser.add_argument(
        "--groups", default=None, help="group scheme of group-labelled data (e.g. imfdb)"
    )
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
        args.data[0],
        args.out,
        TrainConfig(),
        scheme=resolve_scheme(args.groups) if args.groups else None,
        base=args.model[0],
        size=first.input_size,
        border=first.chip_border,
        cache_dir=args.cache,
        name=args.name,
        more_data=tuple(args.data[1:]),
    )
    data = prepare(options)
    trained = [member.manifest.get("training", {}) for member in members]
    result = TrainResult(
        _ensemble(members, trained, parser),
        first.ages,
        seconds=sum(record.get("seconds", 0.0) for record in trained),
        config={"ensemble_of": [member.name for member in members]},
    )
    manifest = write_bundle(options, data, result, half_weights=True)
    base = trained[0].get("base", "cydral-v1")
    kinds = " and ".join(dataset.kind for dataset in [data.dataset, *data.more])
    manifest["description"] = (
        f"Ensemble of {len(members)} age networks trained by AgeLens from {base} on {kinds}, "
        f"{first.input_size}x{first.input_size} chips; probabilities averaged."
    )
    manifest["source"] = f"AgeLens trainings of {base}, averaged"
    manifest["training"]["members"] = [
        {"name": member.name, **record} for member, record in zip(members, trained, strict=True)
    ]
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(json.dumps(manifest["metrics"], indent=2))


def _ensemble(
    members: list[Bundle], trained: list[dict], parser: argparse.ArgumentParser
) -> nn.Module:
    """ResNet-10 members averaged whole; imported-graph tails from one node share a trunk."""
    if not all("network" in member.manifest for member in members):
        return Ensemble([load_onnx_weights(member.model_path) for member in members])
    cuts = {record.get("config", {}).get("cut") for record in trained}
    if len(cuts) != 1 or None in cuts:
        parser.error("imported-graph members must all be tails trained from one --from node")
    (cut,) = cuts
    nets = [load_graph_network(m.folder, m.manifest["network"]) for m in members]
    probe = torch.rand(2, 3, members[0].input_size, members[0].input_size) * 255 - 128
    with torch.inference_mode():
        trunks = [net.eval().trunk(probe, cut) for net in nets]
    if not all(torch.equal(trunks[0], other) for other in trunks[1:]):
        parser.error(f"the members differ before {cut!r}: they do not share a trunk")
    return SharedTrunkEnsemble(nets, cut)


if __name__ == "__main__":
    main()
