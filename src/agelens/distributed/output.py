"""Where a Ray run's rows go: Parquet part files or JSON lines, safe to resume.

Parquet output is a folder of part files (a Parquet dataset, as Spark and Ray write), each
written under a temporary name and renamed when complete, so an interrupted run leaves only
whole parts. JSON lines are appended one batch at a time; on resuming, the last image's
rows are dropped, for they may be incomplete, and that image is estimated again. Either
way an image's rows are written together, so no image is written twice.

A run holds a lock on its output (``.agelens.lock`` in the folder, ``NAME.lock`` beside a
JSON-lines file) for as long as it writes: a second run on the same output is refused,
never silently lost. Part names carry the run's id, so a part removed by hand and a
resumed run can never overwrite another part. At the end of every run the whole output
is read back and checked: every image once, none missing.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import IO, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from agelens import strict_json

_PART = "part-{run}-{number:06d}.parquet"
_LOCK = ".agelens.lock"


class RowWriter(Protocol):
    def write(self, table: pa.Table) -> None: ...
    def close(self) -> None: ...


class OutputInUseError(OSError):
    """Another run holds the output's lock."""


def lock_output(path: Path) -> IO[bytes]:
    """Hold ``path``'s lock until the returned file is closed (or the process ends)."""
    if path.suffix.lower() == ".jsonl":
        lock = path.with_name(path.name + ".lock")
        lock.parent.mkdir(parents=True, exist_ok=True)
    else:
        path.mkdir(parents=True, exist_ok=True)
        lock = path / _LOCK
    handle = lock.open("ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutputInUseError(
            f"{path} is being written by another run: wait for it, or choose another --out"
        ) from None
    return handle


def open_output(path: Path, resume: bool) -> tuple[RowWriter, set[str], set[str]]:
    """A writer for ``path`` (``.jsonl``: JSON lines, else a Parquet folder), the images it
    already holds when resuming (none otherwise; an existing output is then refused), and
    those of them whose row carries an error (a resumed run's exit code counts them).
    Call it holding :func:`lock_output`."""
    exists = path.exists() and (
        (path.is_file() and path.stat().st_size > 0)
        or (path.is_dir() and any(not p.name.startswith(".") for p in path.iterdir()))
    )
    if exists and not resume:
        raise FileExistsError(f"{path} exists: add --resume to continue it, or choose another")
    if path.suffix.lower() == ".jsonl":
        done, failed = _resume_jsonl(path) if exists else (set(), set())
        return JsonLinesWriter(path), done, failed
    path.mkdir(parents=True, exist_ok=True)
    done, failed = set(), set()
    for stale in path.glob(".*.tmp"):
        stale.unlink()
    for part in sorted(path.glob("part-*.parquet")):
        table = pq.read_table(part, columns=["image", "error"]).to_pydict()
        done.update(table["image"])
        failed.update(i for i, e in zip(table["image"], table["error"], strict=True) if e)
    return ParquetPartsWriter(path), done, failed


class ParquetPartsWriter:
    """A Parquet part file per written table, named by this run's id and a number: two
    runs' parts never share a name, whatever happened to the parts already there."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.run = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(4)}"
        self.number = 0

    def write(self, table: pa.Table) -> None:
        final = self.folder / _PART.format(run=self.run, number=self.number)
        if final.exists():  # cannot happen short of a clash of random ids: never overwrite
            raise FileExistsError(f"{final} exists")
        temporary = self.folder / f".{final.name}.tmp"
        pq.write_table(table, temporary)
        os.replace(temporary, final)
        self.number += 1

    def close(self) -> None:
        """Nothing to do: every part is complete once written."""


class JsonLinesWriter:
    """One JSON object per row, a table at a time, flushed to disk after each."""

    def __init__(self, path: Path) -> None:
        self.handle = path.open("a", encoding="utf-8")

    def write(self, table: pa.Table) -> None:
        self.handle.write("".join(strict_json.dumps(row) + "\n" for row in table.to_pylist()))
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


def _resume_jsonl(path: Path) -> tuple[set[str], set[str]]:
    """The images in ``path`` but the last, whose rows (and any cut line) are removed, and
    those of them with an error."""
    keep: list[tuple[int, str]] = []  # (byte offset where the row starts, its image)
    errors: set[str] = set()
    offset = 0
    with path.open("rb") as handle:
        for line in handle:
            if line.endswith(b"\n"):
                try:
                    row = json.loads(line)
                    keep.append((offset, row["image"]))
                except (ValueError, KeyError, TypeError):
                    break
                if row.get("error"):
                    errors.add(row["image"])
            offset += len(line)
    if not keep:
        path.write_bytes(b"")
        return set(), set()
    last = keep[-1][1]
    cut = next(start for start, image in keep if image == last)
    with path.open("r+b") as handle:
        handle.truncate(cut)
    kept = {image for start, image in keep if start < cut}
    return kept, errors & kept


def check_output(path: Path, names: list[str]) -> list[str]:
    """The problems of the finished output, read back whole: an image written more than
    once, or one of ``names`` missing. Empty when every image is there once."""
    images: list[str] = []
    if path.suffix.lower() == ".jsonl":
        with path.open("rb") as handle:
            for line in handle:
                row = json.loads(line)
                if int(row.get("face") or 0) <= 1:
                    images.append(row["image"])
    else:
        for part in sorted(path.glob("part-*.parquet")):
            table = pq.read_table(part, columns=["image", "face"]).to_pydict()
            images += [i for i, f in zip(table["image"], table["face"], strict=True) if f <= 1]
    counts = Counter(images)
    problems = [f"{image} written {n} times" for image, n in counts.items() if n > 1]
    missing = [name for name in names if name not in counts]
    if missing:
        problems.append(f"{len(missing)} image(s) missing, the first {missing[0]}")
    return problems
