"""``agelens predict``: every face's age in photos, folders, standard input or URLs."""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, TextIO

import typer
from rich.table import Table

from agelens import strict_json
from agelens.batch import EstimatorPool, ImageResult, Source, estimate_in_order
from agelens.cli.common import (
    AlignedOption,
    GenderModelOption,
    GenderOption,
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
    require_bundle,
    shown,
)
from agelens.cli.engine import predict_on_ray
from agelens.cli.files.copies import CROP_SIZE, check_output_folder, write_copies
from agelens.cli.files.sources import SourceError, resolve_sources
from agelens.estimator import AgeEstimator
from agelens.models.bundles import DEFAULT_BUNDLE, DEFAULT_GENDER_BUNDLE, GENDER
from agelens.records import flat_columns, flat_rows, image_record


class Engine(StrEnum):
    """Where ``predict`` runs."""

    LOCAL = "local"
    RAY = "ray"


ImagesArgument = Annotated[
    list[str],
    typer.Argument(
        help="Image files, folders (walked), - for standard input, or http(s) URLs.",
    ),
]


def run_pool(
    estimator: AgeEstimator,
    sources: list[Source],
    aligned: bool,
    distribution: bool = False,
    keep_images: bool = False,
    gender: bool = False,
) -> Iterator[ImageResult]:
    """Results in order, from workers on every core, with a progress bar on a terminal."""
    with EstimatorPool(estimator) as pool, progress_bar(len(sources)) as progress:
        task = progress.add_task("Estimating", total=len(sources))
        results = pool.estimate_files(
            sources,
            aligned=aligned,
            distribution=distribution,
            keep_images=keep_images,
            gender=gender,
        )
        for result in results:
            progress.advance(task)
            yield result


def image_sources(arguments: list[str]) -> list[Source | ImageResult]:
    """The inputs in order: a source to estimate, or the failed result of a URL that could
    not be fetched."""
    try:
        resolved = resolve_sources(arguments)
    except SourceError as error:
        raise fail(str(error), 2) from error
    if not resolved:
        raise fail("no image files found in " + ", ".join(arguments), 2)
    return resolved


def results_in_order(
    estimator: AgeEstimator,
    inputs: list[Source | ImageResult],
    aligned: bool,
    distribution: bool = False,
    keep_images: bool = False,
    gender: bool = False,
) -> Iterator[ImageResult]:
    """Every input's result in the order given, the sources estimated by :func:`run_pool`."""
    return estimate_in_order(
        inputs,
        lambda sources: run_pool(estimator, sources, aligned, distribution, keep_images, gender),
    )


def predict(
    images: ImagesArgument,
    as_json: JsonOption = False,
    csv_path: Annotated[
        Path | None,
        typer.Option("--csv", help="Also write one row per face (and per faceless file) here."),
    ] = None,
    annotate: Annotated[
        Path | None, typer.Option(help="Write a copy of each image with boxes and ages here.")
    ] = None,
    save_crops: Annotated[
        Path | None,
        typer.Option(help=f"Write each face, aligned and {CROP_SIZE} px square, here as PNG."),
    ] = None,
    groups: GroupsOption = "imfdb",
    model: ModelOption = DEFAULT_BUNDLE,
    aligned: AlignedOption = False,
    tta: TtaOption = None,
    precision: PrecisionOption = None,
    distribution: Annotated[
        bool,
        typer.Option(
            "--distribution",
            help="Every group's probability (a table column), and with --json the full "
            "age distribution.",
        ),
    ] = False,
    gender: GenderOption = False,
    gender_model: GenderModelOption = DEFAULT_GENDER_BUNDLE,
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
    engine: Annotated[
        Engine,
        typer.Option(help="local: every core of this machine; ray: a Ray cluster (needs --out)."),
    ] = Engine.LOCAL,
    out_path: Annotated[
        Path | None,
        typer.Option("--out", help="ray: the rows, as Parquet (a folder) or .jsonl."),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(help="ray: the cluster (auto: the running one; default: a new local one)."),
    ] = None,
    actors: Annotated[
        int | None, typer.Option(min=1, help="ray: estimator actors (default: one per CPU).")
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="ray: skip the images already in --out.")
    ] = False,
) -> None:
    """Find every face and estimate its age, interval and group.

    Exit code 1 when any input could not be read (the others are still processed).
    """
    detection = {"min_score": min_score, "min_face": min_face, "detect_max_side": detect_size}
    if gender:
        require_bundle(gender_model, GENDER)
    if engine is Engine.RAY:
        chosen = {
            "--json": as_json,
            "--csv": csv_path,
            "--annotate": annotate,
            "--save-crops": save_crops,
            "--distribution": distribution,
        }
        predict_on_ray(
            images,
            out_path,
            address=address,
            actors=actors,
            resume=resume,
            refused=[name for name, value in chosen.items() if value],
            model=model,
            aligned=aligned,
            groups=groups,
            tta=tta,
            precision=precision,
            gender=gender,
            gender_model=gender_model,
            **detection,
        )
        return
    local_only = {"--out": out_path, "--address": address, "--actors": actors, "--resume": resume}
    if given := [name for name, value in local_only.items() if value]:
        raise fail(f"{', '.join(given)}: only with --engine ray", 2)
    estimator = make_estimator(
        model, groups, tta, precision, gender_model=gender_model if gender else None, **detection
    )
    inputs = image_sources(images)
    files = [item for item in inputs if isinstance(item, Path)]
    for folder, option in ((annotate, "--annotate"), (save_crops, "--save-crops")):
        if folder is not None:
            check_output_folder(folder, option, files)
    group_names = list(estimator.groups.labels)
    written: set[Path] = set()
    failed = 0
    with ExitStack() as stack:
        table = _csv_writer(stack, csv_path, group_names, gender) if csv_path else None
        keep = annotate is not None or save_crops is not None
        for result in results_in_order(estimator, inputs, aligned, distribution, keep, gender):
            failed += result.error is not None
            if result.image is not None:
                write_copies(result, annotate, save_crops, estimator.aligner.padding, written)
            name = str(result.path)
            if table is not None:
                table.writerows(
                    flat_rows(name, result.faces, result.error, group_names, gender=gender)
                )
            if as_json:
                record = image_record(name, result.faces, result.error, distribution=distribution)
                sys.stdout.write(strict_json.dumps(record) + "\n")
            else:
                print_faces(result, distribution, gender)
    if failed:
        raise fail(f"{failed} input(s) could not be read")


def _csv_writer(
    stack: ExitStack, path: Path, group_names: list[str], gender: bool
) -> csv.DictWriter:
    handle = stack.enter_context(_replaced_when_done(path))
    writer = csv.DictWriter(handle, flat_columns(group_names, gender=gender))
    writer.writeheader()
    return writer


@contextmanager
def _replaced_when_done(path: Path) -> Iterator[TextIO]:
    """A file written beside ``path`` and renamed onto it when the run ends.

    Two runs writing one ``--csv`` at once leave one run's whole file, never their rows
    interleaved. A run stopped by Ctrl-C leaves ``path`` as it was and its rows so far in
    ``NAME.partial.csv``, and says so.
    """
    if path.is_dir():
        raise fail(f"--csv {path}: is a folder; give a file name", 2)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # A name that is not UTF-8 (its bytes kept as surrogates) is written escaped.
        handle = temporary.open("w", newline="", encoding="utf-8", errors="backslashreplace")
    except OSError as error:
        raise fail(f"--csv {path}: cannot write ({error.strerror})", 2) from error
    try:
        with handle:
            yield handle
    except KeyboardInterrupt:
        partial = path.with_name(f"{path.stem}.partial{path.suffix}")
        os.replace(temporary, partial)
        err.print(f"stopped: the rows so far are in {partial}; {path} is as it was")
        raise
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    try:
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise fail(f"--csv {path}: cannot write ({error.strerror})", 2) from error


def print_faces(result: ImageResult, every_group: bool = False, gender: bool = False) -> None:
    """A table per photo; ``every_group`` (``--distribution``) adds each group's probability,
    ``gender`` (``--gender``) the apparent gender."""
    if result.error is not None:
        err.print(f"[red]{shown(str(result.path))}[/]: {shown(result.error)}", highlight=False)
        return
    if not result.faces:
        out.print(
            f"[bold]{shown(str(result.path))}[/]: no face found (smaller faces than about "
            "24 px, or turned away: try --detect-size 2400 or --min-score 0.4)",
            highlight=False,
        )
        return
    table = Table(title=shown(str(result.path)), title_justify="left")
    columns = ["face", "age (90% interval)", "group", *(["gender"] if gender else []), "box"]
    for column in [*columns, "score"] + (["every group"] if every_group else []):
        table.add_column(column)
    for index, face in enumerate(result.faces, 1):
        score = "-" if face.score is None else f"{face.score:.2f}"
        groups = ", ".join(f"{k} {v:.0%}" for k, v in face.group_probabilities.items())
        table.add_row(
            str(index),
            face.label,
            face.group_text,
            *([face.gender_text] if gender else []),
            ", ".join(f"{v:.0f}" for v in face.box),
            score,
            *([groups] if every_group else []),
        )
    out.print(table)
