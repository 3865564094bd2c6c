"""The ``agelens`` command as a user runs it: output, exit codes, and clear errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from agelens.cli.main import app
from agelens.progress import LinesProgress

runner = CliRunner()


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_help_on_every_command():
    commands = [
        [],
        *(
            [name]
            for name in (
                "predict",
                "gate",
                "verify",
                "video",
                "models",
                "evaluate",
                "serve",
                "eda",
                "train",
                "calibrate",
            )
        ),
    ]
    assert {command.name for command in typer.main.get_command(app).commands.values()} == {
        name for (name,) in commands[1:]
    }
    for command in commands:
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output
        narrow = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "80"}, terminal_width=80)
        assert "…" not in narrow.output, f"{command}: an option name is cut at 80 columns"
        # A flag shows no "<bool>", a repeatable option no "<list[str]>"; -h is --help.
        assert "<bool>" not in narrow.output and "<list[" not in narrow.output, command
        assert runner.invoke(app, [*command, "-h"]).output == result.output


def test_predict_json_over_a_folder(photos: Path):
    result = runner.invoke(app, ["predict", str(photos), "--json"])
    assert result.exit_code == 0, result.output
    records = {Path(r["image"]).name: r for r in json_lines(result.stdout)}
    assert set(records) == {"astronaut.png", "hopper.jpg", "wall.jpg"}
    (face,) = records["astronaut.png"]["faces"]
    expected = {"box", "score", "landmarks", "age", "interval", "label", "group", "groups"}
    assert set(face) == expected | {"quality"}
    assert set(face["quality"]) == {
        "eye_distance",
        "sharpness",
        "brightness",
        "clipped",
        "yaw",
        "pitch",
        "roll",
        "colour",
    }
    assert 30 <= face["age"] <= 55 and len(face["box"]) == 4 and len(face["landmarks"]) == 5
    assert face["interval"][0] <= face["age"] <= face["interval"][1]
    assert set(face["group"]) == {"label", "probability", "age_group"}
    # One meaning of "group": the most likely one; the age's own group is beside it.
    assert face["group"]["label"] == max(face["groups"], key=face["groups"].get)
    hopper = records["hopper.jpg"]["faces"][0]
    assert hopper["age"] >= 60
    # At the default network's top (80), the interval is open above and the JSON says so.
    assert hopper["ceiling"] == 80 and hopper["label"].endswith("-80+)")
    # Whether the label's "80+" stands for the age itself, or only the interval's top.
    assert hopper["at_ceiling"] == hopper["label"].startswith("80+")
    assert records["wall.jpg"] == {"image": str(photos / "wall.jpg"), "faces": [], "error": None}


def test_predict_table_and_annotated_copies(photos: Path, tmp_path: Path):
    result = runner.invoke(
        app, ["predict", str(photos / "astronaut.png"), "--annotate", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "YOUNG" in result.output or "MIDDLE" in result.output
    annotated = np.asarray(Image.open(tmp_path / "astronaut.png"))
    assert annotated.shape == (512, 512, 3)
    assert (
        np.abs(annotated.astype(int) - np.asarray(Image.open(photos / "astronaut.png"))) > 0
    ).any()


def test_bad_files_get_an_error_and_the_run_goes_on(photos: Path, tmp_path: Path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.jpg").write_text("hello")
    args = [
        "predict",
        str(tmp_path / "empty.jpg"),
        str(tmp_path / "notes.jpg"),
        str(photos / "hopper.jpg"),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    records = json_lines(result.stdout)
    assert [r["error"] is not None for r in records] == [True, True, False]
    assert "empty" in records[0]["error"] and "not an image" in records[1]["error"]
    assert "Traceback" not in result.output


def test_predict_bad_options_are_usage_errors(photos: Path):
    result = runner.invoke(app, ["predict", str(photos), "--groups", "teens"])
    assert result.exit_code == 2 and "unknown group scheme" in result.output
    result = runner.invoke(app, ["predict", str(photos), "--model", "nope"])
    assert result.exit_code == 2 and "no model bundle" in result.output
    result = runner.invoke(app, ["predict", str(photos), "--detect-size", "10"])
    assert result.exit_code == 2 and "detect-size" in result.output
    result = runner.invoke(app, ["predict", str(photos), "--precision", "fp16"])
    assert result.exit_code == 2 and "precision must be one of" in result.output


def test_gate_exit_codes(photos: Path, tmp_path: Path):
    astronaut = str(photos / "astronaut.png")
    passed = runner.invoke(app, ["gate", astronaut, "--over", "18", "--buffer", "0", "--json"])
    assert passed.exit_code == 0 and json_lines(passed.stdout)[0]["decision"] == "pass"
    assert json_lines(passed.stdout)[0]["faces"][0]["reasons"] == []
    refer = runner.invoke(app, ["gate", astronaut, "--over", "70", "--buffer", "20"])
    assert refer.exit_code == 3 and "REFER: check an ID" in refer.output
    words = " ".join(refer.output.split())
    assert "-> refer its estimated age is" in words and ", under 90" in words
    # A scanned print's grain: referred whatever the age, and the reason is given.
    grainy = runner.invoke(app, ["gate", str(photos / "hopper.jpg"), "--json"])
    record = json_lines(grainy.stdout)[0]
    assert grainy.exit_code == 3 and record["faces"][0]["reasons"][0].startswith("face grainy")
    nobody = runner.invoke(app, ["gate", str(photos / "wall.jpg")])
    assert nobody.exit_code == 4 and "NO_FACE" in nobody.output
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    broken = runner.invoke(app, ["gate", str(tmp_path / "bad.png")])
    assert broken.exit_code == 1 and "error" in broken.output and "Traceback" not in broken.output


def test_models_lists_licences():
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    defaults = {row["task"]: row for row in json.loads(result.stdout) if row["default"]}
    assert defaults["age"]["name"] == "cydral-v1" and defaults["age"]["licence"] == "CC0-1.0"
    assert defaults["face-detection"]["licence"] == "BSD-3-Clause"
    assert not any(row["research_only"] for row in defaults.values())


def test_models_read_at_80_columns_with_licence_and_provenance():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "80"}, terminal_width=80)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("cydral-v1 (default)") and "CC0-1.0" in line for line in lines)
    research = [line for line in lines if "research use only" in line]
    assert research and all("(default)" not in line for line in research)
    assert any(line.strip() == "authors: Cydral Technology" for line in lines)
    assert not any(" from trained" in line for line in lines)


def test_evaluate_a_csv_dataset(photos: Path, tmp_path: Path):
    table = tmp_path / "ages.csv"
    table.write_text(
        f"path,age,group\n{photos / 'astronaut.png'},41,MIDDLE\n{photos / 'hopper.jpg'},77,OLD\n"
        f"{photos / 'wall.jpg'},5,CHILD\n"
    )
    result = runner.invoke(app, ["evaluate", "--data", f"csv:{table}", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split"] == "all" and 0 < report["mae"] < 40 and 0 <= report["cs5"] <= 1
    # The wall has no face: it counts under no_face only, never in MAE, bands or groups.
    assert (report["n"], report["no_face"], report["scored"]) == (3, 1, 2)
    assert set(report["per_band"]) <= {"25-39", "40-59", "60+"}
    assert sum(map(sum, report["confusion"]["matrix"])) == 2


def test_train_rejects_an_unknown_device_before_reading_data(tmp_path: Path):
    result = runner.invoke(
        app, ["train", "--data", "utkface:nowhere", "--out", str(tmp_path), "--device", "gpu"]
    )
    assert result.exit_code == 2 and "unknown device" in result.output


def test_train_takes_a_teacher_only_in_finetune_mode_and_by_a_name_it_knows(tmp_path: Path):
    args = ["train", "--data", "utkface:nowhere", "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--teacher", "agelens-utk-v1", "--mode", "head"])
    assert result.exit_code == 2 and "--teacher" in result.output
    result = runner.invoke(app, [*args, "--teacher", "no-such-bundle"])
    assert result.exit_code != 0 and "no-such-bundle" in result.output
    assert "Traceback" not in result.output


def test_the_confusion_matrix_counts_the_group_the_json_reports(photos: Path, tmp_path: Path):
    predicted = json_lines(runner.invoke(app, ["predict", str(photos), "--json"]).stdout)
    groups = {Path(r["image"]).name: r["faces"][0]["group"] for r in predicted if r["faces"]}
    table = tmp_path / "groups.csv"
    table.write_text(f"path,group\n{photos / 'astronaut.png'},MIDDLE\n")
    result = runner.invoke(app, ["evaluate", "--data", f"csv:{table}", "--json"])
    confusion = json.loads(result.stdout)["confusion"]
    row = confusion["matrix"][confusion["labels"].index("MIDDLE")]
    assert confusion["labels"][row.index(1)] == groups["astronaut.png"]["label"]
    # The astronaut's wide distribution: most likely YOUNG, though her age is MIDDLE's.
    assert groups["astronaut.png"] == {**groups["astronaut.png"], "age_group": "MIDDLE"}
    wide = {"COLUMNS": "200"}
    table_text = runner.invoke(app, ["predict", str(photos / "astronaut.png")], env=wide).stdout
    assert f"{groups['astronaut.png']['label']}" in table_text and "age in MIDDLE" in table_text


def test_evaluate_limit_is_a_seeded_sample_not_the_first_names(face_dataset: Path):
    def run(*extra: str) -> dict:
        arguments = ["evaluate", "--data", f"utkface:{face_dataset}", "--split", "all"]
        result = runner.invoke(app, [*arguments, "--aligned", "--limit", "12", "--json", *extra])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    first, again, other = run(), run(), run("--seed", "3")
    # By name, the first 12 would all be the younger face (ages 39-45).
    assert {"25-39", "40-59"} & set(first["per_band"]) and "60+" in first["per_band"]
    assert first["sample"] == {"limit": 12, "seed": 0} and other["sample"]["seed"] == 3
    assert first["mae"] == again["mae"] and first["n"] == 12


def test_evaluate_bad_spec():
    result = runner.invoke(app, ["evaluate", "--data", "nowhere"])
    assert result.exit_code == 2 and "KIND:PATH" in result.output


def test_messages_keep_their_square_brackets(tmp_path: Path, capsys):
    odd = tmp_path / "photo[1].jpg"
    odd.write_text("not a photo")
    result = runner.invoke(app, ["predict", str(odd)])
    assert result.exit_code == 1 and "photo[1].jpg" in result.output
    from agelens.cli.common import fail

    with pytest.raises(typer.Exit):
        raise fail("install it: pip install 'agelens[server]'")
    assert "agelens[server]" in capsys.readouterr().err


def test_version():
    from agelens import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"agelens {__version__}"


def test_distribution_without_json_shows_every_group(photos: Path):
    result = runner.invoke(
        app, ["predict", str(photos / "astronaut.png"), "--distribution"], terminal_width=200
    )
    assert result.exit_code == 0
    assert "every group" in result.output and "CHILD" in result.output


def test_an_animated_gif_is_refused_as_the_server_refuses_it(tmp_path: Path):
    frames = [Image.new("RGB", (64, 64), colour) for colour in ("red", "green")]
    gif = tmp_path / "moving.gif"
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    result = runner.invoke(app, ["predict", str(gif), "--json"])
    assert result.exit_code == 1
    record = json.loads(result.stdout.splitlines()[0])
    assert record["faces"] == [] and "animated" in record["error"]


@pytest.mark.parametrize(
    "arguments",
    [
        ["serve", "--port", "99999"],
        ["serve", "--max-upload-mb", "nan"],
        ["serve", "--max-upload-mb", "-1"],
        ["gate", "x.jpg", "--over", "-5"],
        ["gate", "x.jpg", "--buffer", "-100"],
        ["gate", "x.jpg", "--over", "nan"],
    ],
)
def test_numeric_options_outside_sense_are_refused(arguments):
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_gate_warns_when_a_fitted_policy_does_not_hold(tmp_path: Path, fp32_manifest, photos):
    manifest = fp32_manifest()
    manifest["gate"] = {
        **manifest["gate"],
        "holds": False,
        "val_pass_13_17": 0.058,
        "max_minor_pass": 0.02,
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["gate", str(photos / "astronaut.png"), "-m", str(tmp_path)])
    words = " ".join(result.output.split())
    assert "lets 5.8% of 13-17-year-olds pass in its worst domain" in words
    # A rate it does not have is never stated: no face passes, and the reason says why.
    assert result.exit_code == 3 and "has no policy that holds" in words
    for over in (13, 18, 25):
        answer = runner.invoke(
            app, ["gate", str(photos / "astronaut.png"), "-m", str(tmp_path), "--over", str(over)]
        )
        assert answer.exit_code == 3
    quiet = runner.invoke(
        app, ["gate", str(photos / "astronaut.png"), "-m", str(tmp_path), "--buffer", "0"]
    )
    assert "warning" not in quiet.output and quiet.exit_code == 0


def test_annotated_labels_of_close_faces_never_overlap(astronaut):
    from agelens.annotate import annotate, place_labels
    from agelens.estimator import AgeEstimator

    face = AgeEstimator().estimate(astronaut)[0]
    x1, y1, x2, y2 = face.box
    # Three faces side by side, closer than a label is wide.
    shifted = [replace(face, box=(x1 + dx, y1, x2 + dx, y2)) for dx in (-30.0, 0.0, 30.0)]
    widths = [160.0] * 3
    spots = place_labels([f.box for f in shifted], widths, 20.0, (512, 512))
    found = [s for s in spots if s is not None]
    for i, a in enumerate(found):
        for b in found[i + 1 :]:
            assert not (
                a[0] < b[0] + b[2]
                and b[0] < a[0] + a[2]
                and a[1] < b[1] + b[3]
                and b[1] < a[1] + a[3]
            ), (a, b)
    assert annotate(astronaut, shifted).size == (512, 512)


def test_progress_is_plain_lines_where_stderr_is_no_terminal(monkeypatch, capsys):
    """Under ``nohup ... > log`` the log shows done/total every few seconds; a short job
    prints nothing."""
    from agelens.cli import common

    with common.progress_bar(20) as progress:
        task = progress.add_task("Quick", total=20)
        for _ in range(20):
            progress.advance(task)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(LinesProgress, "EVERY_S", 0.0)
    with common.progress_bar(20) as progress:
        task = progress.add_task("Reading faces", total=20)
        for _ in range(20):
            progress.advance(task)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 20 and lines[0].startswith("Reading faces: 1/20 (")
    assert lines[-1].startswith("Reading faces: 20/20 (")


def test_the_chip_size_follows_the_base_unless_every_layer_is_trained(monkeypatch, tmp_path):
    from agelens.training import job

    seen = {}

    def fake_run(options, **_):
        seen["size"] = options.size
        return {"metrics": {}}

    monkeypatch.setattr(job, "run", fake_run)
    args = ["train", "--data", "utkface:nowhere", "--out", str(tmp_path)]
    for base, size in (("agelens-research-v2", 224), ("cydral-v1", 64)):
        result = runner.invoke(app, [*args, "--base", base, "--mode", "head"])
        assert result.exit_code == 0, result.output
        assert seen["size"] == size
    finetuned = runner.invoke(app, [*args, "--base", "agelens-research-v2", "--size", "64"])
    assert finetuned.exit_code == 0 and seen["size"] == 64  # every layer trained: any size
    refused = runner.invoke(
        app, [*args, "--base", "agelens-research-v2", "--mode", "head", "--size", "64"]
    )
    words = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "not agelens-research-v2's input size, 224 px" in words
