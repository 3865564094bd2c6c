"""From a dataset spec to a trained, calibrated bundle on disk, with its split and curves.

The job reads and deduplicates the data, aligns every face once into the chip
cache, trains on the content-hash train split with early stopping on val, then on
val fits the conformal intervals and the gate's buffer, scores test, and writes an
ordinary age bundle (ONNX + manifest) that ``predict``, ``gate`` and the server load.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agelens import strict_json
from agelens.data.datasets import (
    Dataset,
    data_record,
)
from agelens.decisions import calibration
from agelens.decisions.gate_fit import fit_policy, too_few_minors
from agelens.decisions.groups import GroupScheme
from agelens.evaluation.plots import plot_curves
from agelens.models.bundles import Bundle
from agelens.networks.graph_age_net import GraphAgeNet, load_graph_network
from agelens.networks.resnet10 import export_onnx, load_onnx_weights
from agelens.pipeline.runtime import open_session
from agelens.training.augmentation import Normalise
from agelens.training.config import LabelledChips, TrainResult, pick_device
from agelens.training.loop import train
from agelens.training.objective import class_ages_for
from agelens.training.prepared import JobOptions, PreparedData, prepare

RESEARCH_DATASETS = {"utkface", "imfdb"}


def run(
    options: JobOptions,
    *,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train, calibrate, score and write the bundle; returns the manifest written."""
    data = prepare(options, show_progress=show_progress, on_note=on_note)
    result = train(
        training_network(data.base, class_ages_for(options.config.max_age)),
        data.sets["train"],
        data.sets["val"],
        data.normalise,
        options.config,
        scheme=options.scheme,
        on_epoch=on_epoch,
        on_step=on_step,
        device=pick_device(options.device),
        cache_dir=options.cache_dir,
        checkpoint=options.out / "checkpoint.pt",
    )
    return write_bundle(options, data, result)


def training_network(base: Bundle, class_ages: list[float]) -> nn.Module:
    """The base bundle's network in torch: an imported graph (its head moved onto
    ``class_ages``) where the manifest names one, else the bundled ResNet-10 from ONNX."""
    if "network" in base.manifest:
        net = load_graph_network(base.folder, base.manifest["network"])
        net.regrid(base.ages, class_ages)
        return net
    return load_onnx_weights(base.model_path)


def write_bundle(
    options: JobOptions, data: PreparedData, result: TrainResult, *, half_weights: bool = False
) -> dict[str, Any]:
    """Fit TTA, calibration and gate on val, score test, export; returns the manifest."""
    manifest = _manifest(
        options,
        [data.dataset, *data.more],
        data.base.manifest,
        result,
        data.counts,
        data.unreadable,
        data.teacher.manifest if data.teacher is not None else None,
    )
    manifest["training"]["collections"] = data.collections
    model_path = options.out / "model.onnx"
    # An imported graph's weights are float16 in its shards already; so in the ONNX file.
    half = half_weights or isinstance(result.net, GraphAgeNet)
    export_onnx(result.net, model_path, options.size, half_weights=half)
    if isinstance(result.net, GraphAgeNet):
        result.net.save_graph(data.base.folder / result.net.spec.graph, options.out / "graph")
        manifest["network"] = {**result.net.spec.to_manifest(), "graph": "graph/model.json"}
    manifest.update(
        _fit_on_val_and_score(
            model_path, result, data.sets, data.normalise, options.scheme, options.specs
        )
    )
    manifest["artifact"] = {
        "path": model_path.name,
        "bytes": model_path.stat().st_size,
        "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
    }
    (options.out / "manifest.json").write_text(strict_json.dumps(manifest, indent=2) + "\n")
    # The bundle is whole: a run of the same job starts afresh rather than resuming.
    (options.out / "checkpoint.pt").unlink(missing_ok=True)
    if result.history:
        (options.out / "history.json").write_text(
            strict_json.dumps(result.history, indent=2) + "\n"
        )
        plot_curves(result.history, options.out / "curves.png", options.config.task)
    return manifest


def _fit_on_val_and_score(
    model_path: Path,
    result: TrainResult,
    sets: dict[str, LabelledChips],
    normalise: Normalise,
    scheme: GroupScheme | None,
    specs: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Flip TTA kept only if it helps on val; calibration and gate buffer fitted on val;
    the val and test figures pooled, and per collection where ``specs`` names several."""
    ages = result.class_ages
    values = torch.tensor(ages)
    # The exported file, in onnxruntime on every core: 224-px networks run 3x faster so.
    session = open_session(model_path, os.cpu_count())

    def probabilities(name: str, mirrored: bool) -> np.ndarray:
        """The network's outputs for a split's chips, or for their mirror images."""
        chips = sets[name].chips
        outputs = []
        for start in range(0, len(chips), 64):
            x = normalise(torch.from_numpy(chips[start : start + 64]))
            x = x.flip(3) if mirrored else x
            outputs.append(session.run(None, {"images": x.contiguous().numpy()})[0])
        return np.concatenate(outputs) if outputs else np.zeros((0, len(ages)), np.float32)

    def with_flip(name: str, plain: np.ndarray) -> np.ndarray:
        return (plain + probabilities(name, mirrored=True)) / 2

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

    val_plain = probabilities("val", mirrored=False)
    val_flip = with_flip("val", val_plain)
    plain, flipped = score(val_plain, sets["val"]), score(val_flip, sets["val"])
    key = "mae" if "mae" in plain else "accuracy"
    flip = flipped[key] < plain[key] if key == "mae" else flipped[key] > plain[key]
    val_p = val_flip if flip else val_plain
    test_p = probabilities("test", mirrored=False) if len(sets["test"].chips) else val_p[:0]
    if flip and len(test_p):
        test_p = with_flip("test", test_p)
    extra: dict[str, Any] = {"inference": {"flip_tta": bool(flip)}}
    metrics: dict[str, Any] = {
        "val": score(val_p, sets["val"]),
        "test": score(test_p, sets["test"]),
    }
    if specs is not None and len(specs) > 1:
        metrics["by_collection"] = {
            spec: {
                name: score(p[chosen], sets[name].rows(chosen))
                for name, p in (("val", val_p), ("test", test_p))
                if (chosen := sets[name].sources == number).any()  # type: ignore[union-attr]
            }
            for number, spec in enumerate(specs)
        }
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
        policy = fit_policy(val_p[known], ages, record, sets["val"].ages[known])
        # Too few minors: no policy, so the bundle falls back to Challenge 25's rule.
        if (reason := too_few_minors(policy)) is None:
            extra["gate"] = policy
        else:
            extra["gate_not_fitted"] = f"{reason}; Challenge 25's rule applies"
    elif not known.any():
        extra["gate_not_fitted"] = (
            "the data gives groups, not ages: intervals are not calibrated and no gate "
            "policy is fitted (`agelens calibrate` on faces with ages does both); "
            "Challenge 25's rule applies"
        )
    else:
        extra["gate_not_fitted"] = (
            f"only {int(known.sum())} faces with ages in val, fewer than "
            f"{calibration.MIN_FACES}: no calibration or gate policy; Challenge 25's rule applies"
        )
    extra["metrics"] = metrics
    return extra


def _manifest(
    options: JobOptions,
    datasets: list[Dataset],
    base: dict[str, Any],
    result: TrainResult,
    counts: dict[str, int],
    unreadable: int,
    teacher: dict[str, Any] | None = None,
) -> dict[str, Any]:
    base_licence = base["license"]
    dataset, kinds = datasets[0], [d.kind for d in datasets]
    research_data = [kind for kind in kinds if kind in RESEARCH_DATASETS]
    # A student distilled from a research-only teacher learnt from that teacher's data.
    research_parents = [
        f"the {role} {parent['name']}"
        for role, parent in (("base bundle", base), ("teacher", teacher))
        if parent is not None and parent["license"].get("research_only")
    ]
    research = bool(research_data or research_parents)
    sources = (research_data or [dataset.kind]) + research_parents
    name = options.name or options.out.name
    return {
        "schema": 1,
        "name": name,
        "description": (
            f"{base['name']} fine-tuned by AgeLens ({options.config.mode}, task "
            f"{options.config.task}) on {' and '.join(kinds)}, {options.size}x{options.size} chips"
            + (f", distilled from {teacher['name']}." if teacher is not None else ".")
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
            "data": data_record(options.data, datasets[0]),
            "more_data": [
                data_record(spec, found)
                for spec, found in zip(options.more_data, datasets[1:], strict=True)
            ],
            "dataset": dataset.kind,
            "split": {"file": "split.json", "counts": counts, "rule": "sha1 60/20/20"},
            "duplicates_dropped": sum(d.duplicates for d in datasets),
            "malformed": sum(len(d.malformed) for d in datasets),
            "unreadable": unreadable,
            "base": base["name"],
            # By its weights' hash too: a bundle of the same name may be retrained later.
            "teacher": None
            if teacher is None
            else {"name": teacher["name"], "sha256": teacher.get("artifact", {}).get("sha256")},
            "config": result.config,
            "epochs_run": len(result.history),
            "best_epoch": result.best_epoch,
            "seconds": round(result.seconds, 1),
            "device": result.device,
        },
        "source": f"AgeLens {options.config.mode} of {base['name']}",
    }
