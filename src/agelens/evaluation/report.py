"""The evaluation report: metrics JSON, figures and one HTML page, for one model or several.

Per model: headline numbers, the confusion matrix, MAE by age band and by gender
and race, the age gate's trade-off curve, the faces it got most wrong, and the
training curves when the bundle was trained by AgeLens. With several models the
page opens with a side-by-side table.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from agelens import strict_json
from agelens.decisions.gate import GatePolicy, pass_rates
from agelens.decisions.gate_fit import MIN_MINORS
from agelens.decisions.groups import GroupScheme
from agelens.errors import ImageError
from agelens.evaluation.metrics import Prediction, gate_scores, share_text, with_faces
from agelens.evaluation.plots import (
    plot_bars,
    plot_confusion,
    plot_curves,
    plot_gate_tradeoff,
    save_grid,
)
from agelens.evaluation.report_page import figure, page, table
from agelens.pipeline.images import load_image

GALLERY_SIZE = 24
BUFFERS = np.arange(0.0, 30.5, 0.5)
COMPARED = ("n", "mae", "cs5", "coverage90", "accuracy", "bias")
#: What each key of metrics.json means, for people reading the page.
METRIC_NAMES = {
    "n": "faces scored",
    "mae": "MAE: mean absolute error (years)",
    "cs5": "CS@5: share within 5 years",
    "coverage90": "share inside the 90% interval",
    "accuracy": "group accuracy",
    "bias": "mean error (years; + is too old)",
    "no_face": "photos with no face found (left out of every figure)",
    "unreadable": "unreadable files",
}


def write_report(
    out: Path,
    title: str,
    runs: Sequence[tuple[dict[str, Any], list[Prediction], Path | None]],
    scheme: GroupScheme,
) -> Path:
    """``runs`` holds (metrics, predictions, bundle folder) per model; returns the HTML path."""
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    if len(runs) > 1:
        sections.append("<h2>Comparison</h2>" + _comparison(runs))
    for result, predictions, folder in runs:
        sections.append(_model_section(out, result, with_faces(predictions), folder, scheme))
    (out / "metrics.json").write_text(strict_json.dumps([r for r, _, _ in runs], indent=2) + "\n")
    path = out / "index.html"
    path.write_text(page(title, "\n".join(sections)))
    return path


def _comparison(runs: Sequence[tuple[dict[str, Any], list[Prediction], Path | None]]) -> str:
    header = ["model", *(METRIC_NAMES[key] for key in COMPARED), "pass 13-17", "pass 25+"]
    rows = []
    for result, _, _ in runs:
        gate = result.get("gate", {})
        rows.append(
            [result["model"]]
            + [_fmt(result.get(key)) for key in COMPARED]
            + [share_text(gate.get("pass_13_17")), share_text(gate.get("pass_25_plus"))]
        )
    return table(header, rows)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "model"


def _model_section(
    out: Path,
    result: dict[str, Any],
    predictions: list[Prediction],
    folder: Path | None,
    scheme: GroupScheme,
) -> str:
    slug = _slug(result["model"])
    parts = [f"<h2>{html.escape(result['model'])}</h2>"]
    tta = {True: "on", False: "off"}.get(result.get("tta"), "the bundle's")
    parts.append(
        f"<p>Weights {html.escape(str(result.get('precision', '-')))}, flip TTA {tta}.</p>"
    )
    keys = (*COMPARED, "no_face", "unreadable")
    headline = [(METRIC_NAMES[key], _fmt(result.get(key))) for key in keys]
    parts.append(table(["metric", "value"], [row for row in headline if row[1] != "-"]))
    figures = []
    if "confusion" in result:
        labels, matrix = result["confusion"]["labels"], np.array(result["confusion"]["matrix"])
        used = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
        kept = [label for label, keep in zip(labels, used, strict=True) if keep]
        name = plot_confusion(
            matrix[used][:, used], kept, out / f"{slug}-confusion.png", f"{scheme.name} groups"
        ).name
        figures.append(figure(name, "Confusion matrix (rows: truth)"))
    if "per_band" in result:
        bands = result["per_band"]
        parts.append(
            "<h3>Error by age band</h3>"
            + table(["band", "n", "MAE"], [[b, v["n"], _fmt(v["mae"])] for b, v in bands.items()])
        )
        name = plot_bars(
            list(bands),
            [v["mae"] for v in bands.values()],
            out / f"{slug}-bands.png",
            "MAE by age band",
            "years",
        ).name
        figures.append(figure(name, "MAE by age band"))
    for attribute in ("gender", "race"):
        if by := result.get(f"by_{attribute}"):
            rows = [[k, v["n"], _fmt(v["mae"])] for k, v in by["groups"].items()]
            parts.append(
                f"<h3>MAE by {attribute} (max-min gap {by['gap']:.2f} years)</h3>"
                + table([attribute, "n", "MAE"], rows)
            )
    if gate := result.get("gate"):
        policy = GatePolicy(gate["over"], gate["buffer"], gate["rule"], share=gate.get("share", 1))
        parts.append(
            f"<h3>Age gate over {gate['over']:g}</h3><p>Policy: pass when {policy.measure} "
            f"reaches {gate['over'] + gate['buffer']:g} (buffer {gate['buffer']:g}). "
            f"13-17-year-olds who pass: {share_text(gate['pass_13_17'])} of {gate['n_13_17']}; "
            f"people aged 25+ who pass: {share_text(gate['pass_25_plus'])} of "
            f"{gate['n_25_plus']}.</p>"
        )
        if gate["n_13_17"] < MIN_MINORS:
            parts.append(
                f"<p class='warning'>Only {gate['n_13_17']} people aged 13-17 in this data, "
                f"fewer than {MIN_MINORS}: too few to judge a gate policy by.</p>"
            )
        figures.append(figure(_tradeoff(out, slug, predictions, gate), "Gate trade-off"))
    figures.append(figure(_gallery(out, slug, predictions), "Most wrong"))
    if folder is not None and (history := folder / "history.json").is_file():
        config = json.loads((folder / "manifest.json").read_text()).get("training", {})
        task = config.get("config", {}).get("task", "age")
        name = plot_curves(json.loads(history.read_text()), out / f"{slug}-curves.png", task).name
        figures.append(figure(name, "Training curves"))
    parts.append("".join(figures))
    return "\n".join(parts)


def _tradeoff(out: Path, slug: str, predictions: list[Prediction], gate: dict[str, Any]) -> str:
    policy = GatePolicy(gate["over"], gate["buffer"], gate["rule"], share=gate.get("share", 1))
    scores, truth = gate_scores(predictions, policy)
    rates = np.array([pass_rates(scores, truth, gate["over"] + b) for b in BUFFERS])
    return plot_gate_tradeoff(
        BUFFERS,
        rates[:, 0],
        rates[:, 1],
        gate["buffer"],
        out / f"{slug}-gate.png",
        gate["over"],
        minors=gate["n_13_17"],
        few_minors=MIN_MINORS,
    ).name


def _wrongness(prediction: Prediction, scheme_labels: dict[str, float]) -> float:
    sample, face = prediction.sample, prediction.face
    if sample.age is not None:
        return abs(face.age - sample.age)
    return 1.0 - scheme_labels.get(sample.group or "", 0.0)


def _gallery(out: Path, slug: str, predictions: list[Prediction]) -> str:
    """The faces with the largest age error (or least probability on their true group)."""
    ranked = sorted(
        predictions, key=lambda p: _wrongness(p, p.face.group_probabilities), reverse=True
    )[:GALLERY_SIZE]
    faces, captions = [], []
    for prediction in ranked:
        try:
            image = load_image(prediction.sample.path)
        except ImageError:
            continue
        faces.append(_face_crop(image, prediction.face.box))
        truth = (
            prediction.sample.age if prediction.sample.age is not None else prediction.sample.group
        )
        captions.append(f"true {truth:g}" if isinstance(truth, float) else f"true {truth}")
        captions[-1] += f"\npred {prediction.face.age:.0f} {prediction.face.group}"
    return save_grid(faces, captions, out / f"{slug}-most-wrong.png", "Most wrong").name


def _face_crop(image: np.ndarray, box: Sequence[float], size: int = 96) -> np.ndarray:
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    margin = 0.15 * max(x2 - x1, y2 - y1)
    left, top = max(int(x1 - margin), 0), max(int(y1 - margin), 0)
    right, bottom = min(int(x2 + margin), width), min(int(y2 + margin), height)
    crop = image[top : max(bottom, top + 1), left : max(right, left + 1)]
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BILINEAR))
