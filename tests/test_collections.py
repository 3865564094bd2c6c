"""The collection tool on a repository the test makes: build, count and hash, dedup."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agelens.data.near_duplicates import fingerprints, same_pictures
from tools import face_collections as tool


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def repository(tmp_path_factory, astronaut, grace_hopper_path) -> tuple[Path, str]:
    """A clone holding 6 face images in folders named by age, one a byte-identical copy,
    and a README that is not an image; the commit that holds them."""
    work = tmp_path_factory.mktemp("repo")
    hopper = Image.open(grace_hopper_path).convert("RGB")
    faces = {
        "31": Image.fromarray(astronaut).crop((150, 40, 330, 220)),
        "77": hopper.crop((100, 70, 420, 390)),
    }
    for age, face in faces.items():
        folder = work / "set" / age
        folder.mkdir(parents=True)
        for index, angle in enumerate((0, 8, -8)):
            face.rotate(angle).resize((120, 120)).save(folder / f"shot {index}.png")
    (work / "set" / "31" / "copy.png").write_bytes(
        (work / "set" / "31" / "shot 0.png").read_bytes()
    )
    (work / "set" / "README.md").write_text("faces by age\n")
    _git(work, "init", "-q")
    _git(work, "add", ".")
    _git(work, "commit", "-q", "-m", "faces")
    return work / ".git", _git(work, "rev-parse", "HEAD")


def _entry(commit: str, files: int, sha1: str) -> dict:
    return {"commit": commit, "folder": "set", "labels": "age-folder", "files": files, "sha1": sha1}


def test_build_writes_labels_and_checks_count_and_hash(repository, tmp_path):
    git_dir, commit = repository
    with pytest.raises(tool.CollectionError, match="built 6 distinct files with sha1 ") as error:
        tool.build("faces", _entry(commit, 6, "0" * 40), git_dir, tmp_path)
    sha1 = str(error.value).split("sha1 ")[1].split(",")[0]
    record = tool.build("faces", _entry(commit, 6, sha1), git_dir, tmp_path)
    assert (record["files"], record["sha1"]) == (6, sha1)
    rows = list(csv.DictReader((tmp_path / "faces" / "labels.csv").open()))
    assert len(rows) == 7  # the copy is listed; the hash counts distinct files
    assert sorted({row["age"] for row in rows}) == ["31", "77"]
    assert all((tmp_path / "faces" / row["path"]).is_file() for row in rows)


def test_build_from_a_clone_without_the_commit_says_what_to_do(repository, tmp_path):
    git_dir, _ = repository
    with pytest.raises(tool.CollectionError, match="clone the repository"):
        tool.build("faces", _entry("f" * 40, 6, ""), git_dir, tmp_path)


def test_dedup_drops_copies_of_earlier_sets_and_keeps_other_pictures(repository, tmp_path):
    source = _built(repository, tmp_path)
    first = next(csv.DictReader((source / "labels.csv").open()))
    later = tmp_path / "later"
    (later / "images").mkdir(parents=True)
    # A recompressed, resized copy of one of its pictures, and a picture of its own.
    copy = Image.open(source / first["path"]).resize((90, 90))
    copy.save(later / "images" / "a.jpg", quality=80)
    Image.fromarray(np.full((90, 90, 3), 200, np.uint8)).save(later / "images" / "b.png")
    (later / "labels.csv").write_text("path,age,gender\nimages/a.jpg,31,\nimages/b.png,40,\n")
    summary = tool.dedup(["faces", "later"], tmp_path, [])
    assert summary["faces"]["kept"] == 6
    assert list(summary["faces"]["dropped"].values()) == ["same bytes"]
    assert summary["later"] == {"files": 2, "kept": 1, "dropped": {"images/a.jpg": "faces"}}
    kept = list(csv.DictReader((later / "distinct.csv").open()))
    assert [row["path"] for row in kept] == ["images/b.png"]
    assert json.loads((later / "duplicates.json").read_text())["kept"] == 1


def _built(repository: tuple[Path, str], out: Path) -> Path:
    """The collection written under ``out``; its hash check fails (no hash is given) after
    the files are written, and the files are what these tests need."""
    git_dir, commit = repository
    with pytest.raises(tool.CollectionError, match="the manifest says 6"):
        tool.build("faces", _entry(commit, 6, ""), git_dir, out)
    return out / "faces"


def test_distinct_faces_are_not_the_same_picture(astronaut, grace_hopper_path, tmp_path):
    hopper = Image.open(grace_hopper_path).convert("RGB").crop((100, 70, 420, 390))
    Image.fromarray(astronaut).crop((150, 40, 330, 220)).resize((100, 100)).save(tmp_path / "a.png")
    hopper.resize((100, 100)).save(tmp_path / "b.png")
    hopper.resize((64, 64)).save(tmp_path / "c.jpg", quality=60)
    prints = fingerprints([tmp_path / "a.png", tmp_path / "b.png", tmp_path / "c.jpg"])
    assert same_pictures(prints, prints) == [(0, 0), (1, 1), (1, 2), (2, 1), (2, 2)]


def test_the_command_line_refuses_an_unknown_collection(tmp_path, capsys):
    assert tool.main(["build", "nothing", "--git-dir", str(tmp_path)]) == 1
    assert "no collection 'nothing'" in capsys.readouterr().err
