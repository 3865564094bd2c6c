"""A training job's data: its datasets read, deduplicated, split, aligned and labelled."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agelens.data.chip_cache import AlignmentSettings, ChipSet, load_chips
from agelens.data.datasets import (
    Dataset,
    is_crops,
    read_dataset,
    split_key,
    split_of,
    unique_samples,
    write_split,
)
from agelens.data.teacher_labels import teacher_distributions
from agelens.decisions.groups import GroupScheme
from agelens.errors import DatasetError
from agelens.models.bundles import DEFAULT_BUNDLE, FP32, Bundle, load_bundle
from agelens.training.augmentation import Normalise
from agelens.training.config import LabelledChips, TrainConfig
from agelens.training.objective import class_ages_for


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Everything a training job is asked for. ``more_data`` are further dataset specs
    trained on together with ``data``: ages where a dataset has them, group masses where it
    has only groups (the Indian actors' YOUNG/MIDDLE/OLD)."""

    data: str
    out: Path
    config: TrainConfig
    scheme: GroupScheme | None = None
    base: str = DEFAULT_BUNDLE
    size: int = 64
    aligned: bool = True
    border: str = "edge"
    cache_dir: Path | None = None
    name: str | None = None
    #: "auto" (a CUDA GPU when torch sees one), "cpu", "cuda" or "cuda:N".
    device: str = "auto"
    more_data: tuple[str, ...] = ()

    @property
    def specs(self) -> tuple[str, ...]:
        return (self.data, *self.more_data)


def labelled(
    chips: ChipSet,
    rows: list[int],
    scheme: GroupScheme | None,
    teacher: NDArray[np.float32] | None = None,
) -> LabelledChips:
    """Chips of ``rows`` with ages (NaN when unknown), group indices (-1 when unknown) and
    the teacher's distributions for those rows, if any."""
    ages = np.array(
        [np.nan if chips.samples[r].age is None else chips.samples[r].age for r in rows],
        dtype=np.float32,
    )
    groups = np.full(len(rows), -1, dtype=np.int64)
    if scheme is not None:
        index = {label: i for i, label in enumerate(scheme.labels)}
        for position, row in enumerate(rows):
            sample = chips.samples[row]
            if sample.group is not None:
                if sample.group not in index:
                    raise DatasetError(
                        f"label {sample.group!r} is not a group of scheme {scheme.name!r} "
                        f"({', '.join(scheme.labels)})"
                    )
                groups[position] = index[sample.group]
            elif sample.age is not None:
                groups[position] = index[scheme.group_of(sample.age)]
    return LabelledChips(chips.chips[rows], ages, groups, teacher)


def split_rows(chips: ChipSet) -> dict[str, list[int]]:
    rows: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for row, (sample, digest) in enumerate(zip(chips.samples, chips.digests, strict=True)):
        rows[split_of(split_key(sample, digest))].append(row)
    return rows


def _usable(data: LabelledChips, task: str) -> LabelledChips:
    """Rows the task can learn from: in the age task, an age or else a group."""
    keep = data.groups >= 0
    if task == "age":
        keep = keep | ~np.isnan(data.ages)
    return data.rows(keep)


def _joined(parts: list[LabelledChips]) -> LabelledChips:
    teachers = [p.teacher for p in parts]
    sources = [p.sources for p in parts]
    return LabelledChips(
        np.concatenate([p.chips for p in parts]),
        np.concatenate([p.ages for p in parts]),
        np.concatenate([p.groups for p in parts]),
        None if any(t is None for t in teachers) else np.concatenate(teachers),  # type: ignore[arg-type]
        None if any(s is None for s in sources) else np.concatenate(sources),  # type: ignore[arg-type]
    )


@dataclass(slots=True)
class PreparedData:
    """A dataset read, deduplicated, split, aligned and labelled for one job."""

    dataset: Dataset
    base: Bundle
    sets: dict[str, LabelledChips]
    normalise: Normalise
    #: Per ``--data``, what became of its files: distinct, copies dropped, malformed
    #: names, unreadable files, photos with no face found (left out), split counts.
    collections: list[dict[str, Any]]
    more: list[Dataset] = field(default_factory=list)
    teacher: Bundle | None = None

    @property
    def counts(self) -> dict[str, int]:
        """Distinct files per split, over every dataset."""
        return {
            split: sum(c["split"][split] for c in self.collections)
            for split in ("train", "val", "test")
        }

    @property
    def unreadable(self) -> int:
        return sum(c["unreadable"] for c in self.collections)


def prepare(
    options: JobOptions,
    *,
    show_progress: bool = True,
    on_note: Callable[[str], None] | None = None,
) -> PreparedData:
    """Read and split each dataset (writing ``split.json``, and ``split-N.json`` for the
    N-th further one), align them into the chip cache, and join their splits; say what
    became of each dataset's files through ``on_note``."""
    task = options.config.task
    if task == "groups" and options.scheme is None:
        raise DatasetError("the groups task needs a group scheme")
    if options.more_data and options.scheme is None:
        raise DatasetError("training on several datasets needs a group scheme (--groups)")
    base = load_bundle(options.base, precision=FP32)
    teacher_name = options.config.teacher
    teacher = load_bundle(teacher_name, precision=FP32) if teacher_name else None
    class_ages = class_ages_for(options.config.max_age)
    options.out.mkdir(parents=True, exist_ok=True)
    datasets, parts, collections = [], [], []
    for number, spec in enumerate(options.specs):
        dataset = read_dataset(spec)
        crops = is_crops(spec, options.aligned)
        settings = AlignmentSettings(options.size, base.chip_padding, options.border, crops)
        name = "split.json" if number == 0 else f"split-{number + 1}.json"
        if on_note:
            on_note(f"{spec}: reading and hashing {len(dataset.samples)} files")
        unique = unique_samples(dataset)
        own_counts = write_split(dataset, options.out / name, unique)
        chips = load_chips(
            unique,
            settings,
            cache_dir=options.cache_dir,
            show_progress=show_progress,
        )
        rows = split_rows(chips)
        taught = None
        if teacher is not None:
            # Only the training faces: val and test are scored against their labels.
            taught = teacher_distributions(
                teacher,
                unique,
                [chips.digests[row] for row in rows["train"]],
                class_ages,
                aligned=crops,
                cache_dir=options.cache_dir,
                show_progress=show_progress,
            )
        teachers = {"train": taught, "val": None, "test": None}
        usable = {
            n: _usable(labelled(chips, rows[n], options.scheme, teachers[n]), task) for n in rows
        }
        parts.append(
            {n: replace(s, sources=np.full(len(s.ages), number)) for n, s in usable.items()}
        )
        datasets.append(dataset)
        collections.append(
            {
                "spec": spec,
                "images": "aligned crops" if crops else "photos",
                "distinct": len(unique),
                "duplicates_dropped": dataset.duplicates,
                "malformed": len(dataset.malformed),
                "unreadable": len(chips.unreadable),
                "no_face": len(chips.no_face),
                "split": own_counts,
            }
        )
        if on_note:
            on_note(_data_note(collections[-1]))
    sets = {name: _joined([part[name] for part in parts]) for name in ("train", "val", "test")}
    if len(sets["train"].chips) == 0 or len(sets["val"].chips) == 0:
        raise DatasetError(f"{options.data}: too few labelled images for a train and a val split")
    normalise = Normalise(base.mean, base.scale)
    return PreparedData(datasets[0], base, sets, normalise, collections, datasets[1:], teacher)


def _data_note(record: dict[str, Any]) -> str:
    """One dataset's files in a line: what was kept and what was left out, and why."""
    found = (
        "read as aligned crops"
        if record["images"] == "aligned crops"
        else f"no face found in {record['no_face']} (left out, as evaluate leaves them out)"
    )
    return (
        f"{record['spec']}: {record['distinct']} distinct files; "
        f"{record['duplicates_dropped']} byte-identical copies dropped, "
        f"{record['malformed']} malformed, {record['unreadable']} unreadable; {found}"
    )
