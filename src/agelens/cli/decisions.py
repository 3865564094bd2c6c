"""Decisions about the people in a photo: ``agelens gate`` (is everyone over an age, or
must they show ID?) and ``agelens verify`` (is a claimed age consistent with the face?)."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Annotated, Any

import typer
from rich.markup import escape

from agelens import strict_json
from agelens.batch import ImageResult
from agelens.cli.common import (
    JsonOption,
    ModelOption,
    PrecisionOption,
    TtaOption,
    err,
    fail,
    make_estimator,
    out,
    shown,
)
from agelens.cli.predict import ImagesArgument, image_sources, print_faces, results_in_order
from agelens.decisions.gate import Decision, GateResult
from agelens.decisions.verify import ClaimCheck, Verdict, check_claimed
from agelens.models.bundles import DEFAULT_BUNDLE

#: Exit codes of ``agelens gate``, so scripts can branch without parsing output.
GATE_EXIT = {Decision.PASS: 0, Decision.REFER: 3, Decision.NO_FACE: 4}


def gate(
    images: ImagesArgument,
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

    A face that cannot be judged (too small, blurred, dark, turned, no colour) is
    referred whatever its age, and the answer says why.

    Each photo is decided on its own. Exit code 0 when every photo passes; else 1 when
    any could not be read, 3 when any is referred, 4 when one has no face.
    """
    estimator = make_estimator(model, "imfdb", tta, precision)
    try:
        policy = estimator.gate_policy(over, buffer)
    except ValueError as error:
        raise fail(str(error), 2) from error
    fitted = estimator.bundle.manifest.get("gate") or {}
    if buffer is None and fitted.get("holds") is False:
        err.print(
            f"[yellow]warning:[/] {estimator.bundle.name}'s policy lets "
            f"{fitted['val_pass_13_17']:.1%} of 13-17-year-olds pass in its worst domain "
            f"(val), over the {fitted['max_minor_pass']:.0%} it aims at, so it passes no "
            "face; give --buffer to choose a policy yourself",
            highlight=False,
        )
    inputs = image_sources(images)
    counts: Counter[str] = Counter()
    for found in results_in_order(estimator, inputs, aligned=False):
        if found.error is not None:
            counts["unreadable"] += 1
            # The gate record's shape, with no decision, no faces and the error.
            shape = {**estimator.decide([], policy).to_dict(over), "decision": None}
            _report_unreadable(found, as_json, shape)
            continue
        result = estimator.decide(found.faces, policy)
        counts[str(result.decision)] += 1
        if as_json:
            sys.stdout.write(strict_json.dumps(_record(str(found.path), result, over)) + "\n")
        else:
            _explain(str(found.path) if len(inputs) > 1 else None, result, over)
    if len(inputs) > 1 and not as_json:
        summary = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items())
        out.print(f"{len(inputs)} photos: {summary}", highlight=False)
    code = _exit_code(counts, GATE_EXIT)
    if counts["unreadable"]:
        raise fail(f"{counts['unreadable']} input(s) could not be read", code)
    raise typer.Exit(code)


def _exit_code(counts: Counter[str], codes: dict[Any, int]) -> int:
    """One photo: its answer's code; several: the most serious that any photo got. An
    unreadable photo is the most serious, then the answers by their codes' order in
    ``codes`` (the first, code 0, is the all-clear)."""
    serious = [("unreadable", 1), *((str(k), c) for k, c in list(codes.items())[1:])]
    return next((code for outcome, code in serious if counts[outcome]), 0)


def _report_unreadable(found: ImageResult, as_json: bool, shape: dict[str, Any]) -> None:
    """An unreadable photo: in JSON, a record of the command's shape with its error."""
    if as_json:
        record = {"image": str(found.path), **shape, "faces": [], "error": found.error}
        sys.stdout.write(strict_json.dumps(record) + "\n")
    else:
        print_faces(found)  # its error, as predict prints it


def _record(image: str, result: GateResult, over: float) -> dict[str, Any]:
    return {"image": image, **result.to_dict(over), "error": None}


def _explain(image: str | None, result: GateResult, over: float) -> None:
    """The decision, the rule that made it, and each face's figure against the rule."""
    buffer = result.pass_age - over
    colour = {"pass": "green", "refer": "yellow", "no_face": "red"}[result.decision]
    rule = (
        f"over {over:g} with a {buffer:g}-year buffer: a face passes when {result.measure} "
        f"reaches {result.pass_age:g}"
    )
    verdict = {
        "pass": "every face passes",
        "refer": "check an ID",
        "no_face": "no face found, check an ID",
    }[result.decision]
    where = f"[bold]{shown(image)}[/]: " if image else ""
    out.print(
        f"{where}[bold {colour}]{result.decision.upper()}[/]: {verdict} ({rule})",
        highlight=False,
    )
    rows = zip(result.faces, result.decisions, result.reasons, result.scores, strict=True)
    for face, decision, reasons, compared in rows:
        why = f"; its score ({compared:.1f}) reaches {result.pass_age:g}" if not reasons else ""
        out.print(
            f"  face at {[round(v) for v in face.box]}: {face.label}{why} -> {decision}",
            highlight=False,
        )
        for reason in reasons:
            out.print(f"    {escape(reason)}", highlight=False)


#: Exit codes of ``agelens verify``, so scripts can branch without parsing output.
VERIFY_EXIT = {Verdict.CONSISTENT: 0, Verdict.UNLIKELY: 5, Verdict.REFER: 3, Verdict.NO_FACE: 4}
_COLOURS = {"consistent": "green", "refer": "yellow", "unlikely": "red", "no_face": "red"}


def verify(
    images: ImagesArgument,
    claimed: Annotated[
        str, typer.Option(help="The age the person claims, in years (0-120).", show_default=False)
    ],
    as_json: JsonOption = False,
    model: ModelOption = DEFAULT_BUNDLE,
    tta: TtaOption = None,
    precision: PrecisionOption = None,
) -> None:
    """Claimed-age check: is CLAIMED consistent with the face, unlikely, or for a person?

    consistent: the claim lies in the face's calibrated 90% interval; unlikely: outside
    its 98% interval; refer: between the two, a face that cannot be judged, or a photo
    with several faces. The p-value says how surprising the claim is.

    Exit code 0 when every photo is consistent; else 1 when any could not be read, 5
    when any claim is unlikely, 3 when any is referred, 4 when one has no face.
    """
    try:
        age = check_claimed(claimed)
    except ValueError as error:
        raise fail(str(error), 2) from error
    estimator = make_estimator(model, "imfdb", tta, precision)
    inputs = image_sources(images)
    counts: Counter[str] = Counter()
    for found in results_in_order(estimator, inputs, aligned=False, distribution=True):
        if found.error is not None:
            counts["unreadable"] += 1
            shape = {**estimator.check_claim([], age).to_dict(), "verdict": None}
            _report_unreadable(found, as_json, {**shape, "p_value": None, "reasons": []})
            continue
        check = estimator.check_claim(found.faces, age)
        counts[check.verdict.value] += 1
        if as_json:
            record = {
                "image": str(found.path),
                **check.to_dict(),
                "faces": [face.to_dict() for face in found.faces],
                "error": None,
            }
            sys.stdout.write(strict_json.dumps(record) + "\n")
        else:
            _explain_claim(str(found.path) if len(inputs) > 1 else None, check)
    code = _exit_code(counts, VERIFY_EXIT)
    if counts["unreadable"]:
        raise fail(f"{counts['unreadable']} input(s) could not be read", code)
    raise typer.Exit(code)


def _explain_claim(image: str | None, check: ClaimCheck) -> None:
    where = f"[bold]{shown(image)}[/]: " if image else ""
    p_value = "" if check.p_value is None else f" (p = {check.p_value:.3f})"
    colour = _COLOURS[check.verdict.value]
    label = check.verdict.value.replace("_", " ").upper()
    out.print(
        f"{where}[bold {colour}]{label}[/]: claimed {check.claimed:g}{p_value}", highlight=False
    )
    for reason in check.reasons:
        out.print(f"  {escape(reason)}", highlight=False)
