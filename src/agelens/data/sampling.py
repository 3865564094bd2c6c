"""The order an epoch shows the training faces in: shuffled, or balanced by collection
and age band.

Trained on several collections at once, the largest decides what a face "looks like":
UTKFace's 14,000 training faces outweigh 100 Face Research Lab photos, and its few
children and over-60s are seen rarely. With ``balance`` b, each face is drawn (with
replacement, as many draws as faces) with probability proportional to ``count^-b``,
where ``count`` is the number of training faces of its collection and age band: 0 keeps
the data's own mix (every face once, shuffled), 1 gives every collection-and-band cell
the same share, and values between temper it (0.5: each cell in proportion to the
square root of its size).
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray

#: Lower edges of the age bands balanced over: children, 13-17, 18-24, 25-39, 40-59, 60+.
BAND_EDGES = (0.0, 13.0, 18.0, 25.0, 40.0, 60.0)


def cells(ages: NDArray[np.floating], sources: NDArray[np.int64] | None) -> NDArray[np.int64]:
    """Each face's collection-and-band cell, from its age (NaN when known only by group, a
    band of its own) and its collection's position."""
    bands = np.digitize(np.nan_to_num(ages, nan=-1.0), BAND_EDGES)  # 0 when no age
    sources = np.zeros(len(ages), np.int64) if sources is None else sources
    return sources * (len(BAND_EDGES) + 1) + bands


def balanced_weights(
    ages: NDArray[np.floating], sources: NDArray[np.int64] | None, balance: float
) -> NDArray[np.float64] | None:
    """Each face's drawing weight, ``count^-balance`` of its cell; None when 0 (shuffle)."""
    if balance == 0:
        return None
    found = cells(ages, sources)
    _, inverse, counts = np.unique(found, return_inverse=True, return_counts=True)
    return counts[inverse].astype(np.float64) ** -balance


def epoch_order(
    count: int, generator: torch.Generator, weights: NDArray[np.float64] | None
) -> torch.Tensor:
    """One epoch's indices: a shuffle of ``count`` faces, or ``count`` weighted draws.
    ``weights`` may cover a repeating pattern (the faces, then their mirror copies)."""
    if weights is None:
        return torch.randperm(count, generator=generator)
    tiled = torch.from_numpy(np.resize(weights, count))
    return torch.multinomial(tiled, count, replacement=True, generator=generator)
