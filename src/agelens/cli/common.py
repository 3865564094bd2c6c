"""What every ``agelens`` command shares: consoles, options, errors and progress bars."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from agelens.batch import EstimatorPool
from agelens.data.datasets import Sample
from agelens.errors import AgeLensError
from agelens.estimator import AgeEstimator
from agelens.evaluation.domain_suite import predict_domain
from agelens.evaluation.metrics import Prediction, predict_samples
from agelens.models.bundles import DEFAULT_GENDER_BUNDLE, load_bundle
from agelens.progress import task_progress

out = Console(soft_wrap=True)
err = Console(stderr=True)

PROGRESS_FROM = 8

ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Bundle name (see `agelens models`) or folder.")
]
GroupsOption = Annotated[
    str,
    typer.Option(help="Group scheme: imfdb, decades, utk5, or lower edges such as 13,31,51."),
]
AlignedOption = Annotated[
    bool, typer.Option("--aligned", help="Inputs are aligned face crops: skip detection.")
]
TtaOption = Annotated[
    bool | None,
    typer.Option(
        "--tta/--no-tta",
        help="Horizontal-flip test-time augmentation (default: the bundle's).",
    ),
]
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        help="Weights: fp32, or int8 where the bundle ships a checked variant "
        "(default: the bundle's; agelens models lists them)."
    ),
]
GenderOption = Annotated[
    bool,
    typer.Option(
        "--gender",
        help="Also each face's apparent gender, as datasets label it (two labels, or "
        "uncertain). Never race.",
    ),
]
GenderModelOption = Annotated[
    str,
    typer.Option(help="Gender bundle for --gender (see `agelens models`) or folder."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
DataOption = Annotated[
    str,
    typer.Option(
        help="utkface:DIR, imfdb:DIR (with train.csv), csv:FILE, or folder:DIR (one per class)."
    ),
]


def shown(name: str) -> str:
    """A file name or URL as a terminal may show it: control characters (an escape
    sequence hidden in a name) and undecodable bytes written as escapes, and rich's
    markup escaped."""
    return escape(
        "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in name)
    )


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` as an error; raise the returned exit to stop with ``code``."""
    # Escaped: rich would read "agelens[server]" as markup and print "agelens".
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


class _Rate(ProgressColumn):
    """Items done and items a second, for work whose end is not known (a stream)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.completed:.0f} {self.unit}, {task.speed or 0:.1f} a second")


def progress_bar(total: int | None, unit: str | None = None) -> Progress:
    """A bar on the terminal's standard error, or plain lines where it is not a terminal;
    with ``unit``, counting items and their rate instead of a fraction of a known total."""
    counts = (
        (_Rate(unit), TimeElapsedColumn())
        if unit
        else (MofNCompleteColumn(), TimeRemainingColumn())
    )
    return task_progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        *counts,
        console=err,
        enabled=total is None or total >= PROGRESS_FROM,
    )


def predict_with_progress(
    estimator: AgeEstimator,
    samples: Sequence[Sample],
    label: str,
    *,
    aligned: bool,
    distribution: bool = False,
    domain: str | None = None,
    seed: int = 0,
    gender: bool = False,
) -> list[Prediction]:
    """:func:`predict_samples` over a dataset, with a progress bar on a terminal; with
    ``domain``, over the face crops as that domain of the suite shows them (draw ``seed``)."""
    with EstimatorPool(estimator) as pool, progress_bar(len(samples)) as progress:
        task = progress.add_task(label, total=len(samples))
        if domain is not None:
            return predict_domain(
                pool, samples, domain, seed=seed, on_progress=partial(progress.advance, task)
            )
        return list(
            predict_samples(
                pool,
                samples,
                aligned=aligned,
                distribution=distribution,
                on_progress=partial(progress.advance, task),
                gender=gender,
            )
        )


def require_bundle(name: str, task: str) -> None:
    """Stop with exit code 2, before any work, unless ``name`` is a bundle for ``task``."""
    try:
        load_bundle(name, task=task)
    except AgeLensError as error:
        raise fail(str(error), 2) from error


def make_estimator(
    model: str,
    groups: str,
    tta: bool | None,
    precision: str | None,
    *,
    gender_model: str | None = None,
    **options: float | None,
) -> AgeEstimator:
    """The estimator a command asked for; a bad model or option stops it with exit code 2.

    With ``gender_model`` the gender network is loaded now, so that a bundle that is not
    one stops the command before any work."""
    try:
        estimator = AgeEstimator(
            model,
            groups=groups,
            tta=tta,
            precision=precision,
            gender_model=gender_model or DEFAULT_GENDER_BUNDLE,
            **options,  # type: ignore[arg-type]
        )
        if gender_model is not None:
            estimator.gender  # noqa: B018 - loaded here to fail before any work
        return estimator
    except (AgeLensError, ValueError) as error:
        raise fail(str(error), 2) from error
