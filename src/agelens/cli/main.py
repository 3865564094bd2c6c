"""The ``agelens`` command: predict, gate, models, evaluate, serve (and eda, train, calibrate)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from agelens.annotate import label_of, save_annotated
from agelens.batch import EstimatorPool, ImageResult, collect_images
from agelens.cli import train as cli_train
from agelens.cli.common import (
    AlignedOption,
    DataOption,
    GroupsOption,
    JsonOption,
    ModelOption,
    PrecisionOption,
    TtaOption,
    err,
    fail,
    out,
    predict_with_progress,
    progress_bar,
)
from agelens.data.datasets import read_dataset, select_split
from agelens.decisions.gate import Decision
from agelens.errors import AgeLensError
from agelens.estimator import AgeEstimator
from agelens.evaluation.metrics import metrics
from agelens.models.bundles import DEFAULT_BUNDLE, describe_builtin_bundles
from agelens.pipeline.faces import DEFAULT_MAX_SIDE

app = typer.Typer(
    help="AgeLens: estimate people's ages from photos of their faces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
#: Exit codes of ``agelens gate``, so scripts can branch without parsing output.
GATE_EXIT = {Decision.PASS: 0, Decision.REFER: 3, Decision.NO_FACE: 4}


def _estimator(
    model: str, groups: str, tta: bool | None, precision: str | None, **options: float
) -> AgeEstimator:
    try:
        return AgeEstimator(
            model,
            groups=groups,
            tta=tta,
            precision=precision,
            **options,  # type: ignore[arg-type]
        )
    except (AgeLensError, ValueError) as error:
        raise fail(str(error), 2) from error


def _run(
    estimator: AgeEstimator,
    paths: list[Path],
    aligned: bool,
    distribution: bool = False,
    keep_images: bool = False,
):
    with EstimatorPool(estimator) as pool, progress_bar(len(paths)) as progress:
        task = progress.add_task("Estimating", total=len(paths))
        results = pool.estimate_files(
            paths, aligned=aligned, distribution=distribution, keep_images=keep_images
        )
        for result in results:
            progress.advance(task)
            yield result


def _files(paths: list[Path]) -> list[Path]:
    files = collect_images(paths)
    if not files:
        raise fail("no image files found in " + ", ".join(map(str, paths)), 2)
    return files


@app.command()
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders (walked).")],
    as_json: JsonOption = False,
    annotate: Annotated[
        Path | None, typer.Option(help="Write a copy of each image with boxes and ages here.")
    ] = None,
    groups: GroupsOption = "imfdb",
    model: ModelOption = DEFAULT_BUNDLE,
    aligned: AlignedOption = False,
    tta: TtaOption = None,
    precision: PrecisionOption = None,
    distribution: Annotated[
        bool, typer.Option(help="Add the full age distribution and all group probabilities.")
    ] = False,
    min_score: Annotated[float, typer.Option(help="Detector score threshold (0-1).")] = 0.6,
    min_face: Annotated[int, typer.Option(help="Smallest face side in pixels.")] = 20,
    detect_size: Annotated[
        int,
        typer.Option(help="Longer side the detector sees; raise it for small faces in big photos."),
    ] = DEFAULT_MAX_SIDE,
) -> None:
    """Find every face and estimate its age, interval and group.

    Exit code 1 when any file could not be read (the others are still processed).
    """
    estimator = _estimator(
        model,
        groups,
        tta,
        precision,
        min_score=min_score,
        min_face=min_face,
        detect_max_side=detect_size,
    )
    failed = 0
    for result in _run(estimator, _files(paths), aligned, distribution, annotate is not None):
        failed += result.error is not None
        if annotate is not None and result.image is not None:
            save_annotated(result.image, result.faces, annotate / result.path.name)
        if as_json:
            _print_json(result, distribution)
        else:
            _print_faces(result)
    if failed:
        raise fail(f"{failed} file(s) could not be read")


def _print_json(result: ImageResult, distribution: bool) -> None:
    record = {
        "image": str(result.path),
        "faces": [face.to_dict(distribution=distribution) for face in result.faces],
        "error": result.error,
    }
    sys.stdout.write(json.dumps(record) + "\n")


def _print_faces(result: ImageResult) -> None:
    if result.error is not None:
        err.print(f"[red]{result.path}[/]: {result.error}", highlight=False)
        return
    if not result.faces:
        out.print(f"[bold]{result.path}[/]: no face found", highlight=False)
        return
    table = Table(title=str(result.path), title_justify="left")
    for column in ("face", "age (90% interval)", "group", "box", "score"):
        table.add_column(column)
    for index, face in enumerate(result.faces, 1):
        score = "-" if face.score is None else f"{face.score:.2f}"
        table.add_row(
            str(index),
            label_of(face),
            f"{face.group} ({face.group_probability:.0%})",
            ", ".join(f"{v:.0f}" for v in face.box),
            score,
        )
    out.print(table)


@app.command()
def gate(
    path: Annotated[Path, typer.Argument(help="One photo.")],
    over: Annotated[float, typer.Option(help="The legal age to check.")] = 18,
    buffer: Annotated[
        float | None,
        typer.Option(
            help="Years above --over a face must look to pass (default: the model's fitted "
            "buffer, else Challenge 25's 7)."
        ),
    ] = None,
    as_json: JsonOption = False,
    model: ModelOption = DEFAULT_BUNDLE,
    tta: TtaOption = None,
    precision: PrecisionOption = None,
) -> None:
    """Age gate: pass when every face looks at least OVER + BUFFER, else refer to an ID check.

    Without --buffer, the model's fitted policy (which may require the lower end of the
    face's 90% interval, not its estimate, to reach OVER + BUFFER).

    Exit code 0 pass, 3 refer, 4 no face found, 1 unreadable image.
    """
    estimator = _estimator(model, "imfdb", tta, precision)
    try:
        result = estimator.gate(path, over, buffer)
    except (AgeLensError, OSError) as error:
        raise fail(str(error)) from error
    buffer = result.pass_age - over
    if as_json:
        record = {
            "image": str(path),
            "decision": str(result.decision),
            "over": over,
            "buffer": buffer,
            "rule": result.rule,
            "faces": [
                {**face.to_dict(), "decision": str(decision)}
                for face, decision in zip(result.faces, result.decisions, strict=True)
            ],
        }
        sys.stdout.write(json.dumps(record) + "\n")
    else:
        colour = {"pass": "green", "refer": "yellow", "no_face": "red"}[result.decision]
        what = "an estimated age" if result.rule == "estimate" else "a 90% interval from"
        out.print(
            f"[bold {colour}]{result.decision.upper()}[/] - passes at {what} "
            f"{result.pass_age:g}+ (over {over:g} with a {buffer:g}-year buffer)",
            highlight=False,
        )
        for face, decision in zip(result.faces, result.decisions, strict=True):
            out.print(f"  face at {[round(v) for v in face.box]}: {label_of(face)} -> {decision}")
    raise typer.Exit(GATE_EXIT[result.decision])


@app.command()
def models(as_json: JsonOption = False) -> None:
    """List the models that come with AgeLens (age networks, face detector), with licences."""
    rows = describe_builtin_bundles()
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table(title="AgeLens model bundles")
    for column in ("name", "task", "precision", "licence", "use", "by", "source", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        name = row["name"] + (" (default)" if row["default"] else "")
        use = "research only" if row["research_only"] else "any"
        table.add_row(
            name,
            row["task"],
            "/".join(row["precisions"]) if row["task"] == "age" else "",
            row["licence"],
            use,
            row["attribution"],
            row["source"],
            row["description"],
        )
    out.print(table)


@app.command()
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
    limit: Annotated[int | None, typer.Option(help="Score only the first N samples.")] = None,
    report: Annotated[
        Path | None,
        typer.Option(help="Write metrics.json, figures and an HTML report to this folder."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Score models on a labelled dataset: MAE, CS@5, coverage, groups, bands, fairness, gate."""
    try:
        dataset = read_dataset(data)
        chosen = split or ("all" if dataset.kind in ("csv", "folder") else "test")
        samples = select_split(dataset, chosen)[:limit]  # type: ignore[arg-type]
    except AgeLensError as error:
        raise fail(str(error), 2) from error
    if not samples:
        raise fail(f"no samples in split {chosen!r} of {data}", 2)
    runs = []
    for name in model or [DEFAULT_BUNDLE]:
        estimator = _estimator(name, groups, tta, precision)
        predictions = predict_with_progress(
            estimator, samples, f"Evaluating {estimator.bundle.name}", aligned=aligned
        )
        policy = estimator.bundle.gate_policy(over)
        result = {
            "data": data,
            "split": chosen,
            "model": estimator.bundle.name,
            "tta": estimator.tta,
            "precision": estimator.bundle.precision,
            "unreadable": len(samples) - len(predictions),
            **metrics(predictions, scheme=estimator.groups, policy=policy),
        }
        runs.append((result, predictions, estimator.bundle.folder))
        if as_json:
            sys.stdout.write(json.dumps(result) + "\n")
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
        if not isinstance(value, dict):
            table.add_row(key, str(value))
    for band, numbers in result.get("per_band", {}).items():
        table.add_row(f"MAE {band}", f"{numbers['mae']:.2f} (n={numbers['n']})")
    for attribute in ("gender", "race"):
        if by := result.get(f"by_{attribute}"):
            for value, numbers in by["groups"].items():
                table.add_row(f"MAE {value}", f"{numbers['mae']:.2f} (n={numbers['n']})")
            table.add_row(f"{attribute} gap", f"{by['gap']:.2f}")
    if gate := result.get("gate"):
        table.add_row(
            f"gate over {gate['over']:g} (+{gate['buffer']:g})",
            f"13-17 pass {gate['pass_13_17']:.1%}, 25+ pass {gate['pass_25_plus']:.1%}",
        )
    out.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Server processes, each with its model.")] = 1,
    model: ModelOption = DEFAULT_BUNDLE,
    precision: PrecisionOption = None,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload accepted, in MB.")] = 10,
) -> None:
    """Serve the REST API (/v1, docs at /docs) and the upload page (/) with uvicorn.

    Set AGELENS_API_KEY to require that key (X-API-Key header) on /v1/*, and
    AGELENS_CORS_ORIGINS (comma-separated) to allow browsers on other origins.
    """
    try:
        import uvicorn
    except ImportError as error:
        raise fail("the server needs its extras: pip install 'agelens[server]'", 2) from error
    # Workers are separate processes: they read their settings from the environment.
    os.environ["AGELENS_MODEL"] = model
    if precision:
        os.environ["AGELENS_PRECISION"] = precision
    os.environ["AGELENS_MAX_UPLOAD_MB"] = str(max_upload_mb)
    err.print(f"AgeLens on http://{host}:{port}/ (API docs at /docs); photos are never stored.")
    uvicorn.run(
        "agelens.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )


app.command()(cli_train.eda)
app.command()(cli_train.train)
app.command()(cli_train.calibrate)
