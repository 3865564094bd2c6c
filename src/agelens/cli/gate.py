"""``agelens gate``: is everyone in a photo over an age, or must they show ID?"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Annotated, Any

import typer
from rich.markup import escape

from agelens.cli.common import (
    JsonOption,
    ModelOption,
    PrecisionOption,
    TtaOption,
    fail,
    make_estimator,
    out,
)
from agelens.cli.predict import ImagesArgument, image_sources, print_faces, results_in_order
from agelens.decisions.gate import Decision
from agelens.estimator import GateResult
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

    Each photo is decided on its own. Exit code 0 when every photo passes; else 1 when
    any could not be read, 3 when any is referred, 4 when one has no face.
    """
    estimator = make_estimator(model, "imfdb", tta, precision)
    try:
        policy = estimator.gate_policy(over, buffer)
    except ValueError as error:
        raise fail(str(error), 2) from error
    inputs = image_sources(images)
    counts: Counter[str] = Counter()
    for found in results_in_order(estimator, inputs, aligned=False):
        if found.error is not None:
            counts["unreadable"] += 1
            if as_json:
                record = {"image": str(found.path), "error": found.error}
                sys.stdout.write(json.dumps(record) + "\n")
            else:
                print_faces(found)  # its error, as predict prints it
            continue
        result = estimator.decide(found.faces, policy)
        counts[str(result.decision)] += 1
        if as_json:
            sys.stdout.write(json.dumps(_record(str(found.path), result, over)) + "\n")
        else:
            _explain(str(found.path) if len(inputs) > 1 else None, result, over)
    if len(inputs) > 1 and not as_json:
        summary = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in counts.items())
        out.print(f"{len(inputs)} photos: {summary}", highlight=False)
    code = _exit_code(counts)
    if counts["unreadable"]:
        raise fail(f"{counts['unreadable']} input(s) could not be read", code)
    raise typer.Exit(code)


def _exit_code(counts: Counter[str]) -> int:
    """One photo: its decision's code; several: the most serious that any photo got."""
    for outcome, code in (("unreadable", 1), ("refer", 3), ("no_face", 4)):
        if counts[outcome]:
            return code
    return GATE_EXIT[Decision.PASS]


def _record(image: str, result: GateResult, over: float) -> dict[str, Any]:
    return {
        "image": image,
        "decision": str(result.decision),
        "over": over,
        "buffer": result.pass_age - over,
        "rule": result.rule,
        "faces": [
            {**face.to_dict(), "decision": str(decision)}
            for face, decision in zip(result.faces, result.decisions, strict=True)
        ],
    }


def _explain(image: str | None, result: GateResult, over: float) -> None:
    """The decision, the rule that made it, and each face's figure against the rule."""
    buffer = result.pass_age - over
    colour = {"pass": "green", "refer": "yellow", "no_face": "red"}[result.decision]
    by_estimate = result.rule == "estimate"
    measure = "its estimated age" if by_estimate else "the lower end of its 90% interval"
    rule = (
        f"over {over:g} with a {buffer:g}-year buffer: a face passes when {measure} "
        f"reaches {result.pass_age:g}"
    )
    verdict = {
        "pass": "every face passes",
        "refer": "check an ID",
        "no_face": "no face found, check an ID",
    }[result.decision]
    where = f"[bold]{escape(image)}[/]: " if image else ""
    out.print(
        f"{where}[bold {colour}]{result.decision.upper()}[/]: {verdict} ({rule})",
        highlight=False,
    )
    for face, decision in zip(result.faces, result.decisions, strict=True):
        compared = face.age if by_estimate else face.interval[0]
        named = "estimate" if by_estimate else "interval's lower end"
        relation = "reaches" if decision == "pass" else "is under"
        out.print(
            f"  face at {[round(v) for v in face.box]}: {face.label}; its {named} "
            f"({compared:.1f}) {relation} {result.pass_age:g} -> {decision}",
            highlight=False,
        )
