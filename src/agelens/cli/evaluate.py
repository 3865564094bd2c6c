"""``agelens evaluate``: score models on a labelled dataset, optionally with an HTML report."""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agelens import strict_json
from agelens.cli.common import (
    AlignedOption,
    DataOption,
    GenderModelOption,
    GroupsOption,
    JsonOption,
    PrecisionOption,
    TtaOption,
    err,
    fail,
    make_estimator,
    out,
    predict_with_progress,
)
from agelens.data.datasets import is_crops, read_dataset, select_split
from agelens.errors import AgeLensError
from agelens.evaluation.metrics import metrics, share_text
from agelens.models.bundles import DEFAULT_BUNDLE, DEFAULT_GENDER_BUNDLE


def evaluate(
    data: DataOption,
    split: Annotated[
        str | None,
        typer.Option(
            help="train, val, test or all (default: test; csv: all). Content-hash 60/20/20."
        ),
    ] = None,
    groups: GroupsOption = "imfdb",
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            help="Bundle name or folder; repeat to compare models (default: cydral-v1).",
        ),
    ] = None,
    aligned: AlignedOption = False,
    tta: TtaOption = None,
    precision: PrecisionOption = None,
    over: Annotated[float, typer.Option(help="Threshold of the age-gate figures.")] = 18,
    limit: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Score a random sample of N (seeded by --seed, so runs agree), "
            "not the first N by name.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the --limit sample.")] = 0,
    report: Annotated[
        Path | None,
        typer.Option(help="Write metrics.json, figures and an HTML report to this folder."),
    ] = None,
    as_json: JsonOption = False,
    gender: Annotated[
        bool,
        typer.Option(
            "--gender",
            help="Also score the apparent gender against the data's gender labels.",
        ),
    ] = False,
    gender_model: GenderModelOption = DEFAULT_GENDER_BUNDLE,
) -> None:
    """Score models on a labelled dataset: MAE, CS@5, coverage, groups, bands, fairness, gate
    (and, with --gender, apparent gender by age band and race)."""
    try:
        dataset = read_dataset(data)
        chosen = split or ("all" if dataset.kind in ("csv", "folder") else "test")
        samples = select_split(dataset, chosen)  # type: ignore[arg-type]
        if limit is not None and limit < len(samples):
            samples = sorted(random.Random(seed).sample(samples, limit), key=lambda s: s.path)
    except AgeLensError as error:
        raise fail(str(error), 2) from error
    if not samples:
        raise fail(f"no samples in split {chosen!r} of {data}", 2)
    runs = []
    for name in model or [DEFAULT_BUNDLE]:
        estimator = make_estimator(
            name, groups, tta, precision, gender_model=gender_model if gender else None
        )
        predictions = predict_with_progress(
            estimator,
            samples,
            f"Evaluating {estimator.bundle.name}",
            aligned=is_crops(data, aligned),
            gender=gender,
        )
        policy = estimator.bundle.gate_policy(over)
        result = {
            "data": data,
            "split": chosen,
            "sample": None if limit is None else {"limit": limit, "seed": seed},
            "model": estimator.bundle.name,
            "tta": estimator.tta,
            "precision": estimator.bundle.precision,
            "unreadable": len(samples) - len(predictions),
            **({"gender_model": estimator.gender.bundle.name} if gender else {}),
            **metrics(predictions, scheme=estimator.groups, policy=policy),
        }
        runs.append((result, predictions, estimator.bundle.folder))
        if as_json:
            sys.stdout.write(strict_json.dumps(result) + "\n")
        else:
            _print_metrics(result)
    if report is not None:
        try:
            from agelens.evaluation.report import write_report
        except ImportError as error:
            raise fail("reports need the train extras: pip install 'agelens[train]'", 2) from error
        page = write_report(report, f"Evaluation on {data} ({chosen})", runs, estimator.groups)
        err.print(f"report: {page}")


def _print_metrics(result: dict[str, Any]) -> None:
    table = Table(title=f"{result['model']} on {result['data']} ({result['split']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        if value is not None and not isinstance(value, dict):
            table.add_row(key, str(value))
    for band, numbers in result.get("per_band", {}).items():
        table.add_row(f"MAE {band}", f"{numbers['mae']:.2f} (n={numbers['n']})")
    for attribute in ("gender", "race"):
        if by := result.get(f"by_{attribute}"):
            for value, numbers in by["groups"].items():
                table.add_row(f"MAE {value}", f"{numbers['mae']:.2f} (n={numbers['n']})")
            table.add_row(f"{attribute} gap", f"{by['gap']:.2f}")
    if answers := result.get("apparent_gender"):
        for name, numbers in [
            ("all", answers),
            *(("20+", answers[k]) for k in ["aged_20_plus"] if k in answers),
            *answers.get("per_band", {}).items(),
            *answers.get("by_race", {}).items(),
        ]:
            table.add_row(
                f"gender right, {name}",
                f"{numbers['accuracy']:.1%} (n={numbers['n']}, "
                f"{numbers['answered']:.0%} not uncertain)",
            )
    if gate := result.get("gate"):
        table.add_row(
            f"gate over {gate['over']:g} (+{gate['buffer']:g})",
            f"13-17 pass {share_text(gate['pass_13_17'])}, "
            f"25+ pass {share_text(gate['pass_25_plus'])}",
        )
    out.print(table)
