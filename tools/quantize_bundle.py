"""Add an int8 variant to an age bundle, if it gives the float network's ages.

onnxruntime's static quantization (QDQ, 7-bit int8 weights per output channel, uint8
activations) needs the range of every activation, which it measures on sample chips.
Weights keep to 7 bits (``reduce_range``) because x86 CPUs without VNNI add pairs of
u8 x s8 products in 16 bits: with 8-bit weights those sums saturate and the ages change
with the CPU (a 1-year-old read as 54). With 7 bits no sum can overflow, and the variant
gave the same ages on an emulated AVX2-only EPYC as on an AVX-512 VNNI one.
Those chips come from photos that installed packages ship in the public domain
(scikit-image's astronaut and camera, matplotlib's Grace Hopper), each aligned the
way the bundle aligns faces and varied by flips, shifts, rotation, brightness,
contrast and grey, so the variant carries no trace of a research-only dataset and
keeps the licence of the network it comes from.

The variant is then checked (``agelens.models.variants``) on other varied chips of the same
faces, and the faces as they are: where any chip's expected age differs from the float
network's by more than a year, the variant is deleted and the tool exits with status 1.
Otherwise it is written next to the manifest as ``model-int8.onnx`` and listed under
``variants.int8``; AgeLens runs it when ``--precision int8`` is asked for.

    python tools/quantize_bundle.py --model cydral-v1 --out src/agelens/models/cydral-v1
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import skimage.data
import torch
from matplotlib import cbook
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from agelens import AgeEstimator, ModelError, load_image
from agelens.models.bundles import FP32, INT8, Bundle
from agelens.models.variants import check_variant
from agelens.pipeline.chips import landmark_box
from agelens.pipeline.network import network_input
from agelens.pipeline.runtime import cpu_features
from agelens.training.augmentation import augment

VARIANT_FILE = "model-int8.onnx"
PHOTOS = {
    "scikit-image astronaut": skimage.data.astronaut,
    "scikit-image camera": skimage.data.camera,
    "matplotlib grace_hopper.jpg": lambda: cbook.get_sample_data(
        "grace_hopper.jpg", asfileobj=False
    ),
}
BATCH = 32
#: The output layer and softmax stay float: 8-bit logits or probabilities would round the
#: age distribution (probabilities in steps of 1/255 that no longer sum to 1).
HEAD_OPS = ("Gemm", "MatMul", "Softmax")


def face_chips(estimator: AgeEstimator) -> np.ndarray:
    """The chips of the faces in the package photos, as the bundle cuts them."""
    faces = []
    for name, photo in PHOTOS.items():
        image = load_image(photo())
        found = estimator.detector.detect(image)
        if not found:
            raise SystemExit(f"no face found in {name}")
        for face in found:
            faces.append(estimator.aligner.chip(image, landmark_box(face.landmarks))[0])
    return np.stack(faces)


def sample_chips(faces: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` varied chips, and their mirror images, of ``faces``."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.from_numpy(faces).permute(0, 3, 1, 2).float()
    repeats = -(-count // len(faces))
    varied = augment(pixels.repeat(repeats, 1, 1, 1)[:count], generator)
    chips = varied.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    return np.concatenate([chips, chips[:, :, ::-1]])


def check_chips(faces: np.ndarray, count: int, seed: int) -> np.ndarray:
    """The chips a variant is checked on: ``faces`` as cut, mirrored, and varied anew."""
    return np.concatenate([faces, faces[:, :, ::-1], sample_chips(faces, count, seed)])


class ChipReader(CalibrationDataReader):
    """Feeds normalised NCHW batches of the sample chips to the calibrator."""

    def __init__(self, bundle: Bundle, chips: np.ndarray) -> None:
        self._batches = iter(
            {bundle.input_name: network_input(chips[start : start + BATCH], bundle)}
            for start in range(0, len(chips), BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="bundle name or folder")
    parser.add_argument("--out", type=Path, required=True, help="the bundle's own folder")
    parser.add_argument(
        "--samples", type=int, default=256, help="varied chips (plus mirrors) to calibrate on"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    estimator = AgeEstimator(args.model, precision=FP32)
    bundle = estimator.bundle
    faces = face_chips(estimator)
    chips = sample_chips(faces, args.samples, args.seed)
    target = args.out / VARIANT_FILE
    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(bundle.model_path), str(prepared))
        head = [node.name for node in onnx.load(prepared).graph.node if node.op_type in HEAD_OPS]
        quantize_static(
            str(prepared),
            str(target),
            ChipReader(bundle, chips),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            nodes_to_exclude=head,
        )
    check = check_chips(faces, args.samples // 4, args.seed + 1)
    variant = dataclasses.replace(bundle, model_path=target, precision=INT8)
    try:
        worst = check_variant(bundle, variant, check)
    except ModelError as error:
        target.unlink()
        raise SystemExit(f"not listed, variant deleted: {error}") from error
    manifest_path = args.out / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest.setdefault("variants", {})["int8"] = {
        "path": VARIANT_FILE,
        "bytes": target.stat().st_size,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
        "made_by": "onnxruntime static quantization: QDQ, per-channel 7-bit int8 weights, "
        "uint8 activations, percentile ranges; the output layer and softmax stay float",
        "calibration_chips": f"{len(chips)} varied chips of the faces in "
        + ", ".join(PHOTOS)
        + " (public domain and CC0)",
        "checked": {
            "chips": len(check),
            "max_age_difference": round(worst, 3),
            "cpu": cpu_features(),
        },
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{target}: {target.stat().st_size / 1e6:.1f} MB, listed in {manifest_path}")


if __name__ == "__main__":
    main()
