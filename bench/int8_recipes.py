"""How far int8 variants of the default network stray from its float ages, recipe by recipe.

Each recipe is onnxruntime static quantization as ``tools/quantize_bundle.py`` does it
(QDQ, per-channel weights, uint8 activations, percentile ranges on chips of the package
photos), changed in one way. Each variant is compared with the float network on the
tool's check chips and on UTKFace test crops (content-hash dedup, sha1 60/20/20), and
timed per chip (batches of 64, one thread).

int8 kernels depend on the CPU, and the file records the CPU the process saw. To see an
AVX2-only x86 CPU (no VNNI, no AVX-512) on a newer one, run it under QEMU's user-mode
emulator, which reports the emulated CPU's features (its timings mean nothing):

    python bench/int8_recipes.py --out bench/results/int8_recipes.json
    qemu-x86_64 -cpu EPYC-Rome .venv/bin/python bench/int8_recipes.py \\
        --crops 100 --out bench/results/int8_recipes-epyc-rome-emulated.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from agelens import AgeEstimator, load_image
from agelens.data.datasets import read_dataset, select_split
from agelens.models.bundles import FP32, INT8, Bundle
from agelens.models.variants import MAX_AGE_DIFFERENCE, age_differences
from agelens.pipeline.network import AgeModel
from agelens.pipeline.runtime import machine_record

_TOOL = Path(__file__).parents[1] / "tools" / "quantize_bundle.py"
_spec = importlib.util.spec_from_file_location("quantize_bundle", _TOOL)
tool = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(tool)  # type: ignore[union-attr]

#: One change each from the recipe the default network's first variant used ("8-bit").
RECIPES: dict[str, dict] = {
    "8-bit weights (the first shipped variant)": {},
    "7-bit weights (reduce_range)": {"reduce_range": True},
    "uint8 weights (U8U8)": {"weight_type": QuantType.QUInt8},
    "7-bit weights, first convolution in float": {"reduce_range": True, "float_convs": 1},
    "uint8 weights, first convolution in float": {
        "weight_type": QuantType.QUInt8,
        "float_convs": 1,
    },
}


def crop_chips(estimator: AgeEstimator, data: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Chips of ``count`` UTKFace test crops (a seeded draw) and their ages."""
    samples = select_split(read_dataset(f"utkface:{data}"), "test")
    chosen = np.random.default_rng(0).choice(len(samples), count, replace=False)
    chips, ages = [], []
    for index in chosen:
        image = load_image(samples[index].path)
        height, width = image.shape[:2]
        chips.append(estimator.aligner.chip(image, (0.0, 0.0, float(width), float(height)))[0])
        ages.append(float(samples[index].age))
    return np.stack(chips), np.array(ages)


def per_chip_ms(bundle: Bundle, chips: np.ndarray) -> float:
    model = AgeModel(bundle)
    model.distributions(chips[:64], flip=False)
    start = time.perf_counter()
    model.distributions(chips, flip=False)
    return round((time.perf_counter() - start) / len(chips) * 1000, 3)


def summary(differences: np.ndarray) -> dict:
    return {
        "max": round(float(differences.max()), 3),
        "mean": round(float(differences.mean()), 3),
        "over_limit": int((differences > MAX_AGE_DIFFERENCE).sum()),
        "n": len(differences),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=Path("data/UTKFace"))
    parser.add_argument("--crops", type=int, default=500, help="UTKFace test crops to compare on")
    parser.add_argument("--out", type=Path, default=Path("bench/results/int8_recipes.json"))
    args = parser.parse_args()
    estimator = AgeEstimator(precision=FP32)
    reference = estimator.bundle
    faces = tool.face_chips(estimator)
    calibration_chips = tool.sample_chips(faces, 256, 0)
    check_chips = tool.check_chips(faces, 64, 1)
    crops, truth = crop_chips(estimator, args.data, args.crops)
    expected = AgeModel(reference).distributions(crops, flip=False) @ np.asarray(reference.ages)
    results: dict = {
        "data": f"{args.crops} UTKFace test crops (sha1 60/20/20 after dedup, seeded draw), "
        "aligned; and the quantization tool's check chips of the package photos",
        "machine": machine_record(),
        "fp32": {
            "utkface_mae": round(float(np.abs(expected - truth).mean()), 3),
            "ms_per_chip": per_chip_ms(reference, crops),
        },
        "recipes": {},
    }
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(reference.model_path), str(prepared))
        nodes = onnx.load(prepared).graph.node
        head = [node.name for node in nodes if node.op_type in tool.HEAD_OPS]
        convs = [node.name for node in nodes if node.op_type == "Conv"]
        for label, recipe in RECIPES.items():
            options = dict(recipe)
            float_convs = convs[: options.pop("float_convs", 0)]
            target = Path(folder) / "variant.onnx"
            quantize_static(
                str(prepared),
                str(target),
                tool.ChipReader(reference, calibration_chips),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                calibrate_method=CalibrationMethod.Percentile,
                nodes_to_exclude=head + float_convs,
                **{"weight_type": QuantType.QInt8, **options},
            )
            variant = dataclasses.replace(reference, model_path=target, precision=INT8)
            ages = AgeModel(variant).distributions(crops, flip=False) @ np.asarray(reference.ages)
            results["recipes"][label] = {
                "check_chips": summary(age_differences(reference, variant, check_chips)),
                "utkface_crops": summary(np.abs(ages - expected)),
                "utkface_mae": round(float(np.abs(ages - truth).mean()), 3),
                "ms_per_chip": per_chip_ms(variant, crops),
            }
            print(label, json.dumps(results["recipes"][label]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
