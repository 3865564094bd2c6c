"""Dataset readers, content-hash deduplication and the deterministic split, on data made here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agelens import DatasetError
from agelens.data.datasets import content_hash, read_dataset, select_split, split_of, write_split


def make_faces(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    paths = []
    for name in names:
        pixels = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name, "JPEG")
        paths.append(folder / name)
    return paths


def test_utkface_names_give_labels_and_malformed_names_are_reported(tmp_path: Path):
    good = [
        f"{age}_{g}_{r}_2017011{i}.jpg.chip.jpg"
        for i, (age, g, r) in enumerate([(1, 0, 0), (25, 1, 2), (116, 0, 4)])
    ]
    bad = ["24_0_1_20170116220224657 .jpg.chip.jpg", "39_1_20170116174525125.jpg.chip.jpg"]
    make_faces(tmp_path, good + bad)
    dataset = read_dataset(f"utkface:{tmp_path}")
    assert sorted(s.age for s in dataset.samples) == [1, 25, 116]
    by_age = {s.age: s for s in dataset.samples}
    assert (by_age[25].gender, by_age[25].race) == ("female", "Asian")
    assert sorted(dataset.malformed) == sorted(bad)


def test_duplicates_are_dropped_before_splitting(tmp_path: Path):
    paths = make_faces(tmp_path, [f"{20 + i}_0_0_1{i}.jpg.chip.jpg" for i in range(30)])
    shutil.copy(paths[0], tmp_path / "99_0_0_999.jpg.chip.jpg")  # same bytes, other label
    dataset = read_dataset(f"utkface:{tmp_path}")
    parts = {split: select_split(dataset, split) for split in ("train", "val", "test")}
    assert dataset.duplicates == 1
    assert sum(len(part) for part in parts.values()) == 30
    assert len(select_split(dataset, "all")) == 30
    for split, part in parts.items():
        assert all(split_of(content_hash(s.path)) == split for s in part)


def test_split_is_60_20_20_and_stable():
    digests = [f"{i * 2654435761 % 2**32:08x}" + "0" * 32 for i in range(10_000)]
    shares = {
        s: sum(split_of(d) == s for d in digests) / len(digests) for s in ("train", "val", "test")
    }
    assert shares["train"] == pytest.approx(0.6, abs=0.02)
    assert shares["val"] == pytest.approx(0.2, abs=0.02)
    assert split_of("ffffffff" + "0" * 32) == split_of("ffffffff" + "1" * 32)


def test_imfdb_csv(tmp_path: Path):
    make_faces(tmp_path, ["1.jpg", "2.jpg"])
    (tmp_path / "train.csv").write_text("ID,Class\n1.jpg,YOUNG\n2.jpg,OLD\n3.jpg,MIDDLE\n")
    dataset = read_dataset(f"imfdb:{tmp_path}")
    assert [(s.path.name, s.group) for s in dataset.samples] == [
        ("1.jpg", "YOUNG"),
        ("2.jpg", "OLD"),
    ]
    assert dataset.malformed == ["3.jpg"]


def test_generic_csv(tmp_path: Path):
    make_faces(tmp_path / "img", ["a.jpg", "b.jpg"])
    table = tmp_path / "labels.csv"
    table.write_text("path,age,gender\nimg/a.jpg,31,female\nimg/b.jpg,,\n")
    dataset = read_dataset(f"csv:{table}")
    assert [(s.path.name, s.age, s.gender) for s in dataset.samples] == [("a.jpg", 31.0, "female")]
    assert dataset.malformed == ["img/b.jpg"]


@pytest.mark.parametrize(
    "spec", ["utkface", "parquet:/x", "utkface:/no/such/folder", "csv:/no.csv"]
)
def test_bad_specs_are_explained(spec):
    with pytest.raises(DatasetError):
        read_dataset(spec)


def test_folder_per_class(tmp_path: Path):
    make_faces(tmp_path / "YOUNG", ["a.jpg", "b.png"])
    make_faces(tmp_path / "OLD", ["c.jpg"])
    (tmp_path / "OLD" / "notes.txt").write_text("not an image")
    dataset = read_dataset(f"folder:{tmp_path}")
    assert sorted((s.path.name, s.group) for s in dataset.samples) == [
        ("a.jpg", "YOUNG"),
        ("b.png", "YOUNG"),
        ("c.jpg", "OLD"),
    ]
    assert dataset.malformed == ["OLD/notes.txt"]


def test_split_file_names_every_distinct_file_once(tmp_path: Path):
    paths = make_faces(
        tmp_path / "data", [f"{20 + i}_0_0_2017{i:04d}.jpg.chip.jpg" for i in range(30)]
    )
    shutil.copy(paths[0], tmp_path / "data" / "50_1_1_20990000.jpg.chip.jpg")
    dataset = read_dataset(f"utkface:{tmp_path / 'data'}")
    counts = write_split(dataset, tmp_path / "split.json")
    record = json.loads((tmp_path / "split.json").read_text())
    assert record["duplicates_dropped"] == 1 and sum(counts.values()) == 30
    for name, members in record["members"].items():
        assert len(members) == counts[name]
        assert all(split_of(digest) == name for digest, _ in members)
    listed = {path for members in record["members"].values() for _, path in members}
    assert len(listed) == 30


def test_a_csv_may_name_files_anywhere_and_its_split_file_lists_them(tmp_path: Path):
    """Absolute paths, and paths outside the CSV's folder: read, split, and listed as given."""
    paths = make_faces(tmp_path / "elsewhere", [f"face{i}.jpg" for i in range(6)])
    table = tmp_path / "tables" / "labels.csv"
    table.parent.mkdir()
    rows = [f"{path},{30 + i}" for i, path in enumerate(paths[:3])]
    rows += [f"../elsewhere/{path.name},{40 + i}" for i, path in enumerate(paths[3:])]
    table.write_text("path,age\n" + "\n".join(rows) + "\n")
    dataset = read_dataset(f"csv:{table}")
    assert len(dataset.samples) == 6 and dataset.malformed == []
    assert sum(write_split(dataset, tmp_path / "split.json").values()) == 6
    listed = {
        path
        for members in json.loads((tmp_path / "split.json").read_text())["members"].values()
        for _, path in members
    }
    assert {str(p) for p in paths[:3]} <= listed
    assert {f"../elsewhere/{p.name}" for p in paths[3:]} <= listed


def test_a_person_named_in_a_csv_keeps_all_their_photos_in_one_split(tmp_path: Path):
    paths = make_faces(tmp_path, [f"p{i}.jpg" for i in range(40)])
    rows = [f"{path.name},30,,person{i % 4}" for i, path in enumerate(paths)]
    (tmp_path / "labels.csv").write_text("path,age,gender,person\n" + "\n".join(rows) + "\n")
    dataset = read_dataset(f"csv:{tmp_path / 'labels.csv'}")
    splits = {
        split: {s.person for s in select_split(dataset, split)}
        for split in ("train", "val", "test")
    }
    assert sum(len(people) for people in splits.values()) == 4  # each person in one split
    assert set().union(*splits.values()) == {f"person{i}" for i in range(4)}


def test_a_spec_says_whether_its_images_are_crops_or_photos(tmp_path: Path):
    from agelens.data.datasets import is_crops, source_name

    make_faces(tmp_path, ["a.jpg"])
    (tmp_path / "labels.csv").write_text("path,age\na.jpg,30\n")
    spec = f"csv:{tmp_path / 'labels.csv'}"
    assert is_crops(spec, False) is False and is_crops(spec, True) is True
    assert is_crops(f"{spec}#crops", False) is True
    assert is_crops("utkface:data/UTKFace", False) is True
    assert is_crops("utkface:data/UTKFace#photos", True) is False
    assert len(read_dataset(f"{spec}#photos").samples) == 1
    assert source_name(f"{spec}#photos") == tmp_path.name
