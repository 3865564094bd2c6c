"""The ``agelens`` commands for your own data: eda and train."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from agelens import strict_json
from agelens.cli.common import (
    DataOption,
    GroupsOption,
    JsonOption,
    err,
    fail,
    out,
    progress_bar,
)
from agelens.data.datasets import read_dataset, unique_samples
from agelens.decisions.groups import resolve_scheme
from agelens.errors import AgeLensError
from agelens.models.bundles import DEFAULT_BUNDLE, load_bundle
from agelens.pipeline.chips import BORDERS


def eda(
    data: DataOption,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the plots and index.html.")],
    as_json: JsonOption = False,
) -> None:
    """Look at a dataset before training: sizes, grey share, brightness, labels, duplicates."""
    try:
        from agelens.data.eda import run_eda
    except ImportError as error:
        raise fail("eda needs the train extras: pip install 'agelens[train]'", 2) from error

    try:
        dataset = read_dataset(data)
        unique = unique_samples(dataset)
    except AgeLensError as error:
        raise fail(str(error), 2) from error
    with progress_bar(len(unique)) as progress:
        task = progress.add_task("Reading images", total=len(unique))
        summary = run_eda(dataset, unique, out_dir, on_progress=partial(progress.advance, task))
    if as_json:
        out.print_json(strict_json.dumps(summary))
    else:
        out.print(
            f"{summary['images']} distinct images, {summary['duplicates']} duplicates, "
            f"{len(summary['malformed'])} malformed, {summary['grey_share']:.1%} grey; "
            f"classes {summary['classes']}"
        )
    err.print(f"report: {out_dir / 'index.html'}")


def train(
    data: Annotated[
        list[str],
        typer.Option(
            help="utkface:DIR, imfdb:DIR, csv:FILE or folder:DIR, with #photos or #crops "
            "at its end where --photos does not say what it holds; repeat it to train on "
            "several datasets at once (ages where one has them, else its groups)."
        ),
    ],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the trained bundle.")],
    task: Annotated[
        str, typer.Option(help="age (years, DLDL-v2 loss) or groups (cross-entropy on groups).")
    ] = "age",
    groups: GroupsOption = "imfdb",
    mode: Annotated[
        str,
        typer.Option(
            help="head (a new head on the base's frozen features: minutes on the 64-px "
            "default; on a 224-px base the first run computes the features of every "
            "chip and its mirror, about an hour on 2 cores for 30,000 faces, and caches "
            "them: another seed or recipe on the same data reads them back), finetune "
            "(every layer) or tail (the layers after --from, on activations cached once; "
            "imported networks)."
        ),
    ] = "finetune",
    start_from: Annotated[
        str, typer.Option("--from", help="tail mode: the graph node training starts after.")
    ] = "",
    distill: Annotated[
        float,
        typer.Option(
            min=0.0,
            metavar="W",
            help="tail mode: weight of distillation from the starting network.",
        ),
    ] = 0.0,
    l2sp: Annotated[
        float,
        typer.Option(
            min=0.0, metavar="W", help="tail mode: weight of an L2 pull to the starting weights."
        ),
    ] = 0.0,
    teacher: Annotated[
        str,
        typer.Option(
            metavar="BUNDLE",
            help="finetune mode: a stronger bundle whose age distributions on the training "
            "faces are learnt too (distillation into a fast student).",
        ),
    ] = "",
    teacher_weight: Annotated[
        float,
        typer.Option(min=0.0, metavar="W", help="Weight of the teacher's distributions."),
    ] = 1.0,
    epochs: Annotated[
        int, typer.Option(min=1, metavar="N", help="Most epochs; early stopping on val.")
    ] = 12,
    size: Annotated[
        int | None,
        typer.Option(
            min=32,
            metavar="PX",
            help="Chip size in pixels: the base's input size unless --mode finetune "
            "(every layer trained) is given another.",
        ),
    ] = None,
    learning_rate: Annotated[float, typer.Option(help="Head learning rate.")] = 1e-3,
    backbone_lr_ratio: Annotated[
        float, typer.Option(help="Backbone learning rate as a share of the head's.")
    ] = 0.3,
    class_weights: Annotated[
        bool, typer.Option("--class-weights", help="Weight groups by inverse frequency.")
    ] = False,
    no_augment: Annotated[
        bool,
        typer.Option(
            "--no-augment",
            help="Train without augmentation (by default: flip, shift, scale, low "
            "resolution, light, grey).",
        ),
    ] = False,
    low_resolution: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            metavar="SHARE",
            help="Share of augmented chips shown at a lower resolution, as small faces are.",
        ),
    ] = 0.3,
    patience: Annotated[int, typer.Option(help="Epochs without val gain before stopping.")] = 4,
    balance: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=1.0,
            metavar="B",
            help="Even out --data collections and age bands in each epoch: 0 keeps the "
            "data's mix, 1 draws every collection-and-band cell alike, 0.5 in proportion "
            "to the square root of its size.",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of initialisation order and augmentation.")] = 0,
    base: Annotated[
        str, typer.Option(help="Bundle to start from: a name or a trained bundle's folder.")
    ] = DEFAULT_BUNDLE,
    photos: Annotated[
        bool,
        typer.Option(
            "--photos",
            help="csv: and folder: images are photos: detect the largest face (utkface: "
            "and imfdb: are crops; a spec ending in #photos or #crops says so itself).",
        ),
    ] = False,
    border: Annotated[
        str,
        typer.Option(help="Chip pixels past the image's edge: edge (repeated) or zero (black)."),
    ] = "edge",
    cache: Annotated[Path | None, typer.Option(help="Chip cache folder.")] = None,
    device: Annotated[
        str,
        typer.Option(help="auto (a CUDA GPU when torch sees one, else the CPU), cpu or cuda[:N]."),
    ] = "auto",
) -> None:
    """Train an age model on your data, from the bundled network; writes a calibrated bundle."""
    try:
        from agelens.training.config import TrainConfig, pick_device
        from agelens.training.job import JobOptions, run
    except ImportError as error:
        raise fail("training needs its extras: pip install 'agelens[train]'", 2) from error
    if task not in ("age", "groups") or mode not in ("head", "finetune", "tail"):
        raise fail("--task is age or groups; --mode is head, finetune or tail", 2)
    if (mode == "tail") != bool(start_from):
        raise fail("--mode tail and --from NODE go together", 2)
    if border not in BORDERS:
        raise fail(f"--border is one of {', '.join(BORDERS)}", 2)
    try:
        base_size = load_bundle(base).input_size
    except AgeLensError as error:
        raise fail(str(error), 2) from error
    if size is not None and size != base_size and mode != "finetune":
        raise fail(
            f"--size {size} is not {base}'s input size, {base_size} px: in --mode {mode} its "
            "frozen layers would see chips of a size they never learnt; leave --size out, "
            "or train every layer with --mode finetune",
            2,
        )
    try:
        scheme = resolve_scheme(groups)
        pick_device(device)
        config = TrainConfig(
            task=task,  # type: ignore[arg-type]
            mode=mode,  # type: ignore[arg-type]
            epochs=epochs,
            learning_rate=learning_rate,
            backbone_lr_ratio=backbone_lr_ratio,
            class_weights=class_weights,
            augment=not no_augment,
            low_resolution=low_resolution,
            patience=patience,
            seed=seed,
            balance=balance,
            cut=start_from,
            distill=distill,
            l2sp=l2sp,
            teacher=teacher,
            teacher_weight=teacher_weight,
        )
    except ValueError as error:
        raise fail(str(error), 2) from error
    options = JobOptions(
        data[0],
        out_dir,
        config,
        scheme,
        base,
        size or base_size,
        aligned=not photos,
        border=border,
        cache_dir=cache,
        device=device,
        more_data=tuple(data[1:]),
    )

    def report_epoch(row: dict[str, float]) -> None:
        shown = {k: v for k, v in row.items() if k not in ("epoch", "averaged_epochs")}
        numbers = ", ".join(f"{k} {v:.4g}" for k, v in shown.items())
        if "averaged_epochs" in row:  # not an epoch of its own: the last ones' mean weights
            err.print(f"last {row['averaged_epochs']:.0f} epochs averaged: {numbers}")
        else:
            err.print(f"epoch {row['epoch']:.0f}: {numbers}", highlight=False)

    try:
        manifest = run(
            options,
            on_epoch=report_epoch,
            on_note=lambda line: err.print(line, markup=False, highlight=False, soft_wrap=True),
        )
    except AgeLensError as error:
        raise fail(str(error), 2) from error
    if reason := manifest.get("gate_not_fitted"):
        err.print(f"[yellow]warning:[/] {escape(reason)}", highlight=False)
    metrics = manifest["metrics"]
    out.print_json(strict_json.dumps({"bundle": str(out_dir), "metrics": metrics}))
