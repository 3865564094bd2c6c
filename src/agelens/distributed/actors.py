"""The estimator in Ray Data actors: each loads the model once, then estimates batches."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
from pyarrow import fs

from agelens.batch import ImageResult, InMemory, Source, estimate_files, estimate_in_order
from agelens.estimator import AgeEstimator
from agelens.models.bundles import DEFAULT_BUNDLE
from agelens.pipeline.images import over_file_limit
from agelens.records import flat_columns, flat_rows

#: Images an actor estimates per call: big enough to batch the networks, small enough
#: that a restarted actor repeats little.
BATCH_SIZE = 64

_TEXT_COLUMNS = frozenset({"image", "label", "group", "age_group", "gender", "error"})


def row_schema(group_names: list[str], *, gender: bool = False) -> pa.Schema:
    """The Arrow types of :func:`agelens.records.flat_rows`, the same for every batch."""
    types = {"face": pa.int32()} | dict.fromkeys(_TEXT_COLUMNS, pa.string())
    columns = flat_columns(group_names, gender=gender)
    return pa.schema([(name, types.get(name, pa.float64())) for name in columns])


def estimate_dataset(
    ds: ray.data.Dataset,
    model: str = DEFAULT_BUNDLE,
    *,
    aligned: bool = False,
    actors: int | None = None,
    batch_size: int = BATCH_SIZE,
    gender: bool = False,
    **estimator_options: Any,
) -> ray.data.Dataset:
    """Every face of every image in ``ds``, as flat rows (see :mod:`agelens.records`).

    ``ds`` has a ``path`` column (files the actors read, local or any URI pyarrow reads)
    and/or a ``bytes`` column (the encoded images, named by ``path`` when it is there, else
    ``sha1:`` and the sha1 of their bytes).
    ``estimator_options`` are :class:`~agelens.AgeEstimator`'s (``groups``, ``tta``,
    ``precision``, ``min_score``, ``min_face``, ``detect_max_side``, ``gender_model``);
    ``gender`` adds the apparent-gender columns. ``actors`` defaults
    to one per CPU of the cluster; an actor that dies is restarted and its batches retried.
    """
    size = actors or cluster_cpus()
    return ds.map_batches(
        EstimatorActor,
        fn_constructor_kwargs={
            "model": model,
            "aligned": aligned,
            "options": estimator_options,
            "gender": gender,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=1,
    )


def cluster_cpus() -> int:
    """The CPUs of the Ray cluster this process is connected to: the default actor count."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class EstimatorActor:
    """One model per actor, its networks on one thread (an actor holds one CPU)."""

    def __init__(
        self, model: str, aligned: bool, options: dict[str, Any], gender: bool = False
    ) -> None:
        self.estimator = AgeEstimator(model, threads=1, **options)
        self.aligned = aligned
        self.gender = gender
        self.group_names = list(self.estimator.groups.labels)
        self.schema = row_schema(self.group_names, gender=gender)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        names = [str(p) for p in batch["path"]] if "path" in batch else None
        if "bytes" in batch:
            # Without paths, a row is named by its image's content: the same name in
            # every batch and every run, unlike its place in a batch.
            labels = names or [
                f"sha1:{hashlib.sha1(bytes(data)).hexdigest()}" for data in batch["bytes"]
            ]
            inputs: list[Source | ImageResult] = [
                InMemory(label, Path(label).name, bytes(data))
                for label, data in zip(labels, batch["bytes"], strict=True)
            ]
        elif names is not None:
            inputs = [_source(name) for name in names]
        else:
            raise ValueError("the dataset needs a 'path' or a 'bytes' column")
        results = estimate_in_order(
            inputs,
            lambda sources: estimate_files(
                self.estimator, sources, aligned=self.aligned, workers=1, gender=self.gender
            ),
        )
        rows = [
            row
            for result in results
            for row in flat_rows(
                str(result.path), result.faces, result.error, self.group_names, gender=self.gender
            )
        ]
        return pa.Table.from_pylist(rows, schema=self.schema)


def _source(name: str) -> Source | ImageResult:
    """A local path as the local pool reads it; a URI read through pyarrow's filesystems
    (its failed result when that fails)."""
    if "://" not in name:
        return Path(name)
    try:
        filesystem, inner = fs.FileSystem.from_uri(name)
        size = filesystem.get_file_info(inner).size
        if size is not None and (too_large := over_file_limit(size)):
            return ImageResult.failed(name, too_large)
        with filesystem.open_input_stream(inner) as stream:
            return InMemory(name, Path(inner).name, stream.read())
    except (OSError, pa.ArrowException) as error:
        return ImageResult.failed(name, f"could not be read ({error})")
