"""A first look at a face dataset: sizes, colour, brightness, labels, duplicates, samples.

These are the checks a careful person makes by hand before training (the
Indian-actors project found its small, grey and blurry crops this way), written
to PNG plots, ``eda.json`` and one HTML page.
"""

from __future__ import annotations

import html
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agelens import strict_json
from agelens.data.datasets import Dataset, Sample
from agelens.decisions.groups import DECADES
from agelens.errors import ImageError
from agelens.evaluation.plots import plot_bars, plot_histogram, save_grid
from agelens.evaluation.report_page import figure, page, table
from agelens.pipeline.images import load_image

#: A colour image whose channels differ by less than this (mean absolute, 0-255) is grey.
GREY_TOLERANCE = 2.0
THUMBNAIL = 64
SAMPLES_PER_CLASS = 8


@dataclass(frozen=True, slots=True)
class ImageStats:
    width: int
    height: int
    grey: bool
    brightness: float
    contrast: float


def image_stats(sample: Sample) -> ImageStats:
    """Size from the file; colour, brightness and contrast from a small copy."""
    image = load_image(sample.path)
    height, width = image.shape[:2]
    small = np.asarray(
        Image.fromarray(image).resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BILINEAR),
        dtype=np.float32,
    )
    channel_gap = np.abs(small - small.mean(axis=2, keepdims=True)).mean()
    luminance = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return ImageStats(
        width,
        height,
        bool(channel_gap < GREY_TOLERANCE),
        float(luminance.mean()),
        float(luminance.std()),
    )


def class_of(sample: Sample) -> str:
    """The label a sample is grouped by in the plots: its group, or its decade."""
    if sample.group is not None:
        return sample.group
    return DECADES.group_of(sample.age) if sample.age is not None else "unlabelled"


def run_eda(
    dataset: Dataset,
    unique: list[tuple[Sample, str]],
    out: Path,
    *,
    seed: int = 0,
    on_progress: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Write the plots, ``eda.json`` and ``index.html`` to ``out``; returns the JSON summary."""
    out.mkdir(parents=True, exist_ok=True)
    stats: list[ImageStats] = []
    kept: list[Sample] = []
    unreadable: list[str] = []
    for sample, _ in unique:
        try:
            stats.append(image_stats(sample))
            kept.append(sample)
        except ImageError as error:
            unreadable.append(f"{sample.path.name}: {error}")
        if on_progress:
            on_progress()
    widths = np.array([s.width for s in stats])
    heights = np.array([s.height for s in stats])
    grey = int(sum(s.grey for s in stats))
    classes = Counter(class_of(s) for s in kept)
    summary: dict[str, Any] = {
        "dataset": dataset.kind,
        "files": len(dataset.samples) + len(dataset.malformed),
        "images": len(kept),
        "duplicates": dataset.duplicates,
        "malformed": dataset.malformed,
        "unreadable": unreadable,
        "size": _describe(np.sqrt(widths * heights)) if len(stats) else {},
        "width": _describe(widths) if len(stats) else {},
        "height": _describe(heights) if len(stats) else {},
        "grey_share": round(grey / max(len(stats), 1), 4),
        "brightness": _describe(np.array([s.brightness for s in stats])) if stats else {},
        "contrast": _describe(np.array([s.contrast for s in stats])) if stats else {},
        "classes": dict(sorted(classes.items())),
    }
    ages = [s.age for s in kept if s.age is not None]
    if ages:
        summary["age"] = _describe(np.array(ages))
    figures = _figures(out, stats, kept, classes, ages, seed)
    (out / "eda.json").write_text(strict_json.dumps(summary, indent=2) + "\n")
    (out / "index.html").write_text(_html(summary, figures))
    return summary


def _describe(values: np.ndarray) -> dict[str, float]:
    return {
        "min": round(float(values.min()), 2),
        "median": round(float(np.median(values)), 2),
        "mean": round(float(values.mean()), 2),
        "max": round(float(values.max()), 2),
    }


def _figures(
    out: Path,
    stats: list[ImageStats],
    kept: list[Sample],
    classes: Counter[str],
    ages: list[float],
    seed: int,
) -> list[tuple[str, str]]:
    """(file name, caption) of every figure written."""
    if not stats:
        return []
    figures = [
        (
            plot_histogram(
                [np.sqrt(s.width * s.height) for s in stats],
                out / "sizes.png",
                "Image size",
                "sqrt(width x height), pixels",
            ).name,
            "Image sizes",
        ),
        (
            plot_bars(
                ["colour", "grey"],
                [len(stats) - sum(s.grey for s in stats), sum(s.grey for s in stats)],
                out / "colour.png",
                "Grey and colour images",
                "images",
            ).name,
            "Grey and colour",
        ),
        (
            plot_histogram(
                [s.brightness for s in stats],
                out / "brightness.png",
                "Brightness",
                "mean luminance (0-255)",
            ).name,
            "Brightness",
        ),
        (
            plot_histogram(
                [s.contrast for s in stats],
                out / "contrast.png",
                "Contrast",
                "luminance standard deviation",
            ).name,
            "Contrast",
        ),
    ]
    if ages:
        figures.append(
            (
                plot_histogram(
                    ages, out / "ages.png", "Ages", "years", bins=range(0, int(max(ages)) + 2, 2)
                ).name,
                "Age histogram",
            )
        )
    labels = sorted(classes)
    figures.append(
        (
            plot_bars(
                labels,
                [classes[label] for label in labels],
                out / "classes.png",
                "Images per class",
                "images",
            ).name,
            "Class histogram",
        )
    )
    by_class: dict[str, list[Sample]] = defaultdict(list)
    for sample in kept:
        by_class[class_of(sample)].append(sample)
    rng = random.Random(seed)
    faces, captions = [], []
    for label in labels:
        for sample in rng.sample(by_class[label], min(SAMPLES_PER_CLASS, len(by_class[label]))):
            faces.append(load_image(sample.path))
            captions.append(label if sample.age is None else f"{label} ({sample.age:g})")
    figures.append(
        (
            save_grid(
                faces,
                captions,
                out / "samples.png",
                "Sample faces per class",
                columns=SAMPLES_PER_CLASS,
            ).name,
            "Sample faces per class",
        )
    )
    return figures


def _html(summary: dict[str, Any], figures: list[tuple[str, str]]) -> str:
    rows = [
        ("files", summary["files"]),
        ("distinct readable images", summary["images"]),
        ("byte-identical duplicates dropped", summary["duplicates"]),
        ("malformed names or rows", len(summary["malformed"])),
        ("unreadable images", len(summary["unreadable"])),
        ("grey share", f"{summary['grey_share']:.1%}"),
        ("median size (px)", summary["size"].get("median", "-")),
        ("classes", ", ".join(f"{k}: {v}" for k, v in summary["classes"].items())),
    ]
    body = [table(["measure", "value"], rows)]
    if summary["malformed"]:
        listed = ", ".join(html.escape(name) for name in summary["malformed"][:20])
        body.append(f"<p>Malformed: {listed}</p>")
    body.extend(figure(name, caption) for name, caption in figures)
    return page(f"Dataset overview: {summary['dataset']}", "\n".join(body))
