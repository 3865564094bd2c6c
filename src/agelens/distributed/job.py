"""``agelens predict SRC --engine ray``: list the images, estimate them on Ray, write rows.

SRC is a folder (walked), a glob, a list file (one path or URI per line) or one image,
local or on any filesystem pyarrow reads (``s3://``, ``gs://``, ``hdfs://``...). Only the
names are listed here, on the driver; the actors read the images.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.data
from pyarrow import fs

from agelens.batch import IMAGE_SUFFIXES, collect_images
from agelens.distributed.actors import BATCH_SIZE, cluster_cpus, estimate_dataset
from agelens.distributed.output import check_output, lock_output, open_output

_GLOB_CHARACTERS = frozenset("*?[")


def list_images(source: str) -> list[str]:
    """The images ``source`` names, sorted within each folder, as the local pool lists them."""
    if "://" in source:
        return _list_uri(source)
    if _GLOB_CHARACTERS & set(source):
        return sorted(glob.glob(source, recursive=True))
    path = Path(source)
    if path.is_file() and path.suffix.lower() not in IMAGE_SUFFIXES:
        # A name that is not UTF-8 keeps its bytes (as surrogates), to be named escaped.
        return _list_file(path.read_text(encoding="utf-8", errors="surrogateescape"))
    return [str(found) for found in collect_images([path])]


def _list_file(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _list_uri(source: str) -> list[str]:
    scheme = source.split("://", 1)[0] + "://"
    pattern = source if _GLOB_CHARACTERS & set(source) else None
    # A glob is listed from the folder before its first wildcard.
    base = re.split(r"[*?\[]", source, maxsplit=1)[0].rsplit("/", 1)[0] if pattern else source
    filesystem, inner = fs.FileSystem.from_uri(base)
    info = filesystem.get_file_info(inner)
    if info.type == fs.FileType.File and pattern is None:
        if Path(inner).suffix.lower() in IMAGE_SUFFIXES:
            return [source]
        with filesystem.open_input_stream(inner) as stream:
            return _list_file(stream.read().decode("utf-8"))
    found = filesystem.get_file_info(fs.FileSelector(inner, recursive=True))
    names = sorted(
        scheme + entry.path
        for entry in found
        if entry.type == fs.FileType.File and Path(entry.path).suffix.lower() in IMAGE_SUFFIXES
    )
    return [name for name in names if pattern is None or fnmatch.fnmatch(name, pattern)]


def run(
    source: str,
    out: Path,
    *,
    address: str | None,
    actors: int | None,
    resume: bool,
    model: str,
    aligned: bool,
    on_start: Callable[[int, int], None],
    on_images: Callable[[int], None],
    batch_size: int = BATCH_SIZE,
    **estimator_options: Any,
) -> int:
    """Estimate every image of ``source`` not yet in ``out``; returns the number of images
    whose row carries an error in the whole output, a resumed run's earlier rows included.
    ``on_start(to do, already done)`` and ``on_images(n)``
    report progress; ``batch_size`` images go to an actor at a time, two batches a block."""
    # Named as the rows name them (``./a/b.jpg`` is ``a/b.jpg``), so that a resumed run
    # compares like with like; a list file may name one twice.
    names = list(dict.fromkeys(_as_rows_name_it(name) for name in list_images(source)))
    # The lock is held until the output has been written and checked.
    with lock_output(out):
        writer, done, failed_before = open_output(out, resume)
        todo = [name for name in names if name not in done]
        on_start(len(todo), len(names) - len(todo))
        failed = len(failed_before & set(names))
        try:
            if todo:
                _start_ray(address)
                size = min(actors or cluster_cpus(), len(todo))
                # Blocks of two actor batches: every actor has work from the start, results
                # stream back steadily, and a failure repeats little.
                blocks = min(len(todo), max(size, -(-len(todo) // (2 * batch_size))))
                items = [{"path": name} for name in todo]
                paths = ray.data.from_items(items, override_num_blocks=blocks)
                rows = estimate_dataset(
                    paths,
                    model,
                    aligned=aligned,
                    actors=size,
                    batch_size=batch_size,
                    **estimator_options,
                )
                written = set(done)
                for batch in rows.iter_batches(batch_size=None, batch_format="pyarrow"):
                    table = _unwritten(batch, written)
                    if table.num_rows:
                        writer.write(table)
                    firsts = pc.less_equal(table.column("face"), 1)  # an image's first row
                    errors = pc.and_(firsts, pc.is_valid(table.column("error")))
                    failed += pc.sum(errors).as_py() or 0
                    on_images(pc.sum(firsts).as_py() or 0)
        finally:
            writer.close()
        if problems := check_output(out, names):
            raise OutputCheckError(f"{out} failed its check: " + "; ".join(problems[:3]))
    return failed


def _as_rows_name_it(name: str) -> str:
    """``./a/b.jpg`` as ``a/b.jpg``; a name no row can hold (bytes that are not UTF-8, a
    NUL) written escaped, so that it becomes that input's error row, not the job's end."""
    # A NUL and the surrogates that stand for bytes that are not UTF-8 are unprintable.
    if not name.isprintable():
        name = name.encode("unicode_escape", "backslashreplace").decode("ascii")
    return name if "://" in name else str(Path(name))


class OutputCheckError(ValueError):
    """The finished output, read back, lacks an image or holds one twice."""


def _unwritten(table: pa.Table, written: set[str]) -> pa.Table:
    """The rows of images not yet written, noting them as written.

    Ray Data runs the batches of an actor that dies again on another; should rows of an
    image ever arrive a second time, whatever the engine's retry rules, they are dropped
    here, so no image is written twice. An image's rows always arrive together.
    """
    images = table.column("image").to_pylist()
    new = set(images) - written
    written |= new
    return table.filter(pa.array([image in new for image in images]))


def _start_ray(address: str | None) -> None:
    """Join ``address`` (``auto``: the running cluster), or start a local Ray."""
    # AgeLens shows its own progress; Ray Data's bars and per-stage logs would repeat it.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    if address is None:
        # The local cluster started here has token authentication on, as Ray's default;
        # its notice says so on every run, which is not the user's concern.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    ray.data.DataContext.get_current().enable_progress_bars = False
