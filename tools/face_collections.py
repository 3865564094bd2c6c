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
import io
import json
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
COLUMNS = ("path", "age", "gender")


class CollectionError(AgeLensError):
    """A collection that cannot be built or checked, with what to do about it."""


def load_manifest(path: Path = MANIFEST) -> dict[str, dict[str, Any]]:
    """The collections, in the order dedup gives them priority."""
    return json.loads(path.read_text())


def _label(entry: dict[str, Any], member: PurePosixPath) -> dict[str, str] | None:
    """The labels of one image (``age-folder``: its folder's name is its age), or None."""
    if entry["labels"] == "age-folder":
        name = member.parent.name
        return {"age": str(int(name))} if name.isdigit() else None
    raise CollectionError(f"unknown label rule {entry['labels']!r}")


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


def build(name: str, entry: dict[str, Any], git_dir: Path, out: Path) -> dict[str, Any]:
    """Write the collection's images and ``labels.csv`` under ``out/name``, then check them."""
    target = out / name
    rows = []
    for relative, payload in _images(
        _archive(git_dir, entry["commit"], entry["folder"]), entry["folder"]
    ):
        label = _label(entry, relative)
        if label is None:
            continue
        path = target / "images" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(payload)
        rows.append({"path": str(PurePosixPath("images") / relative), **label})
    target.mkdir(parents=True, exist_ok=True)
    _write_rows(target / "labels.csv", rows)
    return check(name, entry, target)


def check(name: str, entry: dict[str, Any], target: Path) -> dict[str, Any]:
    """The built collection's count and hash, which must be the manifest's."""
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
        writer = csv.DictWriter(table, fieldnames=COLUMNS)
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
        inside = {j: name for i, j in same_pictures(prints, prints) if i < j}
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
            record = build(args.name, manifest[args.name], args.git_dir, args.out)
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
