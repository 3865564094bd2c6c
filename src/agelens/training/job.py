"""From a dataset spec to a trained, calibrated bundle on disk, with its split and curves.

The job reads and deduplicates the data, aligns every face once into the chip
cache, trains on the content-hash train split with early stopping on val, then on
val fits the conformal intervals and the gate's buffer, scores test, and writes an
ordinary age bundle (ONNX + manifest) that ``predict``, ``gate`` and the server load.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agelens.data.chip_cache import AlignmentSettings, ChipSet, load_chips
from agelens.data.datasets import (
    Dataset,
    read_dataset,
    spec_label,
    split_of,
    unique_samples,
    write_split,
)
from agelens.decisions import calibration
from agelens.decisions.gate import fit_policy
from agelens.decisions.groups import GroupScheme
from agelens.errors import DatasetError
from agelens.evaluation.plots import plot_curves
from agelens.models.bundles import DEFAULT_BUNDLE, FP32, Bundle, load_bundle
from agelens.training.augmentation import Normalise
from agelens.training.config import LabelledChips, TrainConfig, TrainResult, pick_device
from agelens.training.loop import train
from agelens.training.torch_network import export_onnx, load_onnx_weights
from agelens.training.validation import predict_probabilities

RESEARCH_DATASETS = {"utkface", "imfdb"}


@dataclass(frozen=True, slots=True)
class JobOptions:
    data: str
    out: Path
    config: TrainConfig
    scheme: GroupScheme | None = None
    base: str = DEFAULT_BUNDLE
    size: int = 64
    aligned: bool = True
    border: str = "edge"
    cache_dir: Path | None = None
    name: str | None = None
    #: "auto" (a CUDA GPU when torch sees one), "cpu", "cuda" or "cuda:N".
    device: str = "auto"


def labelled(chips: ChipSet, rows: list[int], scheme: GroupScheme | None) -> LabelledChips:
    """Chips of ``rows`` with ages (NaN when unknown) and group indices (-1 when unknown)."""
    ages = np.array(
        [np.nan if chips.samples[r].age is None else chips.samples[r].age for r in rows],
        dtype=np.float32,
    )
    groups = np.full(len(rows), -1, dtype=np.int64)
    if scheme is not None:
        index = {label: i for i, label in enumerate(scheme.labels)}
        for position, row in enumerate(rows):
            sample = chips.samples[row]
            if sample.group is not None:
                if sample.group not in index:
                    raise DatasetError(
                        f"label {sample.group!r} is not a group of scheme {scheme.name!r} "
                        f"({', '.join(scheme.labels)})"
                    )
                groups[position] = index[sample.group]
            elif sample.age is not None:
                groups[position] = index[scheme.group_of(sample.age)]
    return LabelledChips(chips.chips[rows], ages, groups)


def split_rows(chips: ChipSet) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for row, digest in enumerate(chips.digests):
        rows[split_of(digest)].append(row)
    return rows


def _usable(data: LabelledChips, task: str) -> LabelledChips:
    keep = ~np.isnan(data.ages) if task == "age" else data.groups >= 0
    return LabelledChips(data.chips[keep], data.ages[keep], data.groups[keep])


@dataclass(slots=True)
class PreparedData:
    """A dataset read, deduplicated, split, aligned and labelled for one job."""

    dataset: Dataset
    base: Bundle
    counts: dict[str, int]
    sets: dict[str, LabelledChips]
    normalise: Normalise
    unreadable: int


def prepare(options: JobOptions, *, show_progress: bool = True) -> PreparedData:
    """Read and split the data (writing ``split.json``), and align it into the chip cache."""
    task = options.config.task
    if task == "groups" and options.scheme is None:
        raise DatasetError("the groups task needs a group scheme")
    dataset = read_dataset(options.data)
    options.out.mkdir(parents=True, exist_ok=True)
    counts = write_split(dataset, options.out / "split.json")
    base = load_bundle(options.base, precision=FP32)
    settings = AlignmentSettings(options.size, base.chip_padding, options.border, options.aligned)
    chips = load_chips(
        unique_samples(dataset), settings, cache_dir=options.cache_dir, show_progress=show_progress
    )
    rows = split_rows(chips)
    sets = {name: _usable(labelled(chips, rows[name], options.scheme), task) for name in rows}
    if len(sets["train"].chips) == 0 or len(sets["val"].chips) == 0:
        raise DatasetError(f"{options.data}: too few labelled images for a train and a val split")
    normalise = Normalise(base.mean, base.scale)
    return PreparedData(dataset, base, counts, sets, normalise, len(chips.unreadable))


def run(
    options: JobOptions,
    *,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train, calibrate, score and write the bundle; returns the manifest written."""
    data = prepare(options, show_progress=show_progress)
    result = train(
        load_onnx_weights(data.base.model_path),
        data.sets["train"],
        data.sets["val"],
        data.normalise,
        options.config,
        scheme=options.scheme,
        on_epoch=on_epoch,
        on_step=on_step,
        device=pick_device(options.device),
    )
    return write_bundle(options, data, result)


def write_bundle(
    options: JobOptions, data: PreparedData, result: TrainResult, *, half_weights: bool = False
) -> dict[str, Any]:
    """Fit TTA, calibration and gate on val, score test, export; returns the manifest."""
    manifest = _manifest(
        options, data.dataset, data.base.manifest, result, data.counts, data.unreadable
    )
    manifest.update(_fit_on_val_and_score(result, data.sets, data.normalise, options.scheme))
    model_path = options.out / "model.onnx"
    export_onnx(result.net, model_path, options.size, half_weights=half_weights)
    manifest["artifact"] = {
        "path": model_path.name,
        "bytes": model_path.stat().st_size,
        "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
    }
    (options.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if result.history:
        (options.out / "history.json").write_text(json.dumps(result.history, indent=2) + "\n")
        plot_curves(result.history, options.out / "curves.png", options.config.task)
    return manifest


def _fit_on_val_and_score(
    result: TrainResult,
    sets: dict[str, LabelledChips],
    normalise: Normalise,
    scheme: GroupScheme | None,
) -> dict[str, Any]:
    """Flip TTA kept only if it helps on val; calibration and gate buffer fitted on val."""
    net, ages = result.net, result.class_ages
    values = torch.tensor(ages)

    def probabilities(name: str, flip: bool) -> np.ndarray:
        return predict_probabilities(net, sets[name].chips, normalise, flip=flip).numpy()

    def score(p: np.ndarray, data: LabelledChips) -> dict[str, float]:
        known = ~np.isnan(data.ages)
        numbers: dict[str, float] = {"n": len(data.ages)}
        if known.any():
            errors = np.abs(p[known] @ values.numpy() - data.ages[known])
            numbers.update(
                mae=round(float(errors.mean()), 4), cs5=round(float((errors <= 5).mean()), 4)
            )
        if scheme is not None and (data.groups >= 0).any():
            predicted = (p @ scheme.membership(np.asarray(ages))).argmax(axis=1)
            valid = data.groups >= 0
            numbers["accuracy"] = round(float((predicted[valid] == data.groups[valid]).mean()), 4)
        return numbers

    val_plain, val_flip = probabilities("val", False), probabilities("val", True)
    plain, flipped = score(val_plain, sets["val"]), score(val_flip, sets["val"])
    key = "mae" if "mae" in plain else "accuracy"
    flip = flipped[key] < plain[key] if key == "mae" else flipped[key] > plain[key]
    val_p = val_flip if flip else val_plain
    test_p = probabilities("test", flip) if len(sets["test"].chips) else val_p[:0]
    extra: dict[str, Any] = {"inference": {"flip_tta": bool(flip)}}
    metrics = {"val": score(val_p, sets["val"]), "test": score(test_p, sets["test"])}
    known = ~np.isnan(sets["val"].ages)
    if known.sum() >= calibration.MIN_FACES:
        record = calibration.fit(val_p[known], ages, sets["val"].ages[known])
        extra["calibration"] = record
        test_known = ~np.isnan(sets["test"].ages)
        if test_known.any():
            bounds = calibration.intervals(test_p[test_known], ages, record, 0.9)
            metrics["test"]["coverage90"] = round(
                calibration.coverage(bounds, sets["test"].ages[test_known]), 4
            )
        extra["gate"] = fit_policy(val_p[known], ages, record, sets["val"].ages[known])
    extra["metrics"] = metrics
    return extra


def _manifest(
    options: JobOptions,
    dataset: Dataset,
    base: dict[str, Any],
    result: TrainResult,
    counts: dict[str, int],
    unreadable: int,
) -> dict[str, Any]:
    base_licence = base["license"]
    research = dataset.kind in RESEARCH_DATASETS or bool(base_licence.get("research_only"))
    sources = [dataset.kind]
    if base_licence.get("research_only"):
        sources.append(f"the base bundle {base['name']}")
    name = options.name or options.out.name
    return {
        "schema": 1,
        "name": name,
        "description": (
            f"{base['name']} fine-tuned by AgeLens ({options.config.mode}, task "
            f"{options.config.task}) on {dataset.kind}, {options.size}x{options.size} chips."
        ),
        "task": "age",
        "input": {**base["input"], "size": options.size},
        "output": {"name": "probabilities", "softmax_in_graph": True, "ages": result.class_ages},
        "alignment": {**base["alignment"], "border": options.border},
        "groups": None if options.scheme is None else options.scheme.name,
        "license": {
            "spdx": "LicenseRef-research-only" if research else "LicenseRef-training-data",
            "attribution": f"base {base['name']} ({base_licence['spdx']}): "
            + str(base_licence.get("attribution", "")),
            "source": f"trained with AgeLens on {dataset.kind}, from {base['name']}",
            "research_only": research,
            "note": (
                f"Weights derived from {' and '.join(sources)}, whose licence allows "
                "non-commercial research only."
                if research
                else "Weights derived from your training data: its licence applies."
            ),
        },
        "training": {
            "data": spec_label(options.data),
            "dataset": dataset.kind,
            "split": {"file": "split.json", "counts": counts, "rule": "sha1 60/20/20"},
            "duplicates_dropped": dataset.duplicates,
            "malformed": len(dataset.malformed),
            "unreadable": unreadable,
            "base": base["name"],
            "config": result.config,
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "seconds": round(result.seconds, 1),
            "device": result.device,
        },
        "source": f"AgeLens {options.config.mode} of {base['name']}",
    }
