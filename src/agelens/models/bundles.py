"""Model bundles: an ONNX file plus a manifest that says how to feed it and what it outputs.

A bundle is data, not code. It is named by a built-in name (``cydral-v1``), or by a
path to a folder holding ``manifest.json``, or to the manifest itself. Its ``task``
says what the network does: ``age`` (the default), ``gender`` (apparent gender, as the
datasets label it) or ``face-detection``. Built-in
bundles ship inside AgeLens or point at weights that an installed package ships,
so nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from agelens.decisions.gate import ESTIMATE, MAX_BUFFER, GatePolicy
from agelens.decisions.quality import QualityLimits
from agelens.errors import ModelError

DEFAULT_BUNDLE = "cydral-v1"
DEFAULT_DETECTOR = "yunet-2023"
DEFAULT_GENDER_BUNDLE = "cydral-gender-v1"
AGE, GENDER, FACE_DETECTION = "age", "gender", "face-detection"
TASKS = (AGE, GENDER, FACE_DETECTION)
#: Numeric precisions a bundle may ship: its own weights, and an optional quantized variant.
FP32, INT8 = "fp32", "int8"
PRECISIONS = (FP32, INT8)
#: Challenge 25: over 18 with 7 years' buffer, the fallback gate policy.
CHALLENGE_BUFFER = 7.0
_BUILTIN_ROOT = importlib.resources.files("agelens") / "models"


@dataclass(frozen=True, slots=True)
class Bundle:
    """A validated manifest and the resolved location of its ONNX weights."""

    name: str
    manifest: dict[str, Any]
    model_path: Path
    #: The manifest's folder, where the bundle's own files (history, variants) live.
    folder: Path
    precision: str = FP32

    @property
    def task(self) -> str:
        return _task_of(self.manifest)

    @property
    def input_size(self) -> int:
        return int(self.manifest["input"]["size"])

    @property
    def input_name(self) -> str:
        return str(self.manifest["input"]["name"])

    @property
    def output_name(self) -> str:
        return str(self.manifest["output"]["name"])

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in self.manifest["input"]["mean"])  # type: ignore[return-value]

    @property
    def scale(self) -> float:
        return float(self.manifest["input"]["scale"])

    @property
    def ages(self) -> list[float]:
        """The age in years each output class stands for (its value in the expectation)."""
        return [float(v) for v in self.manifest["output"]["ages"]]

    @property
    def labels(self) -> list[str]:
        """A gender network's output classes, in order."""
        return [str(v) for v in self.manifest["output"]["labels"]]

    @property
    def uncertain_below(self) -> float:
        """A gender network's answer is ``uncertain`` when its likelier label has less."""
        return float(self.manifest.get("decision", {}).get("uncertain_below", 0.5))

    @property
    def chip_padding(self) -> float:
        return float(self.manifest["alignment"]["chip_padding"])

    @property
    def chip_border(self) -> str:
        """How chips are filled past the image's edge: ``zero`` (dlib's black) or ``edge``."""
        return str(self.manifest["alignment"].get("border", "zero"))

    @property
    def flip_tta(self) -> bool:
        """The bundle's default for horizontal-flip test-time augmentation."""
        return bool(self.manifest.get("inference", {}).get("flip_tta", False))

    @property
    def quality_limits(self) -> QualityLimits:
        """The limits the bundle was calibrated with; AgeLens's own for bundles without."""
        return QualityLimits.from_dict(self.manifest.get("quality") or {})

    def gate_policy(self, over: float) -> GatePolicy:
        """The bundle's default gate policy for threshold ``over``.

        A bundle calibrated by AgeLens stores the rule and buffer fitted on validation
        faces so that, in every collection (or domain) fitted on, at most 2% of
        13-17-year-olds pass a gate over 18. Other thresholds keep that rule and buffer,
        so that a higher threshold never passes a face a lower one refers. Bundles
        without a fitted policy get Challenge 25's rule: the estimate must reach over + 7.
        Every policy refers the faces that fail the quality check. Where no buffer held
        the promise in every domain (``holds`` is false), no face passes: the user may
        choose a buffer.
        """
        gate = self.manifest.get("gate") or {}
        if "buffer" in gate:
            rule, buffer = str(gate.get("rule", ESTIMATE)), float(gate["buffer"])
        else:
            rule, buffer = ESTIMATE, CHALLENGE_BUFFER
        refer_all = None
        if gate.get("holds") is False:
            refer_all = (
                f"{self.name} has no policy that holds: with every buffer up to "
                f"{MAX_BUFFER:g} years, over {gate['max_minor_pass']:.0%} of 13-17-year-olds "
                "passed in one collection fitted on, so no face passes (a buffer you choose "
                "overrides this)"
            )
        share = float(gate.get("share", 1.0))
        return GatePolicy(over, buffer, rule, self.quality_limits, refer_all, share)

    @property
    def license(self) -> dict[str, Any]:
        return dict(self.manifest["license"])


def _task_of(manifest: dict[str, Any]) -> str:
    """A manifest's task; manifests written before detectors were bundles are age models."""
    return str(manifest.get("task", AGE))


_COMMON = {"license": ("spdx", "source"), "artifact": ("path", "sha256")}
_REQUIRED = {
    AGE: {
        "input": ("name", "size", "mean", "scale"),
        "output": ("name", "ages"),
        "alignment": ("chip_padding",),
        **_COMMON,
    },
    GENDER: {
        "input": ("name", "size", "mean", "scale"),
        "output": ("name", "labels"),
        "alignment": ("chip_padding",),
        **_COMMON,
    },
    FACE_DETECTION: {
        "input": ("name", "layout", "dtype", "color_order", "multiple_of"),
        "output": ("strides", "nms_iou"),
        **_COMMON,
    },
}


def builtin_bundle_names(task: str | None = None) -> list[str]:
    """Names of the bundles shipped with AgeLens, all or those for one ``task``."""
    names = []
    for entry in _BUILTIN_ROOT.iterdir():
        manifest = entry / "manifest.json"
        if manifest.is_file() and task in (None, _task_of(json.loads(manifest.read_text()))):
            names.append(entry.name)
    return sorted(names)


def describe_builtin_bundles() -> list[dict[str, Any]]:
    """One JSON-ready row per shipped model: what it does, its licence and where it is from."""
    bundles = [
        load_bundle(name, task=task, verify=False)
        for task in TASKS
        for name in builtin_bundle_names(task)
    ]
    return [
        {
            "name": bundle.name,
            "task": bundle.task,
            "default": bundle.name in (DEFAULT_BUNDLE, DEFAULT_DETECTOR, DEFAULT_GENDER_BUNDLE),
            "licence": bundle.license["spdx"],
            "research_only": bool(bundle.license.get("research_only", False)),
            "attribution": bundle.license.get("attribution", ""),
            "source": bundle.license["source"],
            "description": bundle.manifest.get("description", ""),
            "precision": bundle.precision,
            "precisions": [FP32, *bundle.manifest.get("variants", {})],
            "provenance": bundle.license.get("note", ""),
            "figures": bundle.manifest.get("figures", {}),
        }
        for bundle in bundles
    ]


def load_bundle(
    name_or_path: str | Path = DEFAULT_BUNDLE,
    *,
    task: str = AGE,
    verify: bool = True,
    precision: str | None = None,
) -> Bundle:
    """Resolve a bundle by built-in name or path, and check its weights against the manifest.

    ``precision`` picks the weights: ``fp32`` (the network as published) or ``int8``
    (a quantized variant listed under the manifest's ``variants``); by default the
    manifest's ``inference.precision``, else ``fp32``.
    """
    manifest_path = Path(str(_manifest_path(name_or_path, task)))
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ModelError(f"{manifest_path}: unreadable manifest ({error})") from error
    _validate(manifest, manifest_path, task)
    name = str(manifest.get("name", manifest_path.parent.name))
    precision = precision or str(manifest.get("inference", {}).get("precision", FP32))
    artifact = _artifact_for(manifest, name, precision)
    model_path = _artifact_path(artifact, manifest_path.parent)
    if verify:
        _verify_checksum(model_path, artifact["sha256"])
    return Bundle(name, manifest, model_path, manifest_path.parent, precision)


def _artifact_for(manifest: dict[str, Any], name: str, precision: str) -> dict[str, Any]:
    """The manifest's entry for the weights of ``precision``."""
    if precision not in PRECISIONS:
        raise ModelError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == FP32:
        return dict(manifest["artifact"])
    variant = manifest.get("variants", {}).get(precision)
    if not isinstance(variant, dict) or not {"path", "sha256"} <= variant.keys():
        raise ModelError(f"{name} has no {precision} variant; use --precision {FP32}")
    return variant


def _manifest_path(name_or_path: str | Path, task: str) -> Path:
    text = str(name_or_path)
    builtin = _BUILTIN_ROOT / text / "manifest.json"
    if "/" not in text and builtin.is_file():
        return Path(str(builtin))
    path = Path(text)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise ModelError(
            f"no model bundle {text!r}: use a built-in {task} model "
            f"({', '.join(builtin_bundle_names(task))}) "
            "or a folder holding manifest.json"
        )
    return path


def _validate(manifest: Any, where: Path, task: str) -> None:
    if not isinstance(manifest, dict):
        raise ModelError(f"{where}: the manifest must be a JSON object")
    found = _task_of(manifest)
    if found != task:
        names = ", ".join(builtin_bundle_names(task))
        raise ModelError(
            f"{manifest.get('name', where)} is a model for {found}, not for {task} "
            f"(for {task}: {names}; see agelens models)"
        )
    for section, keys in _REQUIRED[task].items():
        missing = [key for key in keys if key not in manifest.get(section, {})]
        if missing:
            raise ModelError(f"{where}: manifest section {section!r} lacks {', '.join(missing)}")


def _artifact_path(artifact: dict[str, Any], folder: Path) -> Path:
    if "package" in artifact:
        try:
            path = Path(str(importlib.resources.files(artifact["package"]) / artifact["path"]))
        except ModuleNotFoundError as error:
            raise ModelError(
                f"bundle weights live in the package {artifact['package']!r}, "
                "which is not installed"
            ) from error
    else:
        path = folder / artifact["path"]
    if not path.is_file():
        raise ModelError(f"model weights not found at {path}")
    return path


@cache
def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_checksum(path: Path, expected: str) -> None:
    actual = _hash_file(path)
    if actual != expected:
        raise ModelError(f"{path}: sha256 {actual} does not match the manifest's {expected}")
