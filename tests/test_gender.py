"""Apparent gender: off by default, the same field in every output form, never race."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from agelens.cli.main import app
from agelens.data.datasets import Sample
from agelens.estimator import AgeEstimator
from agelens.evaluation.metrics import Prediction, gender_figures
from agelens.models.bundles import DEFAULT_GENDER_BUNDLE, GENDER, load_bundle
from agelens.pipeline.chips import Aligner, chip_from_landmarks
from agelens.pipeline.estimates import UNCERTAIN, Face, GenderEstimate, gender_estimates
from agelens.records import flat_columns
from agelens.server import ServerSettings, create_app

runner = CliRunner()
#: Words of a race or ethnicity field: none may appear as a key of any output.
RACE_WORDS = ("race", "ethnic")


def _keys(value: Any) -> set[str]:
    """Every key of every mapping nested in ``value``."""
    if isinstance(value, dict):
        return set(value) | {key for inner in value.values() for key in _keys(inner)}
    if isinstance(value, list):
        return {key for inner in value for key in _keys(inner)}
    return set()


def _no_race(keys: set[str] | list[str]) -> None:
    offending = [key for key in keys if any(word in key.lower() for word in RACE_WORDS)]
    assert not offending, offending


@pytest.fixture(scope="module")
def pair(tmp_path_factory, astronaut, grace_hopper_path) -> Path:
    """One photo of two people: the astronaut (left) and Grace Hopper (right)."""
    hopper = Image.open(grace_hopper_path).convert("RGB").resize((412, 512))
    canvas = Image.new("RGB", (512 + 412, 512), "white")
    canvas.paste(Image.fromarray(astronaut), (0, 0))
    canvas.paste(hopper, (512, 0))
    path = tmp_path_factory.mktemp("photos") / "pair.jpg"
    canvas.save(path, quality=92)
    return path


@pytest.fixture(scope="module")
def client(estimator):
    with TestClient(create_app(ServerSettings(), estimator=estimator)) as test_client:
        yield test_client


@pytest.mark.parametrize(("size", "padding", "border"), [(64, 0.2, "zero"), (224, 0.6, "edge")])
def test_a_chip_cut_from_landmarks_is_the_aligners_chip(astronaut, size, padding, border):
    box = (150.0, 30.0, 330.0, 210.0)
    chip, landmarks = Aligner(size, padding, border).chip(astronaut, box)
    again = chip_from_landmarks(astronaut, landmarks, size, padding, border)
    assert again.shape == chip.shape == (size, size, 3)
    assert np.array_equal(again, chip)


def test_a_bad_border_is_refused(astronaut):
    with pytest.raises(ValueError, match="border"):
        chip_from_landmarks(astronaut, [(200.0, 100.0)] * 5, 64, 0.2, "mirror")


def test_below_the_threshold_the_answer_is_uncertain_and_keeps_the_guess():
    sure, unsure = gender_estimates(np.array([[0.1, 0.9], [0.6, 0.4]]), ["female", "male"], 0.85)
    assert (sure.label, round(sure.probability, 3)) == ("male", 0.9)
    assert unsure.label == UNCERTAIN
    assert unsure.probabilities == {"female": 0.6, "male": 0.4}
    assert sure.text == "male 90%"
    assert unsure.text == "uncertain (female 60%)"


def test_the_default_gender_bundle_is_cc0_with_a_fitted_threshold():
    bundle = load_bundle(DEFAULT_GENDER_BUNDLE, task=GENDER)
    assert bundle.manifest["license"]["spdx"] == "CC0-1.0"
    assert not bundle.manifest["license"]["research_only"]
    assert bundle.labels == ["female", "male"]
    assert 0.5 < bundle.uncertain_below < 1


def test_gender_is_off_by_default_and_leaves_the_ages_unchanged(estimator, pair):
    plain = estimator.estimate(str(pair))
    with_gender = estimator.estimate(str(pair), gender=True)
    assert len(plain) == 2
    assert all(face.gender is None for face in plain)
    assert all("gender" not in face.to_dict() for face in plain)
    assert [f.age for f in plain] == [f.age for f in with_gender]
    assert [f.interval for f in plain] == [f.interval for f in with_gender]


def test_each_face_of_a_photo_gets_its_own_answer(estimator, pair, astronaut):
    faces = sorted(estimator.estimate(str(pair), gender=True), key=lambda face: face.box[0])
    alone = estimator.estimate(astronaut, gender=True)
    assert faces[0].gender is not None and alone[0].gender is not None
    assert faces[0].gender.label == "female"
    assert abs(faces[0].gender.probability - alone[0].gender.probability) < 0.05
    for face in faces:
        answer = face.to_dict()["gender"]
        assert set(answer) == {"label", "probability", "probabilities"}
        assert answer["label"] in {"female", "male", UNCERTAIN}
        assert abs(sum(answer["probabilities"].values()) - 1) < 1e-3


def test_predict_json_csv_and_table_carry_gender_only_when_asked(pair, tmp_path: Path):
    table_path = tmp_path / "faces.csv"
    result = runner.invoke(app, ["predict", str(pair), "--json"])
    assert result.exit_code == 0, result.output
    plain = json.loads(result.stdout)
    assert all("gender" not in face for face in plain["faces"])

    arguments = ["predict", str(pair), "--json", "--gender", "--csv", str(table_path)]
    result = runner.invoke(app, arguments)
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    faces = found["faces"]
    assert [face["age"] for face in faces] == [face["age"] for face in plain["faces"]]
    assert all(face["gender"]["label"] in {"female", "male", UNCERTAIN} for face in faces)
    _no_race(_keys(found))
    rows = list(csv.DictReader(io.StringIO(table_path.read_text())))
    assert [row["gender"] for row in rows] == [face["gender"]["label"] for face in faces]
    _no_race(list(rows[0]))

    result = runner.invoke(app, ["predict", str(pair), "--gender"])
    assert result.exit_code == 0, result.output
    assert "gender" in result.stdout
    assert "female" in result.stdout
    assert "female" not in runner.invoke(app, ["predict", str(pair)]).stdout


def test_csv_columns_without_gender_are_unchanged():
    names = ["YOUNG", "MIDDLE", "OLD"]
    with_gender = flat_columns(names, gender=True)
    added = [column for column in with_gender if column not in flat_columns(names)]
    assert added == ["gender", "gender_probability"]
    assert [column for column in with_gender if column not in added] == flat_columns(names)
    _no_race(with_gender)


def test_an_age_bundle_as_gender_model_is_a_clear_usage_error(pair):
    result = runner.invoke(app, ["predict", str(pair), "--gender", "--gender-model", "cydral-v1"])
    assert result.exit_code == 2
    assert "cydral-v1" in result.output and "gender" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["predict", str(pair), "-m", DEFAULT_GENDER_BUNDLE])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_annotated_photos_name_the_apparent_gender(pair, tmp_path: Path):
    from agelens.annotate import _WORDINGS as WORDINGS

    estimator = AgeEstimator()
    (face, *_) = estimator.estimate(str(pair), gender=True)
    assert face.gender is not None
    assert WORDINGS[0](face, 1).endswith(face.gender.label)
    (plain, *_) = estimator.estimate(str(pair))
    assert not WORDINGS[0](plain, 1).endswith(face.gender.label)
    out = tmp_path / "annotated"
    result = runner.invoke(app, ["predict", str(pair), "--gender", "--annotate", str(out)])
    assert result.exit_code == 0, result.output
    assert list(out.iterdir())


def test_the_server_gives_gender_on_request_and_refuses_bad_values(client, pair):
    data = pair.read_bytes()
    plain = client.post("/v1/estimate", files={"file": data}).json()
    assert all("gender" not in face for face in plain["faces"])
    asked = client.post("/v1/estimate?gender=true", files={"file": data})
    assert asked.status_code == 200
    faces = asked.json()["faces"]
    assert [face["age"] for face in faces] == [face["age"] for face in plain["faces"]]
    assert all(face["gender"]["label"] in {"female", "male", UNCERTAIN} for face in faces)
    gated = client.post("/v1/gate?gender=true", files={"file": data}).json()
    assert all("gender" in face for face in gated["faces"])
    for route in ("/v1/estimate", "/v1/gate"):
        refused = client.post(f"{route}?gender=maybe", files={"file": data})
        assert refused.status_code == 422
        assert "gender" in refused.text
    for answer in (plain, asked.json(), gated, client.get("/openapi.json").json()):
        _no_race(_keys(answer))


def test_the_cli_and_the_server_give_the_same_gender(client, pair):
    served = client.post("/v1/estimate?gender=true", files={"file": pair.read_bytes()}).json()
    result = runner.invoke(app, ["predict", str(pair), "--json", "--gender"])
    printed = json.loads(result.stdout)
    assert [f["gender"] for f in served["faces"]] == [f["gender"] for f in printed["faces"]]


def test_ray_rows_carry_gender_columns_and_no_race(pair, astronaut):
    pytest.importorskip("ray")
    from agelens.distributed.actors import EstimatorActor

    plain = EstimatorActor("cydral-v1", False, {})({"path": np.array([str(pair)])})
    asked = EstimatorActor("cydral-v1", False, {}, gender=True)({"path": np.array([str(pair)])})
    assert "gender" not in plain.column_names
    assert {"gender", "gender_probability"} <= set(asked.column_names)
    assert set(asked.column("gender").to_pylist()) <= {"female", "male", UNCERTAIN}
    assert asked.column("age").to_pylist() == plain.column("age").to_pylist()
    _no_race(asked.column_names)


def test_evaluation_figures_by_band_and_race_come_from_the_labels():
    def scored(age: float, label: str, race: str, female: float, answer: str) -> Prediction:
        gender = GenderEstimate(
            answer, max(female, 1 - female), {"female": female, "male": 1 - female}
        )
        face = Face((0, 0, 1, 1), None, [], age, (age, age), "YOUNG", 1.0, {}, gender=gender)
        return Prediction(Sample(Path("x.jpg"), age, gender=label, race=race), face, True)

    figures = gender_figures(
        [
            scored(30, "f", "White", 0.95, "female"),
            scored(30, "female", "Asian", 0.40, "male"),
            scored(8, "M", "Asian", 0.01, "male"),
            scored(45, "female", "Black", 0.55, UNCERTAIN),
            scored(50, "unknown", "Black", 0.9, "female"),  # no label: not counted
        ]
    )
    assert figures["n"] == 4
    assert figures["accuracy"] == 0.75  # the uncertain face's likelier label is right
    assert figures["answered"] == 0.75
    assert figures["answered_accuracy"] == round(2 / 3, 4)
    assert figures["aged_20_plus"]["n"] == 3
    assert figures["per_band"]["0-12"] == {
        "n": 1, "accuracy": 1.0, "answered": 1.0, "answered_accuracy": 1.0
    }  # fmt: skip
    assert figures["by_race"]["Asian"]["accuracy"] == 0.5


def test_the_research_gender_bundle_is_opt_in_by_name_and_says_so(astronaut):
    from agelens.models.bundles import describe_builtin_bundles

    bundle = load_bundle("faceres-deep-gender", task=GENDER)
    assert bundle.license["research_only"] is True
    assert (bundle.folder / "LICENSE").is_file()
    rows = {row["name"]: row for row in describe_builtin_bundles()}
    assert rows["faceres-deep-gender"]["research_only"]
    assert not rows["faceres-deep-gender"]["default"]
    assert rows[DEFAULT_GENDER_BUNDLE]["default"]
    (face,) = AgeEstimator(gender_model="faceres-deep-gender").estimate(astronaut, gender=True)
    assert face.gender is not None and face.gender.label == "female"


def test_serve_refuses_an_age_bundle_as_its_gender_model_before_it_starts(monkeypatch):
    import uvicorn

    started = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: started.append(kwargs))
    # serve hands its settings to worker processes in the environment: restored after.
    for name in ("MODEL", "GENDER_MODEL", "PRECISION", "MAX_UPLOAD_MB", "MAX_CONNECTIONS"):
        monkeypatch.delenv(f"AGELENS_{name}", raising=False)
    monkeypatch.delenv("AGELENS_MAX_CONNECTIONS_PER_CLIENT", raising=False)
    result = runner.invoke(app, ["serve", "--gender-model", "cydral-v1"])
    assert result.exit_code == 2 and "not for gender" in result.output
    assert not started
    assert runner.invoke(app, ["serve", "--gender-model", "faceres-deep-gender"]).exit_code == 0
    assert started
    assert ServerSettings.from_env().gender_model == "faceres-deep-gender"
