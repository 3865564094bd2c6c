"""Large photos one at a time, and the memory they took handed back to the system after.

A 40-megapixel upload costs about 0.4 GB while it is decoded and estimated. Several at
once multiply that, and glibc keeps freed memory in its arenas, so a burst of them left
the server holding over a gigabyte while idle. Photos over ``LARGE_PIXELS`` therefore
wait for each other (the app queues them before they take an estimation slot, so that
waiting large photos never hold the slots ordinary ones need), and after each one the
allocator is asked to return free pages.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io
import warnings
from collections.abc import Callable

from PIL import Image

from agelens.pipeline.images import FORMATS

#: Above this, a photo is decoded and estimated alone (12 MP: a typical phone photo).
LARGE_PIXELS = 12_000_000


def pixel_count(data: bytes) -> int:
    """Width x height from the header alone; 0 when the header cannot be read (the
    decoder then reports what is wrong)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Only the formats AgeLens accepts: trying every format Pillow knows took
            # seconds on a 10 MB EPS-like body.
            width, height = Image.open(io.BytesIO(data), formats=FORMATS).size
    except Exception:
        return 0
    return width * height


def is_large(data: bytes) -> bool:
    """Whether the encoded photo's header says it has ``LARGE_PIXELS`` or more."""
    return pixel_count(data) >= LARGE_PIXELS


def return_free_memory() -> None:
    """Ask glibc to hand freed pages back to the system (no-op elsewhere)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, found once (``find_library`` runs a subprocess); None
    where the C library has none."""
    name = ctypes.util.find_library("c")
    return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
