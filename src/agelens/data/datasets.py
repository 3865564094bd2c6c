"""Labelled face datasets: readers, content-hash deduplication, and the deterministic split.

A dataset is named by a spec: ``utkface:DIR``, ``imfdb:DIR`` (a folder with
``train.csv`` of ``ID,Class`` beside its images), ``csv:FILE`` (columns ``path``,
relative to the CSV's folder or absolute, and ``age`` and/or ``group``, optional ``gender``,
``race`` and ``person``) or ``folder:DIR`` (one sub-folder of images per class, named by the class).
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agelens import strict_json
from agelens.errors import DatasetError

Split = Literal["train", "val", "test", "all"]
SPLITS: tuple[Split, ...] = ("train", "val", "test", "all")

_UTKFACE_NAME = re.compile(r"(\d{1,3})_([01])_([0-4])_\d+\.jpg\.chip\.jpg")
UTKFACE_GENDERS = ("male", "female")
UTKFACE_RACES = ("White", "Black", "Asian", "Indian", "Others")


@dataclass(frozen=True, slots=True)
class Sample:
    """One labelled image; ``age`` in years and/or ``group`` label, plus optional demographics."""

    path: Path
    age: float | None = None
    group: str | None = None
    gender: str | None = None
    race: str | None = None
    #: Who the photo shows, where a collection says: every photo of one person falls in
    #: one split, so a model is never checked on a face it saw in another photo.
    person: str | None = None


@dataclass(slots=True)
class Dataset:
    """Samples of one source, and the files that could not be read as samples."""

    kind: str
    root: Path
    samples: list[Sample]
    malformed: list[str] = field(default_factory=list)
    duplicates: int = 0


def read_utkface(folder: Path) -> Dataset:
    """Labels from names ``age_gender_race_timestamp.jpg.chip.jpg``; other names are malformed."""
    samples, malformed = [], []
    for path in sorted(_require_dir(folder).iterdir()):
        if not path.is_file():
            continue
        match = _UTKFACE_NAME.fullmatch(path.name)
        if not match:
            malformed.append(path.name)
            continue
        age, gender, race = (int(value) for value in match.groups())
        samples.append(Sample(path, float(age), None, UTKFACE_GENDERS[gender], UTKFACE_RACES[race]))
    return Dataset("utkface", folder, samples, malformed)


def read_imfdb(folder: Path) -> Dataset:
    """The Indian-actors set: ``train.csv`` with ``ID,Class`` (YOUNG, MIDDLE, OLD)."""
    table = _require_dir(folder) / "train.csv"
    rows = _read_rows(table, required=("ID", "Class"))
    samples, malformed = [], []
    for row in rows:
        path = folder / row["ID"]
        if path.is_file() and row["Class"]:
            samples.append(Sample(path, group=row["Class"].strip().upper()))
        else:
            malformed.append(row["ID"])
    return Dataset("imfdb", folder, samples, malformed)


def read_csv(table: Path) -> Dataset:
    """Generic CSV: ``path`` plus ``age`` and/or ``group``; optional ``gender``, ``race`` and
    ``person``."""
    rows = _read_rows(table, required=("path",))
    if rows and "age" not in rows[0] and "group" not in rows[0]:
        raise DatasetError(f"{table}: needs an 'age' or a 'group' column")
    samples, malformed = [], []
    for row in rows:
        path = table.parent / row["path"]
        try:
            age = float(row["age"]) if row.get("age") else None
        except ValueError:
            age = None
        group = row.get("group") or None
        if not path.is_file() or (age is None and group is None):
            malformed.append(row["path"])
            continue
        samples.append(
            Sample(
                path,
                age,
                group,
                row.get("gender") or None,
                row.get("race") or None,
                row.get("person") or None,
            )
        )
    return Dataset("csv", table, samples, malformed)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def read_class_folders(folder: Path) -> Dataset:
    """One sub-folder per class (``DIR/YOUNG/*.jpg``, ``DIR/OLD/*.jpg``); other files skipped."""
    samples, malformed = [], []
    for class_dir in sorted(p for p in _require_dir(folder).iterdir() if p.is_dir()):
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file():
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(path, group=class_dir.name))
            else:
                malformed.append(str(path.relative_to(folder)))
    if not samples:
        raise DatasetError(f"{folder}: no images in class sub-folders")
    return Dataset("folder", folder, samples, malformed)


_READERS = {
    "utkface": read_utkface,
    "imfdb": read_imfdb,
    "csv": read_csv,
    "folder": read_class_folders,
}


def read_dataset(spec: str) -> Dataset:
    """Read a dataset from a spec such as ``utkface:/data/UTKFace`` (``#crops`` or
    ``#photos`` at its end says what its images are: :func:`is_crops`)."""
    kind, _, location = _layout(spec)[0].partition(":")
    if kind not in _READERS or not location:
        raise DatasetError(
            f"dataset spec {spec!r} must be KIND:PATH with KIND one of {', '.join(_READERS)}"
        )
    return _READERS[kind](Path(location).expanduser())


#: Dataset kinds whose images are aligned face crops by their nature.
CROP_KINDS = ("utkface", "imfdb")
#: A spec may end in one of these to say what its images are, whatever its kind.
LAYOUT_SUFFIXES = {"#crops": True, "#photos": False}


def _layout(spec: str) -> tuple[str, bool | None]:
    """The spec without its layout suffix, and what the suffix says (None without one)."""
    for suffix, crops in LAYOUT_SUFFIXES.items():
        if spec.endswith(suffix):
            return spec[: -len(suffix)], crops
    return spec, None


def is_crops(spec: str, default: bool) -> bool:
    """Whether a dataset's images are aligned face crops (else faces are found in them):
    as its spec's ``#crops`` or ``#photos`` says; else by kind (UTKFace and the Indian
    actors are crops); else ``default`` (``--aligned``, or train's ``--photos``)."""
    bare, said = _layout(spec)
    if said is not None:
        return said
    return bare.partition(":")[0] in CROP_KINDS or default


def source_name(spec: str) -> str:
    """What names a dataset's source: its kind, or a CSV's folder name (``csv:aaf/x.csv``
    is ``aaf``), so that two tables of one collection name one source."""
    kind, _, location = _layout(spec)[0].partition(":")
    return kind if kind != "csv" else Path(location).parent.name


def data_record(spec: str, dataset: Dataset) -> dict[str, Any]:
    """What a manifest records of its data, enough to find it again and to tell whether it
    changed: the spec as given, and the sha1 of the sorted content hashes of its distinct
    files (the same files in another folder give the same hash)."""
    digests = sorted({digest for _, digest in unique_samples(dataset)})
    return {
        "spec": spec,
        "files": len(digests),
        "sha1": hashlib.sha1("\n".join(digests).encode()).hexdigest(),
    }


def content_hash(path: Path) -> str:
    """sha1 of the file's bytes: the identity used for deduplication and for the split."""
    return hashlib.sha1(path.read_bytes()).hexdigest()


def split_of(digest: str) -> Split:
    """60/20/20 train/val/test, decided by the content hash so it never depends on file order."""
    bucket = int(digest[:8], 16) % 10
    return "train" if bucket < 6 else "val" if bucket < 8 else "test"


def split_key(sample: Sample, digest: str) -> str:
    """What decides a sample's split: the person's hash where the data names people (all
    their photos go together), else the file's content hash."""
    if sample.person is None:
        return digest
    return hashlib.sha1(f"person:{sample.person}".encode()).hexdigest()


def unique_samples(dataset: Dataset) -> list[tuple[Sample, str]]:
    """Samples with their content hash, byte-identical copies dropped (the first path wins)."""
    seen: set[str] = set()
    kept = []
    for sample in dataset.samples:
        digest = content_hash(sample.path)
        if digest not in seen:
            seen.add(digest)
            kept.append((sample, digest))
    dataset.duplicates = len(dataset.samples) - len(kept)
    return kept


def select_split(dataset: Dataset, split: Split) -> list[Sample]:
    """Drop byte-identical copies, then keep the samples of ``split``."""
    return [sample for sample, _ in split_with_hashes(dataset, split)]


def split_with_hashes(dataset: Dataset, split: Split) -> list[tuple[Sample, str]]:
    """As :func:`select_split`, each sample with its content hash."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return [
        (sample, digest)
        for sample, digest in unique_samples(dataset)
        if split == "all" or split_of(split_key(sample, digest)) == split
    ]


def write_split(
    dataset: Dataset, path: Path, unique: list[tuple[Sample, str]] | None = None
) -> dict[str, int]:
    """Record which file went to which split (by content hash), so results can name their data.

    ``unique`` is :func:`unique_samples` of ``dataset`` when the caller has it already:
    hashing every file's bytes is the slow part.
    """
    unique = unique_samples(dataset) if unique is None else unique
    members: dict[str, list[list[str]]] = {"train": [], "val": [], "test": []}
    for sample, digest in unique:
        listed = _listed_path(sample.path, _root_dir(dataset))
        members[split_of(split_key(sample, digest))].append([digest, listed])
    counts = {name: len(rows) for name, rows in members.items()}
    record = {
        "dataset": dataset.kind,
        "rule": "sha1 of the file's bytes (of the person's id where the data names people); "
        "first 8 hex digits mod 10: 0-5 train, 6-7 val, 8-9 test",
        "duplicates_dropped": dataset.duplicates,
        "malformed": dataset.malformed,
        "counts": counts,
        "members": members,
    }
    path.write_text(strict_json.dumps(record))
    return counts


def _listed_path(path: Path, root: Path) -> str:
    """A member's path as a split file lists it: relative to the data's folder when inside
    it, else as given (a CSV may name files anywhere)."""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _root_dir(dataset: Dataset) -> Path:
    return dataset.root.parent if dataset.root.is_file() else dataset.root


def _require_dir(folder: Path) -> Path:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    return folder


def _read_rows(table: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    if not table.is_file():
        raise DatasetError(f"{table}: no such file")
    with table.open(newline="", encoding="utf-8-sig") as stream:
        reader = csv.DictReader(stream)
        missing = [column for column in required if column not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{table}: missing column(s) {', '.join(missing)}")
        return list(reader)
