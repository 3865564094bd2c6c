"""Every precision AgeLens ships or makes gives the float network's ages, on this CPU.

int8 kernels differ by CPU (x86 without VNNI saturates u8s8 sums), so these checks run
on whatever machine runs the tests: a variant that drifts there fails here.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from agelens import AgeEstimator, ModelError, load_bundle, load_image
from agelens.models.bundles import AGE, FP32, builtin_bundle_names
from agelens.models.variants import MAX_AGE_DIFFERENCE, age_differences, check_variant
from agelens.pipeline.chips import landmark_box
from agelens.pipeline.runtime import cpu_features

TOOL = Path(__file__).parents[1] / "tools" / "quantize_bundle.py"
SHIFTS = ((-3, 0), (3, 0), (0, -3), (0, 3))


@pytest.fixture(scope="module")
def chips(astronaut, grace_hopper_path) -> np.ndarray:
    """Forty chips: the sample faces as cut, shifted by 3 pixels, brighter, darker,
    mirrored, and chips made here (a gradient, stripes, grey, noise)."""
    estimator = AgeEstimator(precision=FP32)
    faces = []
    for image in (astronaut, load_image(grace_hopper_path)):
        (found,) = estimator.detector.detect(image)
        chip = estimator.aligner.chip(image, landmark_box(found.landmarks))[0]
        size = chip.shape[0]
        padded = np.pad(chip, ((3, 3), (3, 3), (0, 0)), mode="edge")
        faces.append(chip)
        faces += [padded[3 + dy : 3 + dy + size, 3 + dx : 3 + dx + size] for dx, dy in SHIFTS]
    plain = np.stack(faces)
    lit = [np.clip(plain[::5] * gain, 0, 255).astype(np.uint8) for gain in (0.6, 0.8, 1.2, 1.4)]
    faces = np.concatenate([plain, *lit])
    size = faces.shape[1]
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    made = np.stack(
        [
            np.broadcast_to(ramp[None, :, None], (size, size, 3)),
            np.broadcast_to(((np.arange(size) // 4) % 2 * 255.0)[:, None, None], (size, size, 3)),
            np.full((size, size, 3), 128.0),
            np.random.default_rng(0).integers(0, 256, (size, size, 3)),
        ]
    ).astype(np.uint8)
    return np.concatenate([faces, faces[:, :, ::-1], made])


def shipped_variants() -> list[tuple[str, str]]:
    return [
        (name, precision)
        for name in builtin_bundle_names(AGE)
        for precision in load_bundle(name, verify=False).manifest.get("variants", {})
    ]


def test_the_chips_are_a_few_dozen_distinct_images(chips):
    assert chips.shape[0] >= 36 and chips.dtype == np.uint8
    assert len({chip.tobytes() for chip in chips}) == len(chips)


def test_every_shipped_variant_gives_the_ages_of_fp32_here(chips):
    for name, precision in shipped_variants():
        check_variant(
            load_bundle(name, precision=FP32), load_bundle(name, precision=precision), chips
        )
    defaults = {
        name: load_bundle(name, verify=False).precision for name in builtin_bundle_names(AGE)
    }
    unchecked = {
        name: p for name, p in defaults.items() if p != FP32 and (name, p) not in shipped_variants()
    }
    assert not unchecked


def test_the_check_passes_the_same_weights_and_refuses_drifted_ones(chips, tmp_path):
    reference = load_bundle(precision=FP32)
    same = dataclasses.replace(reference, precision="int8")
    assert age_differences(reference, same, chips).max() == 0.0
    # A variant whose output layer leans a little to the oldest ages, as a broken kernel might.
    network = onnx.load(reference.model_path)
    (bias,) = [tensor for tensor in network.graph.initializer if tensor.name == "layer_1_bias"]
    leaning = numpy_helper.to_array(bias).copy()
    leaning[-20:] += 1.5
    bias.CopyFrom(numpy_helper.from_array(leaning, bias.name))
    onnx.save(network, tmp_path / "drifted.onnx")
    impostor = dataclasses.replace(
        reference, model_path=tmp_path / "drifted.onnx", precision="int8"
    )
    with pytest.raises(ModelError, match=r"differs from fp32's by up to \d+\.\d\d years"):
        check_variant(reference, impostor, chips)


def test_the_quantization_tool_lists_a_variant_only_when_it_passes_the_check(
    chips, fp32_manifest, tmp_path
):
    (tmp_path / "manifest.json").write_text(json.dumps(fp32_manifest()))
    made = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "--model",
            str(tmp_path),
            "--out",
            str(tmp_path),
            "--samples",
            "64",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    if made.returncode == 0:
        assert manifest["variants"]["int8"]["checked"]["max_age_difference"] <= MAX_AGE_DIFFERENCE
        check_variant(
            load_bundle(tmp_path, precision=FP32), load_bundle(tmp_path, precision="int8"), chips
        )
    else:
        assert "not listed, variant deleted" in made.stderr, made.stderr[-2000:]
        assert "variants" not in manifest and not (tmp_path / "model-int8.onnx").exists()


def test_cpu_features_say_whether_int8_kernels_have_vnni():
    found = cpu_features()
    assert found["machine"] and found["model"]
    assert isinstance(found["vnni"], bool) and isinstance(found["features"], list)
    if found["machine"] in ("x86_64", "AMD64"):
        assert "AVX2" in found["features"] or not found["vnni"]
