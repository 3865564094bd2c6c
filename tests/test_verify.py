"""The claimed-age check: its answers, and bad claims refused the same way everywhere."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from agelens.cli.main import app
from agelens.decisions.verify import Verdict, check_claimed
from agelens.server import ServerSettings, create_app

runner = CliRunner()
BAD_CLAIMS = ["-1", "nan", "500", "inf", "twenty"]


@pytest.fixture(scope="module")
def photo(tmp_path_factory, astronaut):
    path = tmp_path_factory.mktemp("verify") / "astronaut.png"
    Image.fromarray(astronaut).save(path)
    return path


def test_answers_follow_the_calibrated_distribution(estimator, astronaut):
    (face,) = estimator.estimate(astronaut)
    near, _ = estimator.verify(astronaut, round(face.age))
    assert near.verdict is Verdict.CONSISTENT and near.p_value >= 0.1 and near.reasons == []
    far, _ = estimator.verify(astronaut, 100)
    assert far.verdict is Verdict.UNLIKELY and far.p_value <= 0.02
    assert "98% interval" in far.reasons[0]
    high = face.interval[1]
    edge, _ = estimator.verify(astronaut, high + 1)
    assert edge.verdict in (Verdict.REFER, Verdict.UNLIKELY) and edge.p_value < 0.1


def test_faces_that_cannot_be_judged_and_photos_without_one_are_not_answered(estimator, astronaut):
    (face,) = estimator.estimate(astronaut)
    grey = np.asarray(Image.fromarray(astronaut).convert("L").convert("RGB"))
    check, _ = estimator.verify(grey, round(face.age))
    assert check.verdict is Verdict.REFER and check.reasons[0].startswith("no colour")
    wall = np.full((200, 200, 3), 120, dtype=np.uint8)
    nobody, faces = estimator.verify(wall, 30)
    assert nobody.verdict is Verdict.NO_FACE and nobody.p_value is None and faces == []
    two = np.concatenate([astronaut, astronaut], axis=1)
    both, faces = estimator.verify(two, round(face.age))
    assert len(faces) == 2 and both.verdict is Verdict.REFER
    assert "2 faces" in both.reasons[-1]


@pytest.mark.parametrize("claim", [*BAD_CLAIMS, None])
def test_bad_claims_are_value_errors(claim):
    with pytest.raises(ValueError, match="claimed age"):
        check_claimed(claim)


def test_cli_answers_with_exit_codes_and_strict_json(estimator, photo, astronaut):
    age = round(estimator.estimate(astronaut)[0].age)
    result = runner.invoke(app, ["verify", str(photo), "--claimed", str(age), "--json"])
    assert result.exit_code == 0
    record = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(name))
    assert record["verdict"] == "consistent" and 0.1 <= record["p_value"] <= 1
    assert record["faces"][0]["quality"]["eye_distance"] > 30
    unlikely = runner.invoke(app, ["verify", str(photo), "--claimed", "100"])
    assert unlikely.exit_code == 5 and "UNLIKELY" in unlikely.output


@pytest.mark.parametrize("claim", BAD_CLAIMS)
def test_cli_refuses_bad_claims_without_a_traceback(photo, claim):
    result = runner.invoke(app, ["verify", str(photo), "--claimed", claim])
    assert result.exit_code == 2 and "claimed age" in result.output
    assert "Traceback" not in result.output


def test_api_verify_and_its_bad_claims(estimator, astronaut):
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, format="JPEG", quality=92)
    age = round(estimator.estimate(astronaut)[0].age)
    with TestClient(create_app(ServerSettings(), estimator=estimator)) as client:

        def post(**params):
            files = {"file": ("a.jpg", buffer.getvalue(), "image/jpeg")}
            return client.post("/v1/verify", params=params, files=files)

        answer = post(claimed=age)
        assert answer.status_code == 200
        body = answer.json()
        assert body["verdict"] == "consistent" and body["claimed"] == age
        assert math.isfinite(body["p_value"]) and len(body["faces"]) == 1
        cli = runner.invoke(
            app, ["verify", "-", "--claimed", str(age), "--json"], input=buffer.getvalue()
        )
        assert json.loads(cli.stdout)["p_value"] == body["p_value"]
        for claim in BAD_CLAIMS:
            refused = post(claimed=claim)
            assert refused.status_code == 422 and "claimed" in refused.json()["error"]
        assert post().status_code == 422
