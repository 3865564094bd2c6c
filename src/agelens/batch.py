"""Many files on one machine: walk folders, decode in a thread pool, estimate in shared batches."""

from __future__ import annotations

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
) -> Iterator[ImageResult]:
    """Results in the order of ``paths``; a file that fails carries its error and the run goes on.

    The next chunk decodes in a thread pool (Pillow releases the GIL) while the
    current one goes through detection and the network.
    """
    chunks = [paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)]
    with ThreadPoolExecutor(max_workers=2) as pool:

        def submit(chunk: Sequence[Path]) -> list[Future[RGBImage | str]]:
            return [pool.submit(_try_load, path, estimator.max_pixels) for path in chunk]

        pending = submit(chunks[0]) if chunks else []
        for index, chunk in enumerate(chunks):
            loaded = [future.result() for future in pending]
            pending = submit(chunks[index + 1]) if index + 1 < len(chunks) else []
            images = [item for item in loaded if not isinstance(item, str)]
            faces = iter(
                estimator.estimate_arrays(images, aligned=aligned, distribution=distribution)
            )
            for path, item in zip(chunk, loaded, strict=True):
                if isinstance(item, str):
                    yield ImageResult(path, None, [], item)
                else:
                    yield ImageResult(path, item, next(faces), None)
