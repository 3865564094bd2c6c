"""Figures people would rather look at than read: curves, confusion matrices, trade-offs, grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import NDArray


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_curves(history: Sequence[dict[str, float]], path: Path, task: str) -> Path:
    """Train and val loss per epoch, and the val metric that early stopping watched."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, metric_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    loss_axis.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    loss_axis.plot(epochs, [row["val_loss"] for row in history], "o-", label="val")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="Loss")
    loss_axis.legend()
    key, title = (
        ("val_mae", "Val MAE (years)") if task == "age" else ("val_accuracy", "Val accuracy")
    )
    metric_axis.plot(epochs, [row.get(key, np.nan) for row in history], "o-", color="C2")
    metric_axis.set(xlabel="epoch", title=title)
    return _save(figure, path)


def plot_confusion(
    matrix: NDArray[np.integer], labels: Sequence[str], path: Path, title: str
) -> Path:
    """Counts with row-normalised shading, so small classes are as readable as large ones."""
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(3.5, 0.6 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if shares[row, column] > 0.6 else "black"
        axis.text(
            column,
            row,
            f"{count}\n{shares[row, column]:.0%}",
            ha="center",
            va="center",
            fontsize=8,
            color=colour,
        )
    axis.set(
        xticks=range(len(labels)),
        yticks=range(len(labels)),
        xlabel="predicted",
        ylabel="true",
        title=title,
    )
    axis.set_xticklabels(labels, rotation=45, ha="right")
    axis.set_yticklabels(labels)
    return _save(figure, path)


def plot_gate_tradeoff(
    buffers: NDArray[np.floating],
    minor_pass: NDArray[np.floating],
    adult_pass: NDArray[np.floating],
    chosen: float | None,
    path: Path,
    over: float = 18,
    minors: int | None = None,
    few_minors: int = 0,
) -> Path:
    """Share of 13-17s passing against share of 25+ passing, as the buffer grows.

    With fewer than ``few_minors`` 13-17-year-olds, the plot says so: its x axis then moves
    in steps too coarse to read a policy from.
    """
    figure, axis = plt.subplots(figsize=(5.5, 4))
    axis.plot(minor_pass, adult_pass, "-", color="C0")
    labelled: list[tuple[float, float]] = []
    for buffer, x, y in zip(buffers, minor_pass, adult_pass, strict=True):
        # Even buffers, each where no other label sits already (few minors pile them at 0).
        apart = all(abs(x - lx) > 0.04 or abs(y - ly) > 0.04 for lx, ly in labelled)
        if float(buffer).is_integer() and int(buffer) % 2 == 0 and apart:
            labelled.append((x, y))
            axis.annotate(
                f"+{buffer:g}", (x, y), fontsize=7, textcoords="offset points", xytext=(3, -8)
            )
    if chosen is not None:
        index = int(np.argmin(np.abs(buffers - chosen)))
        axis.plot(
            minor_pass[index],
            adult_pass[index],
            "o",
            color="C3",
            label=f"policy: pass at {over + chosen:g}+",
        )
        axis.legend(loc="lower right")
    axis.axvline(0.02, color="grey", linestyle=":", linewidth=1)
    counted = "" if minors is None else f" ({minors} aged 13-17)"
    axis.set(
        xlabel=f"13-17-year-olds who pass{counted}",
        ylabel="people aged 25+ who pass",
        title=f"Gate over {over:g}: buffer trade-off",
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    if minors is not None and minors < few_minors:
        axis.text(
            0.5,
            0.5,
            f"Only {minors} people aged 13-17:\ntoo few to judge a policy by",
            transform=axis.transAxes,
            ha="center",
            va="center",
            color="C3",
            fontsize=11,
            bbox={"facecolor": "white", "edgecolor": "C3"},
        )
    return _save(figure, path)


def plot_histogram(
    values: Sequence[float], path: Path, title: str, xlabel: str, bins: int | Sequence[float] = 40
) -> Path:
    figure, axis = plt.subplots(figsize=(5.5, 3.5))
    axis.hist(values, bins=bins, color="C0")
    axis.set(title=title, xlabel=xlabel, ylabel="images")
    return _save(figure, path)


def plot_bars(
    labels: Sequence[str], values: Sequence[float], path: Path, title: str, ylabel: str
) -> Path:
    figure, axis = plt.subplots(figsize=(max(4.0, 0.7 * len(labels) + 2), 3.5))
    axis.bar(range(len(labels)), values, color="C0")
    axis.set_xticks(range(len(labels)))
    axis.set_xticklabels(labels, rotation=30, ha="right")
    axis.set(title=title, ylabel=ylabel)
    return _save(figure, path)


def grid_figure(
    images: Sequence[NDArray[np.uint8]], captions: Sequence[str], title: str, columns: int = 8
) -> plt.Figure:
    """Faces in a grid, each with its caption under it (laid out so that no caption runs
    into the face below)."""
    rows = max(1, -(-len(images) // columns))
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(columns * 1.3, rows * 1.75 + 0.4),
        squeeze=False,
        layout="constrained",
    )
    for axis in axes.flat:
        axis.axis("off")
    for axis, image, caption in zip(axes.flat, images, captions, strict=False):
        axis.imshow(image, cmap="gray" if image.ndim == 2 else None)
        axis.text(0.5, -0.03, caption, transform=axis.transAxes, ha="center", va="top", fontsize=7)
    figure.suptitle(title, fontsize=10)
    return figure


def save_grid(
    images: Sequence[NDArray[np.uint8]],
    captions: Sequence[str],
    path: Path,
    title: str,
    columns: int = 8,
) -> Path:
    """Faces in a grid with a caption under each."""
    figure = grid_figure(images, captions, title, columns)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
