"""A cache of aligned chips for a dataset, so training and evaluation align each face once.

The cache file is named by a hash of everything that decides its contents: the
content hashes of the images and the alignment settings (chip size, padding,
border, whether images are crops or photos). Changing any of them, or the data,
names another file, so a stale cache is never read.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agelens.data.datasets import Sample
from agelens.errors import ImageError
from agelens.pipeline.chips import Aligner, landmark_box
from agelens.pipeline.faces import FaceDetector
from agelens.pipeline.images import load_image
from agelens.progress import task_progress

#: Bump when the way chips are cut changes, so older caches are not reused.
_CHIP_FORMAT = 2


@dataclass(frozen=True, slots=True)
class AlignmentSettings:
    """What decides a chip's pixels, besides the image itself."""

    size: int
    padding: float
    border: str
    aligned: bool = True

    def key(self) -> str:
        return f"v{_CHIP_FORMAT}-{self.size}-{self.padding}-{self.border}-{int(self.aligned)}"


@dataclass(frozen=True, slots=True)
class ChipSet:
    """Aligned chips ``[N, size, size, 3]`` and, row for row, their samples and content
    hashes; the files that could not be read, and the photos in which no face was found.
    A photo without a face is left out, as ``evaluate`` leaves it out: cutting the whole
    photo instead would teach the network a picture that is not a face."""

    chips: NDArray[np.uint8]
    samples: list[Sample]
    digests: list[str]
    unreadable: list[str]
    no_face: list[str]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "agelens" / "chips"


def load_chips(
    items: Sequence[tuple[Sample, str]],
    settings: AlignmentSettings,
    *,
    cache_dir: Path | None = None,
    label: str = "aligning",
    show_progress: bool = True,
) -> ChipSet:
    """Chips for ``(sample, content hash)`` pairs, read from the cache or made and cached."""
    folder = cache_dir or default_cache_dir()
    identity = hashlib.sha1(settings.key().encode())
    for _, digest in items:
        identity.update(digest.encode())
    cached = folder / f"{identity.hexdigest()}.npz"
    by_digest = {digest: sample for sample, digest in items}
    if cached.is_file():
        stored = np.load(cached)
        digests = [str(d) for d in stored["digests"]]
        return ChipSet(
            stored["chips"],
            [by_digest[d] for d in digests],
            digests,
            list(stored["unreadable"]),
            list(stored["no_face"]),
        )
    chips, kept, unreadable, no_face = _align_all(items, settings, label, show_progress)
    folder.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(".tmp.npz")
    np.savez(
        partial,
        chips=chips,
        digests=np.array([d for _, d in kept]),
        unreadable=np.array(unreadable, dtype=str),
        no_face=np.array(no_face, dtype=str),
    )
    partial.replace(cached)
    return ChipSet(chips, [s for s, _ in kept], [d for _, d in kept], unreadable, no_face)


def _align_all(
    items: Sequence[tuple[Sample, str]],
    settings: AlignmentSettings,
    label: str,
    show_progress: bool,
) -> tuple[NDArray[np.uint8], list[tuple[Sample, str]], list[str], list[str]]:
    aligner = Aligner(settings.size, settings.padding, settings.border)
    detector = None if settings.aligned else FaceDetector()

    def one(item: tuple[Sample, str]) -> NDArray[np.uint8] | str:
        """The chip, or why there is none: ``unreadable`` or ``no face``."""
        try:
            image = load_image(item[0].path)
        except ImageError:
            return "unreadable"
        height, width = image.shape[:2]
        box = (0.0, 0.0, float(width), float(height))
        if detector is not None:
            if not (found := detector.detect(image)):
                return "no face"
            box = landmark_box(found[0].landmarks)
        return aligner.chip(image, box)[0]

    chips, kept, unreadable, no_face = [], [], [], []
    with (
        task_progress(enabled=show_progress) as progress,
        ThreadPoolExecutor(os.cpu_count() or 1) as pool,
    ):
        task = progress.add_task(label, total=len(items))
        for item, chip in zip(items, pool.map(one, items), strict=True):
            progress.advance(task)
            if isinstance(chip, str):
                (unreadable if chip == "unreadable" else no_face).append(str(item[0].path))
            else:
                chips.append(chip)
                kept.append(item)
    size = settings.size
    stacked = np.stack(chips) if chips else np.zeros((0, size, size, 3), np.uint8)
    return stacked, kept, unreadable, no_face
