"""The commands for your own data: eda, evaluate --report, calibrate, on a tiny dataset."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from agelens.cli.main import app
from agelens.decisions.quality import QualityLimits
from agelens.evaluation.domains import DOMAINS
from agelens.models.bundles import load_bundle

runner = CliRunner()


def test_eda_writes_plots_json_and_html(face_dataset, tmp_path):
    result = runner.invoke(
        app, ["eda", "--data", f"utkface:{face_dataset}", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "eda.json").read_text())
    assert summary["images"] == 90 and summary["duplicates"] == 1
    assert summary["malformed"] == ["not_a_utkface_name.jpg"]
    assert summary["width"]["median"] == 96 and 0.0 <= summary["grey_share"] < 0.1
    assert set(summary["classes"]) == {"31-40", "41-50", "61+"}
    for name in ("sizes", "colour", "brightness", "contrast", "ages", "classes", "samples"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000, name
    page = (tmp_path / "index.html").read_text()
    assert "samples.png" in page and "not_a_utkface_name.jpg" in page
    assert "<th></th>" not in page  # no empty header row


def test_eda_counts_grey_images(tmp_path, face_dataset):
    from PIL import Image

    folder = tmp_path / "data"
    (folder / "OLD").mkdir(parents=True)
    for index, path in enumerate(sorted(face_dataset.glob("*.chip.jpg"))[:10]):
        image = Image.open(path)
        (image.convert("L") if index < 4 else image).save(folder / "OLD" / f"{index}.png")
    result = runner.invoke(
        app, ["eda", "--data", f"folder:{folder}", "--out", str(tmp_path / "r"), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "eda.json").read_text())["grey_share"] == 0.4


def test_evaluate_report_compares_models(face_dataset, tmp_path, fp32_manifest):
    report = tmp_path / "report"
    second = tmp_path / "second"
    second.mkdir()
    manifest = fp32_manifest(name="cydral-copy")
    manifest["gate"] = {"over": 18, "buffer": 3.0, "rule": "lower_bound"}
    (second / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--data",
            f"utkface:{face_dataset}",
            "--split",
            "all",
            "--aligned",
            "--model",
            "cydral-v1",
            "--model",
            str(second),
            "--report",
            str(report),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["model"] for line in lines] == ["cydral-v1", "cydral-copy"]
    first = lines[0]
    assert first["n"] == 90 and 0 <= first["coverage90"] <= 1
    assert first["gate"]["buffer"] == load_bundle().gate_policy(18).buffer
    assert lines[1]["gate"]["buffer"] == 3.0 and lines[1]["gate"]["rule"] == "lower_bound"
    assert set(first["gate"]) >= {"over", "pass_13_17", "pass_25_plus"}
    assert set(first["by_gender"]["groups"]) == {"male", "female"} and "gap" in first["by_race"]
    assert sum(map(sum, first["confusion"]["matrix"])) == 90
    assert json.loads((report / "metrics.json").read_text())[1]["model"] == "cydral-copy"
    page = (report / "index.html").read_text()
    assert "Comparison" in page and "cydral-copy" in page
    assert "Weights fp32, flip TTA on." in page and "MAE: mean absolute error" in page
    # No minors in this data: the gate figures say so rather than plot noise.
    assert first["gate"]["n_13_17"] == 0 and first["gate"]["n_25_plus"] == 90
    assert "too few to judge a gate policy by" in page
    for suffix in ("confusion", "bands", "gate", "most-wrong"):
        assert (report / f"cydral-v1-{suffix}.png").is_file(), suffix


def test_calibrate_writes_intervals_and_gate_into_a_copy(face_dataset, tmp_path):
    out = tmp_path / "calibrated"
    result = runner.invoke(
        app,
        [
            "calibrate",
            "--data",
            f"utkface:{face_dataset}",
            "--split",
            "all",
            "--aligned",
            "--out",
            str(out),
            "--precision",
            "fp32",
        ],
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["precision"] == "fp32"
    # Enough to find the data again, and to tell whether it changed since.
    data = manifest["calibration"]["data"]
    assert data["spec"] == f"utkface:{face_dataset}" and data["files"] == 90
    assert len(data["sha1"]) == 40
    # Fitted on every domain of the suite: each of the 90 faces five times over.
    assert manifest["calibration"]["domains"] == dict.fromkeys(DOMAINS, 90)
    assert manifest["calibration"]["n"] == 450 and "0.9" in manifest["calibration"]["quantiles"]
    assert QualityLimits.from_dict(manifest["quality"]) == QualityLimits()
    # No 13-17-year-olds in these faces: the package's policy is kept, with a warning.
    assert manifest["gate"] == load_bundle().manifest["gate"]
    assert "only 0 people aged 13-17" in " ".join(result.output.split())
    assert load_bundle(out).model_path == load_bundle().model_path  # still the package's


def test_calibrate_will_not_write_into_another_package(face_dataset):
    result = runner.invoke(app, ["calibrate", "--data", f"utkface:{face_dataset}", "--aligned"])
    assert result.exit_code == 2 and "--out" in result.output


def test_calibrate_rejects_a_precision_the_bundle_lacks(face_dataset, tmp_path):
    result = runner.invoke(
        app,
        [
            "calibrate",
            "--data",
            f"utkface:{face_dataset}",
            "--aligned",
            "--out",
            str(tmp_path),
            "--precision",
            "fp16",
        ],
    )
    assert result.exit_code == 2 and "precision must be one of" in result.output


def test_train_needs_a_known_task(face_dataset, tmp_path):
    result = runner.invoke(
        app, ["train", "--data", f"utkface:{face_dataset}", "--out", str(tmp_path), "--task", "x"]
    )
    assert result.exit_code == 2


def test_train_reports_unknown_group_labels(tmp_path, face_dataset):
    folder = tmp_path / "data"
    for label in ("KIDS", "ADULTS"):
        (folder / label).mkdir(parents=True)
        for path in sorted(face_dataset.glob("*.chip.jpg"))[:30]:
            shutil.copy(path, folder / label / f"{label}-{path.name}")
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            f"folder:{folder}",
            "--out",
            str(tmp_path / "m"),
            "--task",
            "groups",
            "--mode",
            "head",
            "--epochs",
            "1",
            "--cache",
            str(tmp_path / "cache"),
        ],
    )
    assert result.exit_code == 2 and "ADULTS" in result.output


def test_most_wrong_captions_sit_under_their_face_clear_of_the_next_row():
    import numpy as np

    from agelens.evaluation.plots import grid_figure

    faces = [np.full((96, 96, 3), 100 + i, dtype=np.uint8) for i in range(16)]
    captions = [f"true {i}\npred {i + 20} YOUNG" for i in range(16)]
    figure = grid_figure(faces, captions, "Most wrong")
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    axes = figure.axes
    for index, axis in enumerate(axes):
        caption = axis.texts[0].get_window_extent(renderer)
        image = axis.images[0].get_window_extent(renderer)
        assert caption.y1 <= image.y0 + 1  # under its own face
        below = axes[index + 8].images[0].get_window_extent(renderer) if index < 8 else None
        if below is not None:
            assert caption.y0 >= below.y1  # and clear of the face under it


def test_calibrate_checks_its_domains(face_dataset, tmp_path):
    spec = f"utkface:{face_dataset}"
    unknown = runner.invoke(
        app, ["calibrate", "--data", spec, "--aligned", "--domains", "fax", "--out", str(tmp_path)]
    )
    assert unknown.exit_code == 2 and "unknown domain 'fax'" in unknown.output
    photos = runner.invoke(app, ["calibrate", "--data", spec, "--out", str(tmp_path)])
    assert photos.exit_code == 2 and "--domains clean" in " ".join(photos.output.split())
    clean = runner.invoke(
        app,
        [
            "calibrate",
            "--data",
            spec,
            "--split",
            "all",
            "--domains",
            "clean",
            "--out",
            str(tmp_path),
        ],
    )
    assert clean.exit_code == 0, clean.output
    record = json.loads((tmp_path / "manifest.json").read_text())["calibration"]
    assert record["domains"] == {"clean": 90}


def test_calibrate_draws_each_domain_again_and_pools_the_draws(face_dataset, tmp_path):
    out = tmp_path / "drawn"
    arguments = ["calibrate", "--data", f"utkface:{face_dataset}", "--split", "all"]
    result = runner.invoke(app, [*arguments, "--aligned", "--draws", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "manifest.json").read_text())["calibration"]
    # The clean picture is the same every time; each other domain is drawn twice.
    assert record["draws"] == 2
    assert record["domains"] == {name: 90 if name == "clean" else 180 for name in DOMAINS}
    refused = runner.invoke(app, [*arguments, "--aligned", "--draws", "0", "--out", str(out)])
    assert refused.exit_code == 2


def test_calibrate_on_several_collections_fits_each_as_a_domain(face_dataset, tmp_path):
    """Each --data is a domain named by its source; a CSV may name files by absolute path."""
    table = tmp_path / "second-set" / "labels.csv"
    table.parent.mkdir()
    faces = sorted(face_dataset.glob("*.chip.jpg"))
    rows = [f"{path},{path.name.split('_')[0]}" for path in faces]
    table.write_text("path,age\n" + "\n".join(rows) + "\n")
    out = tmp_path / "fitted"
    arguments = ["calibrate", "--data", f"utkface:{face_dataset}", "--data", f"csv:{table}"]
    suite = runner.invoke(app, [*arguments, "--domains", "print", "--out", str(out)])
    assert suite.exit_code == 2 and "--domains clean" in " ".join(suite.output.split())
    result = runner.invoke(app, [*arguments, "--split", "all", "--aligned", "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "manifest.json").read_text())["calibration"]
    assert record["domains"] == {"utkface": 90, "second-set": 90}
    assert [data["spec"] for data in record["data"]] == [arguments[2], arguments[4]]
