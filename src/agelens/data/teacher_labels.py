"""A teacher's age distributions over the training chips, for distilling it into a student.

A slow, strong bundle (the teacher) is run once over every training face, on chips cut
the way it was trained (its own size, framing and border), with its own flip-TTA choice.
The student then learns those distributions besides its labels (Hinton et al.'s
knowledge distillation), so it learns the teacher's ages for faces it has only a group
for, and the shape of its uncertainty. The distributions are kept in the chip cache,
named by the teacher's weights and the faces, so a second run does not pay for them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agelens.data.chip_cache import AlignmentSettings, default_cache_dir, load_chips
from agelens.data.datasets import Sample
from agelens.errors import DatasetError
from agelens.models.bundles import Bundle
from agelens.pipeline.network import AgeModel
from agelens.progress import task_progress

_CHUNK = 256


def regrid_matrix(
    source_ages: Sequence[float], target_ages: Sequence[float]
) -> NDArray[np.float32]:
    """``[source, target]`` weights moving each source age's mass onto the two nearest
    target ages, linearly, so the expected age is kept wherever it lies within the target's."""
    source, target = np.asarray(source_ages, np.float64), np.asarray(target_ages, np.float64)
    matrix = np.zeros((len(source), len(target)), dtype=np.float32)
    for row, age in enumerate(np.clip(source, target[0], target[-1])):
        upper = int(np.searchsorted(target, age))
        if target[min(upper, len(target) - 1)] == age:
            matrix[row, min(upper, len(target) - 1)] = 1.0
            continue
        low, high = target[upper - 1], target[upper]
        share = (age - low) / (high - low)
        matrix[row, upper - 1], matrix[row, upper] = 1.0 - share, share
    return matrix


def teacher_distributions(
    teacher: Bundle,
    items: Sequence[tuple[Sample, str]],
    digests: Sequence[str],
    class_ages: Sequence[float],
    *,
    aligned: bool = True,
    cache_dir: Path | None = None,
    show_progress: bool = True,
) -> NDArray[np.float32]:
    """The teacher's distribution over ``class_ages`` for each face in ``digests`` (content
    hashes of ``items``), row for row; raises :class:`DatasetError` for a face it cannot chip."""
    folder = cache_dir or default_cache_dir()
    identity = hashlib.sha1(Path(teacher.model_path).read_bytes())
    identity.update(repr((teacher.flip_tta, list(class_ages))).encode())
    for digest in digests:
        identity.update(digest.encode())
    path = folder / f"teacher-{identity.hexdigest()[:20]}.npy"
    if path.is_file():
        return np.load(path)
    settings = AlignmentSettings(
        teacher.input_size, teacher.chip_padding, teacher.chip_border, aligned
    )
    chips = load_chips(items, settings, cache_dir=cache_dir, show_progress=show_progress)
    row_of = {digest: row for row, digest in enumerate(chips.digests)}
    missing = [digest for digest in digests if digest not in row_of]
    if missing:
        raise DatasetError(
            f"the teacher {teacher.name} found no face in {len(missing)} training images"
        )
    rows = np.array([row_of[digest] for digest in digests], dtype=np.int64)
    model = AgeModel(teacher)
    regrid = regrid_matrix(teacher.ages, class_ages)
    outputs = np.zeros((len(rows), len(class_ages)), dtype=np.float32)
    with task_progress(enabled=show_progress) as progress:
        task = progress.add_task(f"teacher {teacher.name}", total=len(rows))
        for start in range(0, len(rows), _CHUNK):
            batch = chips.chips[rows[start : start + _CHUNK]]
            outputs[start : start + len(batch)] = (
                model.distributions(batch, flip=teacher.flip_tta) @ regrid
            )
            progress.advance(task, len(batch))
    folder.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp.npy")
    np.save(partial, outputs)
    partial.replace(path)
    return outputs
