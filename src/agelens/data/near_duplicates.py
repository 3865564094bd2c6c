"""Near-duplicate images across collections: a difference hash to find candidates, a
thumbnail correlation to confirm them.

The same photo recurs in several public collections, resized, recompressed or saved in
another format; byte hashes miss those copies, and a copy on both sides of a held-out
split flatters the model. A 64-bit difference hash (each pixel of a 9x8 grey thumbnail
brighter than its right neighbour or not) survives resizing and recompression, but aligned
face crops share their layout, so distinct people's crops can hash alike: on UTKFace, 9 in
10 pairs within 4 bits of each other were different photos. A candidate pair is the same
picture only when their 32x32 grey thumbnails also correlate at
:data:`SAME_PICTURE_CORRELATION` or more (re-encoded copies: 1.0; the closest
distinct crops: below 0.9).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from numpy.typing import NDArray
from PIL import Image

#: Bits of 64 that may differ for a pair to be checked at all.
CANDIDATE_BITS = 8
#: Correlation of the grey thumbnails above which two images are the same picture.
SAME_PICTURE_CORRELATION = 0.95
_THUMBNAIL = 32
#: Rows of the first set compared with all of the second at once (bounds the memory).
_CHUNK = 256


@dataclass(frozen=True, slots=True)
class Fingerprints:
    """Difference hashes ``[N]`` and unit-norm, zero-mean grey thumbnails ``[N, 1024]``."""

    hashes: NDArray[np.uint64]
    thumbnails: NDArray[np.float16]

    def __len__(self) -> int:
        return len(self.hashes)

    @staticmethod
    def join(parts: Sequence[Fingerprints]) -> Fingerprints:
        """One set holding every part's images, in order."""
        if not parts:
            return Fingerprints(np.zeros(0, np.uint64), np.zeros((0, _THUMBNAIL**2), np.float16))
        return Fingerprints(
            np.concatenate([p.hashes for p in parts]),
            np.concatenate([p.thumbnails for p in parts]),
        )


def difference_hash(grey: Image.Image) -> int:
    """The 64-bit difference hash of a grey image."""
    pixels = np.asarray(grey.resize((9, 8), Image.Resampling.LANCZOS), np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def _thumbnail(grey: Image.Image) -> NDArray[np.float32]:
    size = (_THUMBNAIL, _THUMBNAIL)
    pixels = np.asarray(grey.resize(size, Image.Resampling.BOX), np.float32).ravel()
    pixels -= pixels.mean()
    return pixels / max(float(np.linalg.norm(pixels)), 1e-6)


def fingerprints(paths: Sequence[Path | IO[bytes]]) -> Fingerprints:
    """The fingerprints of image files (or of open binary streams), in order."""
    hashes, thumbnails = [], []
    for path in paths:
        with Image.open(path) as image:
            grey = image.convert("L")
        hashes.append(difference_hash(grey))
        thumbnails.append(_thumbnail(grey))
    return Fingerprints(
        np.array(hashes, dtype=np.uint64).reshape(-1),
        np.array(thumbnails, dtype=np.float16).reshape(-1, _THUMBNAIL**2),
    )


def same_pictures(first: Fingerprints, second: Fingerprints) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)`` of ``first`` and ``second`` that are the same picture."""
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(first), _CHUNK):
        block = first.hashes[start : start + _CHUNK, None] ^ second.hashes[None, :]
        rows, cols = np.nonzero(np.bitwise_count(block) <= CANDIDATE_BITS)
        rows += start
        correlation = np.einsum(
            "ij,ij->i",
            first.thumbnails[rows].astype(np.float32),
            second.thumbnails[cols].astype(np.float32),
        )
        keep = correlation >= SAME_PICTURE_CORRELATION
        pairs.extend(zip(rows[keep].tolist(), cols[keep].tolist(), strict=True))
    return pairs
