"""Rebuild the public labelled face collections that AgeLens is judged on, and deduplicate them.

Each collection in ``tools/face_collections.json`` is a folder of a public Git repository at a
fixed commit. ``build`` takes it from a local clone of that repository (``git clone
--bare https://github.com/OWNER/NAME``; nothing is downloaded here), writes the images
and a ``labels.csv`` that ``agelens evaluate --data csv:...`` reads, and checks the count
and the sha1 of the files' content hashes against the manifest. ``dedup`` then drops, from
each collection, the files that are byte-identical or near-identical (difference hash) to
a file of the reference sets or of a collection listed before it (see
``agelens.data.near_duplicates``), and writes
``distinct.csv`` beside ``labels.csv`` with ``duplicates.json`` saying what went and why.

    python tools/face_collections.py build nycu-screens --git-dir /tmp/NYCU-AI-Capstone.git \\
        --out data/collections
    python tools/face_collections.py dedup --out data/collections \\
        --against utkface:data/UTKFace --against imfdb:data/imfdb-age/train

The collections' licences are their own (mostly research only, or none stated): keep the
images out of every repository, and keep models trained on them research only.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from rich.progress import track

from agelens.data.datasets import (
    IMAGE_SUFFIXES,
    Sample,
    content_hash,
    data_record,
    read_dataset,
)
from agelens.data.near_duplicates import Fingerprints, fingerprints, same_pictures
from agelens.errors import AgeLensError

MANIFEST = Path(__file__).with_name("face_collections.json")
COLUMNS = ("path", "age", "gender", "person")


class CollectionError(AgeLensError):
    """A collection that cannot be built or checked, with what to do about it."""


def load_manifest(path: Path = MANIFEST) -> dict[str, dict[str, Any]]:
    """The collections, in the order dedup gives them priority."""
    return json.loads(path.read_text())


def _archive(git_dir: Path, commit: str, folder: str) -> bytes:
    """The folder at the commit, as a tar archive, from a local clone."""
    command = ["git", "--git-dir", str(git_dir), "archive", "--format=tar", commit, "--", folder]
    try:
        done = subprocess.run(command, capture_output=True, check=False)
    except OSError as error:
        raise CollectionError(f"cannot run git: {error}") from error
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip()
        raise CollectionError(
            f"{git_dir}: cannot read {folder!r} at {commit[:12]} ({message}); clone the "
            "repository named in the manifest, with its full history"
        )
    return done.stdout


def _images(archive: bytes, folder: str) -> Iterator[tuple[PurePosixPath, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar:
            path = PurePosixPath(member.name)
            if member.isfile() and path.suffix.lower() in IMAGE_SUFFIXES:
                stream = tar.extractfile(member)
                if stream is not None:
                    yield path.relative_to(folder), stream.read()


def _relative_images(
    git_dir: Path, commit: str, folders: list[str]
) -> Iterator[tuple[PurePosixPath, bytes]]:
    """Each image of the folders at the commit, named ``FOLDER/...`` by its folder's last
    part; macOS's ``._*`` shadow files are skipped."""
    for folder in folders:
        for relative, payload in _images(_archive(git_dir, commit, folder), folder):
            if not relative.name.startswith("._"):
                yield PurePosixPath(PurePosixPath(folder).name) / relative, payload


class Labeller:
    """The labels of a collection's images, by its manifest's rule.

    ``age-folder``: the image's folder is its age. ``age-in-name``: ``name_pattern``'s
    first group is the age, and ``genders`` lists ``NAME CODE`` files. ``table``: a CSV of
    the repository keyed by the person's id, which ``person_pattern`` takes from the
    image's name; only its age and gender columns are read (never ethnicity), and the
    person's id goes into the labels so that splits keep a person's photos together.
    """

    def __init__(self, entry: dict[str, Any], git_dir: Path) -> None:
        self.rule = entry["labels"]
        if self.rule not in ("age-folder", "age-in-name", "table"):
            raise CollectionError(f"unknown label rule {self.rule!r}")
        self.name_pattern = re.compile(entry.get("name_pattern", ".*"))
        self.person_pattern = re.compile(entry.get("person_pattern", ".*"))
        self.genders: dict[str, str] = {}
        for spec in entry.get("genders", {}).get("files", []):
            codes = entry["genders"]["codes"]
            for line in _blob(git_dir, entry["commit"], spec).decode().splitlines():
                name, _, code = line.strip().partition(" ")
                if code.strip() in codes:
                    self.genders[name] = codes[code.strip()]
        self.people: dict[str, dict[str, str]] = {}
        if table := entry.get("table"):
            text = _blob(git_dir, entry["commit"], table["file"]).decode("utf-8-sig")
            for row in csv.DictReader(io.StringIO(text)):
                self.people[row[table["id"]]] = {
                    "age": row[table["age"]].strip(),
                    "gender": row[table["gender"]].strip().lower(),
                }

    def __call__(self, member: PurePosixPath) -> dict[str, str] | None:
        """The image's ``age``, ``gender`` and ``person``, or None when it has no age."""
        if self.rule == "age-folder":
            name = member.parent.name
            return {"age": str(int(name))} if name.isdigit() else None
        if self.rule == "age-in-name":
            match = self.name_pattern.fullmatch(member.name)
            if not match:
                return None
            return {"age": str(int(match.group(1))), "gender": self.genders.get(member.name, "")}
        match = self.person_pattern.match(member.name)
        person = self.people.get(match.group(1)) if match else None
        if person is None or not person["age"].isdigit():
            return None
        gender = person["gender"] if person["gender"] in ("female", "male") else ""
        return {"age": person["age"], "gender": gender, "person": match.group(1)}


def _blob(git_dir: Path, commit: str, path: str) -> bytes:
    """One file of the repository at the commit."""
    command = ["git", "--git-dir", str(git_dir), "show", f"{commit}:{path}"]
    try:
        done = subprocess.run(command, capture_output=True, check=False)
    except OSError as error:
        raise CollectionError(f"cannot run git: {error}") from error
    if done.returncode != 0:
        raise CollectionError(f"{git_dir}: no {path!r} at {commit[:12]}")
    return done.stdout


def read_reserved(entry: dict[str, Any], listing: Path | None) -> frozenset[str]:
    """The names a collection must never hold, from a list that must be the manifest's."""
    wanted = entry.get("reserved")
    if wanted is None:
        return frozenset()
    if listing is None or not listing.is_file():
        raise CollectionError(
            f"this collection keeps {wanted['files']} names out: give --reserved FILE, "
            "the list of those names"
        )
    names = frozenset(line.strip() for line in listing.read_text().splitlines() if line.strip())
    digest = hashlib.sha1("\n".join(sorted(names)).encode()).hexdigest()
    if (len(names), digest) != (wanted["files"], wanted["sha1"]):
        raise CollectionError(
            f"{listing}: {len(names)} names with sha1 {digest}, the manifest says "
            f"{wanted['files']} with sha1 {wanted['sha1']}: not the reserved list"
        )
    return names


def build(
    name: str,
    entry: dict[str, Any],
    git_dir: Path,
    out: Path,
    reserved_list: Path | None = None,
) -> dict[str, Any]:
    """Write the collection's images and ``labels.csv`` under ``out/name``, then check them.

    Reserved photos are left out, and so is every other file that is one of them under
    another name: the same bytes, or the same picture re-encoded. Their bytes are read
    to be compared, never written.
    """
    reserved = read_reserved(entry, reserved_list)
    label = Labeller(entry, git_dir)
    kept: list[tuple[PurePosixPath, bytes, dict[str, str]]] = []
    kept_out: list[bytes] = []
    for relative, payload in _relative_images(git_dir, entry["commit"], entry["folders"]):
        if relative.name in reserved:
            kept_out.append(payload)
        elif (labels := label(relative)) is not None:
            kept.append((relative, payload, labels))
    copies = _copies_of(kept_out, [payload for _, payload, _ in kept])
    target = out / name
    shutil.rmtree(target / "images", ignore_errors=True)  # no file of an earlier build stays
    rows = []
    for index, (relative, payload, labels) in enumerate(kept):
        if index in copies:
            continue
        path = target / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        rows.append({"path": str(PurePosixPath("images") / relative), **labels})
    target.mkdir(parents=True, exist_ok=True)
    _write_rows(target / "labels.csv", rows)
    record = check(name, entry, target, reserved)
    if reserved:
        record["left_out"] = {"reserved": len(kept_out), "copies_of_reserved": len(copies)}
    return record


def _copies_of(reserved: list[bytes], payloads: list[bytes]) -> set[int]:
    """Indices of ``payloads`` that are one of the reserved pictures."""
    if not reserved:
        return set()
    digests = {hashlib.sha1(payload).hexdigest() for payload in reserved}
    same = {i for i, p in enumerate(payloads) if hashlib.sha1(p).hexdigest() in digests}
    pairs = same_pictures(
        fingerprints([io.BytesIO(p) for p in payloads]),
        fingerprints([io.BytesIO(p) for p in reserved]),
    )
    return same | {i for i, _ in pairs}


def check(
    name: str, entry: dict[str, Any], target: Path, reserved: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The built collection's count and hash, which must be the manifest's, and no reserved
    name in its folder or its labels."""
    listed = [row["path"] for row in csv.DictReader((target / "labels.csv").open(newline=""))]
    present = [str(p.relative_to(target)) for p in (target / "images").rglob("*") if p.is_file()]
    for path in (*listed, *present):
        if PurePosixPath(path).name in reserved:
            raise CollectionError(
                f"{name}: {target / path} is a reserved photo; delete {target} and build again"
            )
    record = data_record(
        f"csv:{target / 'labels.csv'}", read_dataset(f"csv:{target / 'labels.csv'}")
    )
    expected = (entry["files"], entry["sha1"])
    if (record["files"], record["sha1"]) != expected:
        raise CollectionError(
            f"{name}: built {record['files']} distinct files with sha1 {record['sha1']}, "
            f"the manifest says {expected[0]} with sha1 {expected[1]}: "
            "another commit or a changed rule"
        )
    return record


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as table:
        writer = csv.DictWriter(table, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)


def _hashed(samples: list[Sample], label: str) -> tuple[list[str], Fingerprints]:
    paths = [sample.path for sample in track(samples, description=f"Hashing {label}")]
    return [content_hash(path) for path in paths], fingerprints(paths)


def dedup(names: list[str], out: Path, against: list[str]) -> dict[str, dict[str, Any]]:
    """Drop from each collection what an earlier set already holds, or what it holds twice;
    write ``distinct.csv`` and ``duplicates.json`` beside its ``labels.csv``."""
    seen_digests: dict[str, str] = {}
    seen: list[Fingerprints] = []
    owners: list[str] = []
    for spec in against:
        digests, prints = _hashed(read_dataset(spec).samples, spec)
        for digest in digests:
            seen_digests.setdefault(digest, spec)
        seen.append(prints)
        owners += [spec] * len(prints)
    summary = {}
    for name in names:
        table = out / name / "labels.csv"
        rows = list(csv.DictReader(table.open(newline="")))
        digests, prints = _hashed(read_dataset(f"csv:{table}").samples, name)
        earlier = {i: owners[j] for i, j in same_pictures(prints, Fingerprints.join(seen))}
        # Where the collection names its people, two of its photos that look alike are
        # studio shots of one person or of two (standard framing correlates), not copies.
        named = all(row.get("person") for row in rows)
        inside = {} if named else {j: name for i, j in same_pictures(prints, prints) if i < j}
        kept, dropped, local = [], {}, set()
        for index, (row, digest) in enumerate(zip(rows, digests, strict=True)):
            why = seen_digests.get(digest) or ("same bytes" if digest in local else None)
            why = why or earlier.get(index) or inside.get(index)
            local.add(digest)
            if why:
                dropped[row["path"]] = why
            else:
                kept.append(row)
        _write_rows(out / name / "distinct.csv", kept)
        summary[name] = {"files": len(rows), "kept": len(kept), "dropped": dropped}
        (out / name / "duplicates.json").write_text(json.dumps(summary[name], indent=2) + "\n")
        for digest in digests:
            seen_digests.setdefault(digest, name)
        seen.append(prints)
        owners += [name] * len(prints)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=MANIFEST)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("build", help="write a collection from a local clone")
    make.add_argument("name")
    make.add_argument("--git-dir", type=Path, required=True, help="a clone of its repository")
    make.add_argument("--out", type=Path, default=Path("data/collections"))
    make.add_argument(
        "--reserved", type=Path, help="names kept out of the collection (its manifest says)"
    )
    clean = commands.add_parser("dedup", help="drop copies across collections")
    clean.add_argument("names", nargs="*", help="collections, in priority order (default: all)")
    clean.add_argument("--out", type=Path, default=Path("data/collections"))
    clean.add_argument("--against", action="append", default=[], help="a dataset spec to keep")
    args = parser.parse_args(argv)
    try:
        manifest = load_manifest(args.manifest)
        if args.command == "build":
            if args.name not in manifest:
                raise CollectionError(f"no collection {args.name!r}: one of {', '.join(manifest)}")
            entry = manifest[args.name]
            record = build(args.name, entry, args.git_dir, args.out, args.reserved)
            print(json.dumps({args.name: record}))
        else:
            names = args.names or [n for n in manifest if (args.out / n / "labels.csv").is_file()]
            summary = dedup(names, args.out, args.against)
            print(
                json.dumps(
                    {n: {"files": s["files"], "kept": s["kept"]} for n, s in summary.items()}
                )
            )
    except AgeLensError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
