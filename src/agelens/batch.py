"""Many files on one machine: walk folders, then decode and estimate chunks on every core."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from agelens.errors import ImageError
from agelens.estimates import Face
from agelens.estimator import AgeEstimator
from agelens.images import RGBImage, load_image

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
#: Images whose faces share one trip through the network.
CHUNK = 32


@dataclass(frozen=True, slots=True)
class ImageResult:
    """The faces of one file, or why it could not be read (then ``image`` is None)."""

    path: Path
    image: RGBImage | None
    faces: list[Face]
    error: str | None


def collect_images(paths: Iterable[Path]) -> list[Path]:
    """Files as given, plus image files found (recursively, sorted) in any folder given."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = (p for p in sorted(path.rglob("*")) if p.is_file())
            files.extend(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(path)
    return files


def _try_load(path: Path, max_pixels: int) -> RGBImage | str:
    try:
        return load_image(path, max_pixels=max_pixels)
    except ImageError as error:
        return str(error)
    except OSError as error:
        return f"{path}: cannot read ({error.strerror or error})"


def estimate_files(
    estimator: AgeEstimator,
    paths: Sequence[Path],
    *,
    aligned: bool = False,
    distribution: bool = False,
    workers: int | None = None,
) -> Iterator[ImageResult]:
    """Results in the order of ``paths``; a file that fails carries its error and the run goes on.

    Chunks of files are decoded and estimated by ``workers`` threads at once (one per
    core by default): decoding and onnxruntime release the GIL, so the cores stay
    busy with one chunk's network while another chunk is decoded and aligned.
    """
    chunks = [paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)]

    def run(chunk: Sequence[Path]) -> list[ImageResult]:
        loaded = [_try_load(path, estimator.max_pixels) for path in chunk]
        images = [item for item in loaded if not isinstance(item, str)]
        faces = iter(estimator.estimate_arrays(images, aligned=aligned, distribution=distribution))
        return [
            ImageResult(path, None, [], item)
            if isinstance(item, str)
            else ImageResult(path, item, next(faces), None)
            for path, item in zip(chunk, loaded, strict=True)
        ]

    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending: deque[Future[list[ImageResult]]] = deque()
        for chunk in chunks:
            pending.append(pool.submit(run, chunk))
            if len(pending) > workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
