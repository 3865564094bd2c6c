"""The collection tool on a repository the test makes: build, count and hash, dedup."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agelens.data.datasets import content_hash, read_dataset, select_split, split_key, split_of
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
    return {
        "commit": commit,
        "folders": ["set"],
        "labels": "age-folder",
        "files": files,
        "sha1": sha1,
    }


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


def _commit_all(work: Path) -> tuple[Path, str]:
    _git(work, "init", "-q")
    _git(work, "add", ".")
    _git(work, "commit", "-q", "-m", "faces")
    return work / ".git", _git(work, "rev-parse", "HEAD")


def _faces(astronaut, grace_hopper_path) -> list[Image.Image]:
    """Five distinct pictures: two people at several angles and sizes."""
    hopper = Image.open(grace_hopper_path).convert("RGB").crop((100, 70, 420, 390))
    face = Image.fromarray(astronaut).crop((150, 40, 330, 220))
    return [face.resize((120, 120)), hopper.resize((120, 120))] + [
        picture.rotate(angle).resize((110, 110))
        for picture, angle in ((face, 25), (hopper, -25), (hopper, 60))
    ]


def _aaf_entry(commit: str, reserved: list[str]) -> dict:
    names = sorted(reserved)
    return {
        "commit": commit,
        "folders": ["photos"],
        "labels": "age-in-name",
        "name_pattern": r"\d{5}A(\d{2})\.jpg",
        "genders": {"files": ["sets/train.txt"], "codes": {"0": "female", "1": "male"}},
        "reserved": {
            "files": len(names),
            "sha1": hashlib.sha1("\n".join(names).encode()).hexdigest(),
        },
        "files": 0,
        "sha1": "",
    }


def test_reserved_photos_and_their_copies_never_enter(astronaut, grace_hopper_path, tmp_path):
    work = tmp_path / "repo"
    (work / "photos").mkdir(parents=True)
    (work / "sets").mkdir()
    faces = _faces(astronaut, grace_hopper_path)
    for index, face in enumerate(faces[:4]):
        face.save(work / "photos" / f"0000{index}A{20 + index}.jpg", quality=95)
    # A byte-identical copy and a re-encoded copy of reserved photos, under other names.
    (work / "photos" / "00005A30.jpg").write_bytes((work / "photos" / "00000A20.jpg").read_bytes())
    faces[1].resize((100, 100)).save(work / "photos" / "00006A31.jpg", quality=70)
    faces[4].save(work / "photos" / "00007A45.jpg")
    (work / "sets" / "train.txt").write_text("00002A22.jpg 0\n00007A45.jpg 1\n")
    git_dir, commit = _commit_all(work)
    reserved = ["00000A20.jpg", "00001A21.jpg"]
    listing = tmp_path / "reserved.txt"
    listing.write_text("\n".join(reserved) + "\n")
    entry = _aaf_entry(commit, reserved)
    with pytest.raises(tool.CollectionError, match="give --reserved"):
        tool.build("aaf", entry, git_dir, tmp_path / "out")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("00000A20.jpg\n")
    with pytest.raises(tool.CollectionError, match="not the reserved list"):
        tool.build("aaf", entry, git_dir, tmp_path / "out", wrong)
    with pytest.raises(tool.CollectionError, match="built 3 distinct files"):
        tool.build("aaf", entry, git_dir, tmp_path / "out", listing)
    rows = list(csv.DictReader((tmp_path / "out" / "aaf" / "labels.csv").open()))
    assert {Path(row["path"]).name: (row["age"], row["gender"]) for row in rows} == {
        "00002A22.jpg": ("22", "female"),
        "00003A23.jpg": ("23", ""),
        "00007A45.jpg": ("45", "male"),
    }
    written = {p.name for p in (tmp_path / "out" / "aaf" / "images").rglob("*.jpg")}
    assert written == {"00002A22.jpg", "00003A23.jpg", "00007A45.jpg"}
    # A reserved photo that finds its way into a built folder stops the check, named.
    (tmp_path / "out" / "aaf" / "images" / "photos" / "00001A21.jpg").write_bytes(b"x")
    with pytest.raises(tool.CollectionError, match=r"00001A21\.jpg is a reserved photo"):
        tool.check("aaf", entry, tmp_path / "out" / "aaf", frozenset(reserved))


def test_a_table_collection_reads_age_gender_and_person_and_no_ethnicity(
    astronaut, grace_hopper_path, tmp_path
):
    work = tmp_path / "repo"
    for folder in ("neutral", "smiling"):
        (work / "inst" / folder).mkdir(parents=True)
    faces = _faces(astronaut, grace_hopper_path)
    faces[0].save(work / "inst" / "neutral" / "001_03.jpg")
    faces[2].save(work / "inst" / "smiling" / "001_08.jpg")
    faces[1].save(work / "inst" / "neutral" / "002_03.jpg")
    faces[3].save(work / "inst" / "neutral" / "003_03.jpg")
    (work / "inst" / "neutral" / "._001_03.jpg").write_bytes(b"\x00\x05\x16\x07 mac")
    (work / "info.csv").write_text(
        "face_id,face_age,face_gender,face_eth\n001,24,Female,white\n002,NA,male,black\n"
        "003,38,male,east_asian\n"
    )
    git_dir, commit = _commit_all(work)
    entry = {
        "commit": commit,
        "folders": ["inst/neutral", "inst/smiling"],
        "labels": "table",
        "table": {"file": "info.csv", "id": "face_id", "age": "face_age", "gender": "face_gender"},
        "person_pattern": r"(\d{3})_",
        "files": 3,
        "sha1": "",
    }
    with pytest.raises(tool.CollectionError, match="built 3 distinct files"):
        tool.build("lab", entry, git_dir, tmp_path / "out")
    table = tmp_path / "out" / "lab" / "labels.csv"
    assert table.read_text().splitlines() == [
        "path,age,gender,person",
        "images/neutral/001_03.jpg,24,female,001",
        "images/neutral/003_03.jpg,38,male,003",
        "images/smiling/001_08.jpg,24,female,001",
    ]
    summary = tool.dedup(["lab"], tmp_path / "out", [])
    assert summary["lab"]["kept"] == 3  # one person's two photos are not copies
    both = [s for s in select_split(read_dataset(f"csv:{table}"), "all") if s.person == "001"]
    assert len(both) == 2
    assert len({split_of(split_key(s, content_hash(s.path))) for s in both}) == 1
