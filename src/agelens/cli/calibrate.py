"""``agelens calibrate``: fit a bundle's intervals and gate on labelled ages, domain by domain."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape

from agelens import strict_json
from agelens.cli.common import (
    AlignedOption,
    ModelOption,
    PrecisionOption,
    err,
    fail,
    out,
    predict_with_progress,
)
from agelens.data.datasets import data_record, is_crops, read_dataset, select_split, source_name
from agelens.decisions import calibration
from agelens.decisions.gate_fit import fit_policy_domains, too_few_minors
from agelens.decisions.quality import QualityLimits
from agelens.errors import AgeLensError
from agelens.estimator import AgeEstimator
from agelens.evaluation.domains import CLEAN, DOMAINS
from agelens.evaluation.metrics import with_faces
from agelens.models.bundles import DEFAULT_BUNDLE

DomainsOption = Annotated[
    str,
    typer.Option(
        help="Domains of the suite to fit on, comma-separated from "
        f"{', '.join(DOMAINS)}, or all (they need --aligned face crops).",
    ),
]


CollectionsOption = Annotated[
    list[str],
    typer.Option(
        "--data",
        help="A labelled dataset: utkface:DIR, imfdb:DIR, csv:FILE or folder:DIR. Give it "
        "again for each real collection: each is then a domain of its own, and the fit "
        "holds on the worst. utkface: and imfdb: are aligned crops, the others as "
        "--aligned says; a spec ending in #crops or #photos says so itself.",
    ),
]


def calibrate(
    data: CollectionsOption,
    model: ModelOption = DEFAULT_BUNDLE,
    split: Annotated[str, typer.Option(help="Split to calibrate on (content-hash).")] = "val",
    aligned: AlignedOption = False,
    domains: DomainsOption = "all",
    draws_wanted: Annotated[
        int,
        typer.Option(
            "--draws",
            min=1,
            max=10,
            help="Times each domain is drawn (seeds 0, 1, ...): the intervals pool the "
            "draws, and the gate must hold in every one, not in one lucky draw.",
        ),
    ] = 1,
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Write the calibrated manifest here (default: the bundle's folder)."
        ),
    ] = None,
    precision: PrecisionOption = None,
) -> None:
    """Fit conformal 90% intervals and the gate buffer of a bundle on labelled ages.

    Both are fitted on the worst of the domains: each real collection given with
    --data, or, for one set of crops, the suite's made-up prints, webcams, CCTV and
    phones. Fit on collections the model never trained on, so that the figures hold
    off its training data. One calibration serves every precision of a bundle;
    `--precision` picks the weights it is fitted with, and the manifest records which.
    """
    chosen = (
        list(DOMAINS) if domains == "all" else [n.strip() for n in domains.split(",") if n.strip()]
    )
    if unknown := [name for name in chosen if name not in DOMAINS]:
        raise fail(f"unknown domain {unknown[0]!r}: choose from {', '.join(DOMAINS)}", 2)
    if not chosen:
        raise fail(f"--domains needs at least one of {', '.join(DOMAINS)}", 2)
    if len(data) > 1:
        if domains == "all":
            chosen = [CLEAN]
        elif chosen != [CLEAN]:
            raise fail("with several --data, each is a domain: use --domains clean", 2)
    if chosen != [CLEAN] and not aligned:
        raise fail("the domain suite is made from face crops: add --aligned or --domains clean", 2)
    try:
        estimator = AgeEstimator(model, interval_level=0.9, precision=precision)
        sets = {spec: read_dataset(spec) for spec in data}
        chosen_samples = {
            spec: [s for s in select_split(dataset, split) if s.age is not None]  # type: ignore[arg-type]
            for spec, dataset in sets.items()
        }
    except (AgeLensError, ValueError) as error:
        raise fail(str(error), 2) from error
    if out_dir is None and "package" in estimator.bundle.manifest["artifact"]:
        raise fail("this bundle's weights live in another package: give --out DIR", 2)
    for spec, samples in chosen_samples.items():
        if len(samples) < calibration.MIN_FACES:
            raise fail(
                f"calibration needs at least {calibration.MIN_FACES} faces with ages, "
                f"{spec} has {len(samples)} in its {split} split",
                2,
            )
    limits = QualityLimits()
    # Every draw of a domain: pooled for the intervals, each on its own for the gate.
    draws: dict[str, list[calibration.DomainFaces]] = {}
    for spec, samples in chosen_samples.items():
        for name in chosen:
            domain_name = name if len(data) == 1 else source_name(spec)
            for seed in range(1 if name == CLEAN else draws_wanted):  # clean is one picture
                predictions = with_faces(
                    predict_with_progress(
                        estimator,
                        samples,
                        f"Calibrating ({domain_name}"
                        f"{f', draw {seed + 1}' if draws_wanted > 1 else ''})",
                        aligned=is_crops(spec, aligned),
                        distribution=True,
                        domain=None if chosen == [CLEAN] else name,
                        seed=seed,
                    )
                )
                draws.setdefault(domain_name, []).append(
                    (
                        np.stack([p.face.distribution for p in predictions]),
                        np.array([p.sample.age for p in predictions], dtype=np.float64),
                        np.array([limits.quality_class(p.face.quality) for p in predictions]),
                    )
                )
    faces = {name: _pooled(found) for name, found in draws.items()}
    each_draw = {
        name if seed == 0 else f"{name}#{seed}": found
        for name, every in draws.items()
        for seed, found in enumerate(every)
    }
    manifest = dict(estimator.bundle.manifest)
    manifest["quality"] = limits.to_dict()
    try:
        record = calibration.fit_domains(faces, estimator.bundle.ages, split=split)
    except ValueError as error:
        raise fail(str(error), 2) from error
    manifest["calibration"] = {
        **record,
        "draws": draws_wanted,
        "data": data_record(data[0], sets[data[0]])
        if len(data) == 1
        else [data_record(spec, dataset) for spec, dataset in sets.items()],
        "precision": estimator.bundle.precision,
    }
    policy = {
        **fit_policy_domains(each_draw, estimator.bundle.ages, manifest["calibration"]),
        "chosen_on": split,
    }
    if (reason := too_few_minors(policy)) is None:
        manifest["gate"] = policy
    else:
        kept = (
            "the bundle's previous policy is kept"
            if "gate" in manifest
            else ("Challenge 25's rule applies")
        )
        err.print(f"[yellow]warning:[/] {escape(reason)}; {kept}", highlight=False)
    folder = out_dir or estimator.bundle.folder
    folder.mkdir(parents=True, exist_ok=True)
    source = estimator.bundle.folder
    if source.resolve() != folder.resolve():
        artifacts = [manifest["artifact"], *manifest.get("variants", {}).values()]
        for artifact in artifacts:
            if "package" not in artifact:
                shutil.copy2(source / artifact["path"], folder / artifact["path"])
    (folder / "manifest.json").write_text(strict_json.dumps(manifest, indent=2) + "\n")
    out.print_json(
        strict_json.dumps({"calibration": manifest["calibration"], "gate": manifest.get("gate")})
    )


def _pooled(found: list[calibration.DomainFaces]) -> calibration.DomainFaces:
    """One domain's draws as one set of faces."""
    distributions, ages, classes = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return distributions, ages, classes
