"""Every JSON AgeLens writes parses under a strict parser: an undefined figure is null.

``JSON.parse`` and most parsers outside Python reject ``NaN`` and ``Infinity``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from agelens import strict_json
from agelens.cli.main import app
from agelens.server.app import create_app
from agelens.server.json_response import StrictJSONResponse
from agelens.server.settings import ServerSettings

runner = CliRunner()


def strict_loads(text: str):
    def refuse(constant: str):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_undefined_figures_are_written_null():
    value = {"a": float("nan"), "b": [np.float32("inf"), 1.5], "c": (np.int64(3), -math.inf)}
    assert strict_loads(strict_json.dumps(value)) == {"a": None, "b": [None, 1.5], "c": [3, None]}
    body = StrictJSONResponse({"pass_13_17": float("nan")}).body
    assert strict_loads(body.decode()) == {"pass_13_17": None}


@pytest.mark.parametrize(
    "arguments",
    [
        ["predict", "{photos}", "--json", "--distribution"],
        ["gate", "{photos}", "--json", "--over", "18"],
        ["verify", "{photos}/astronaut.png", "--claimed", "30", "--json"],
        ["evaluate", "--data", "csv:{table}", "--json"],
        ["models", "--json"],
    ],
)
def test_every_json_output_of_the_cli_is_strict_json(arguments, photos: Path, tmp_path: Path):
    broken = tmp_path / "broken.jpg"  # an unreadable photo's record too
    broken.write_bytes(b"\xff\xd8not a jpeg")
    if arguments[0] in ("predict", "gate"):
        arguments = [*arguments, str(broken)]
    table = tmp_path / "ages.csv"
    # No 13-17-year-old: the gate's minor pass rate is undefined, so it must be null.
    table.write_text(f"path,age\n{photos / 'astronaut.png'},41\n{photos / 'hopper.jpg'},77\n")
    filled = [a.format(photos=photos, table=table) for a in arguments]
    result = runner.invoke(app, filled)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, result.output
    text = "\n".join(lines)
    records = (
        [strict_loads(line) for line in lines] if text.startswith("{") else [strict_loads(text)]
    )
    if arguments[0] == "evaluate":
        assert records[0]["gate"]["pass_13_17"] is None


def test_every_api_answer_is_strict_json(estimator, astronaut):
    import io

    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="JPEG")
    photo = {"file": ("a.jpg", buffer.getvalue(), "image/jpeg")}
    with TestClient(create_app(ServerSettings(), estimator=estimator)) as client:
        answers = [
            client.get("/healthz"),
            client.get("/readyz"),
            client.get("/v1/models"),
            client.post("/v1/estimate", files=photo, params={"distribution": "true"}),
            client.post("/v1/gate", files=photo, params={"over": 18}),
            client.post("/v1/verify", files=photo, params={"claimed": 30}),
            client.post("/v1/estimate", files={"file": ("x.jpg", b"nope", "image/jpeg")}),
            client.post("/v1/gate", files=photo, params={"over": "nan"}),
        ]
    for answer in answers:
        assert answer.status_code < 500
        strict_loads(answer.text)
