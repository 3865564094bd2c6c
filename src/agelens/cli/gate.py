"""``agelens gate``: is everyone in a photo over an age, or must they show ID?"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from agelens.cli.common import (
    JsonOption,
    ModelOption,
    PrecisionOption,
    TtaOption,
    fail,
    make_estimator,
    out,
)
from agelens.decisions.gate import Decision
from agelens.errors import AgeLensError
from agelens.models.bundles import DEFAULT_BUNDLE

#: Exit codes of ``agelens gate``, so scripts can branch without parsing output.
GATE_EXIT = {Decision.PASS: 0, Decision.REFER: 3, Decision.NO_FACE: 4}


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
    estimator = make_estimator(model, "imfdb", tta, precision)
    try:
        estimator.gate_policy(over, buffer)
    except ValueError as error:
        raise fail(str(error), 2) from error
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
        out.print(
            f"[bold {colour}]{result.decision.upper()}[/]: {verdict} ({rule})", highlight=False
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
    raise typer.Exit(GATE_EXIT[result.decision])
