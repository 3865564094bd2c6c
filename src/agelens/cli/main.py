"""The ``agelens`` command: predict, gate, models, evaluate, serve (and eda, train, calibrate)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table

from agelens import __version__
from agelens.annotate import save_annotated
from agelens.batch import EstimatorPool, ImageResult, collect_images
from agelens.cli.common import (
    AlignedOption,
    GroupsOption,
    JsonOption,
    ModelOption,
    PrecisionOption,
    TtaOption,
    err,
    fail,
    make_estimator,
    out,
    progress_bar,
)
from agelens.cli.evaluate import evaluate
from agelens.cli.gate import gate
from agelens.cli.train import calibrate, eda, train
from agelens.estimator import AgeEstimator
from agelens.models.bundles import DEFAULT_BUNDLE, describe_builtin_bundles

#: The largest upload limit ``serve`` accepts: far above any photo.
MAX_UPLOAD_MB = 100.0

app = typer.Typer(
    help="AgeLens: estimate people's ages from photos of their faces.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Markdown: docstring paragraphs wrap to the terminal, `code` shows as code.
    rich_markup_mode="markdown",
)


def _show_version(asked: bool) -> None:
    if asked:
        out.print(f"agelens {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """AgeLens: estimate people's ages from photos of their faces."""


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
        bool,
        typer.Option(
            help="Every group's probability (a table column), and with --json the full "
            "age distribution."
        ),
    ] = False,
    min_score: Annotated[float, typer.Option(help="Detector score threshold (0-1).")] = 0.6,
    min_face: Annotated[int, typer.Option(help="Smallest face side in pixels.")] = 20,
    detect_size: Annotated[
        int | None,
        typer.Option(
            min=64,
            help="Longer side the detector sees (default: 480, more in large photos so "
            "that faces down to about 24 px are found).",
        ),
    ] = None,
) -> None:
    """Find every face and estimate its age, interval and group.

    Exit code 1 when any file could not be read (the others are still processed).
    """
    estimator = make_estimator(
        model,
        groups,
        tta,
        precision,
        min_score=min_score,
        min_face=min_face,
        detect_max_side=detect_size,
    )
    files = _files(paths)
    if annotate is not None:
        _check_annotate_folder(annotate, files)
    failed = 0
    for result in _run(estimator, files, aligned, distribution, annotate is not None):
        failed += result.error is not None
        if annotate is not None and result.image is not None:
            target = annotate / result.path.name
            try:
                save_annotated(result.image, result.faces, target)
            except OSError as error:
                raise fail(f"--annotate: cannot write {target} ({error.strerror})") from error
        if as_json:
            _print_json(result, distribution)
        else:
            _print_faces(result, distribution)
    if failed:
        raise fail(f"{failed} file(s) could not be read")


def _check_annotate_folder(folder: Path, files: list[Path]) -> None:
    """Refuse, before any work, a folder that cannot be written or that holds the inputs."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise fail(
            f"--annotate {folder}: cannot create the folder ({error.strerror})", 2
        ) from error
    if not os.access(folder, os.W_OK | os.X_OK):
        raise fail(f"--annotate {folder}: the folder is not writable", 2)
    target = folder.resolve()
    if any(path.resolve().parent == target for path in files):
        raise fail(
            f"--annotate {folder}: the photos are in this folder and would be overwritten; "
            "choose another folder",
            2,
        )


def _print_json(result: ImageResult, distribution: bool) -> None:
    record = {
        "image": str(result.path),
        "faces": [face.to_dict(distribution=distribution) for face in result.faces],
        "error": result.error,
    }
    sys.stdout.write(json.dumps(record) + "\n")


def _print_faces(result: ImageResult, every_group: bool = False) -> None:
    """A table per photo; ``every_group`` (``--distribution``) adds each group's probability."""
    if result.error is not None:
        err.print(f"[red]{escape(str(result.path))}[/]: {escape(result.error)}", highlight=False)
        return
    if not result.faces:
        out.print(
            f"[bold]{escape(str(result.path))}[/]: no face found (smaller faces than about "
            "24 px, or turned away: try --detect-size 2400 or --min-score 0.4)",
            highlight=False,
        )
        return
    table = Table(title=str(result.path), title_justify="left")
    columns = ["face", "age (90% interval)", "group", "box", "score"]
    for column in columns + (["every group"] if every_group else []):
        table.add_column(column)
    for index, face in enumerate(result.faces, 1):
        score = "-" if face.score is None else f"{face.score:.2f}"
        groups = ", ".join(f"{k} {v:.0%}" for k, v in face.group_probabilities.items())
        table.add_row(
            str(index),
            face.label,
            f"{face.group} ({face.group_probability:.0%})",
            ", ".join(f"{v:.0f}" for v in face.box),
            score,
            *([groups] if every_group else []),
        )
    out.print(table)


def models(as_json: JsonOption = False) -> None:
    """List the models that come with AgeLens (age networks, face detector), with licences."""
    rows = describe_builtin_bundles()
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    for row in rows:
        # One block per model: readable at 80 columns, where a wide table folds words.
        use = "research use only" if row["research_only"] else "any use"
        default = " (default)" if row["default"] else ""
        out.print(
            f"[bold]{row['name']}[/]{default} · {row['task']} · {row['licence']} · {use}",
            highlight=False,
        )
        lines = [row["description"], f"by {row['attribution']}; from {row['source']}"]
        if row["task"] == "age":
            lines.append("precisions: " + ", ".join(row["precisions"]))
        if row["provenance"]:
            lines.append(row["provenance"])
        figures = row["figures"]
        if figures:
            measured = "; ".join(f"{k} {v}" for k, v in figures.items() if k != "command")
            lines.append(f"measured: {measured} ({figures.get('command', '')})")
        for line in lines:
            out.print(Padding(escape(line), (0, 0, 0, 2)), highlight=False, soft_wrap=False)
        out.print()


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Server processes, each with its model.")
    ] = 1,
    model: ModelOption = DEFAULT_BUNDLE,
    precision: PrecisionOption = None,
    max_upload_mb: Annotated[
        float, typer.Option(help="Largest upload accepted, in MB (up to 100).")
    ] = 10,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Connections served at once; more get 503.")
    ] = 64,
) -> None:
    """Serve the REST API (/v1, docs at /docs) and the upload page (/) with uvicorn.

    Set AGELENS_API_KEY to require that key (X-API-Key header) on /v1/*, and
    AGELENS_CORS_ORIGINS (comma-separated) to allow browsers on other origins.
    """
    if not 0 < max_upload_mb <= MAX_UPLOAD_MB:  # NaN fails this too
        raise fail(f"--max-upload-mb must be over 0 and at most {MAX_UPLOAD_MB:g}", 2)
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
        # A cap on connections, and idle keep-alive connections closed after 5 s; bodies
        # that do not arrive in time are refused by the app itself (408).
        limit_concurrency=max_connections,
        timeout_keep_alive=5,
    )


for command in (predict, gate, models, evaluate, serve, eda, train, calibrate):
    app.command()(command)
