"""Results as records: the JSON of ``predict --json``, and flat rows for CSV and Parquet.

A flat table has one row per face, plus one row for each image with no face or an error,
so that every input appears in it. Every row has the same columns, in the same order,
whatever it holds, so files written in parts (or by several workers) line up. A run with
apparent gender on adds its two columns; one without has none of them.
"""

from __future__ import annotations

from typing import Any

from agelens.pipeline.estimates import Face


def image_record(
    image: str, faces: list[Face], error: str | None, *, distribution: bool = False
) -> dict[str, Any]:
    """One line of ``predict --json``."""
    return {
        "image": image,
        "faces": [face.to_dict(distribution=distribution) for face in faces],
        "error": error,
    }


def flat_columns(group_names: list[str], *, gender: bool = False) -> list[str]:
    """The columns of :func:`flat_rows`, for a group scheme with these groups."""
    return [
        "image",
        "face",
        "age",
        "label",
        "interval_low",
        "interval_high",
        "ceiling",
        "group",
        "group_probability",
        "age_group",
        *(f"p_{name}" for name in group_names),
        *(("gender", "gender_probability") if gender else ()),
        "box_x1",
        "box_y1",
        "box_x2",
        "box_y2",
        "score",
        *(f"landmark{i}_{axis}" for i in range(1, 6) for axis in "xy"),
        "error",
    ]


def flat_rows(
    image: str,
    faces: list[Face],
    error: str | None,
    group_names: list[str],
    *,
    gender: bool = False,
) -> list[dict[str, Any]]:
    """Rows of the flattened ``predict --json`` record: one per face (numbered from 1), or
    one with ``face`` 0 when there is no face or an error. ``gender`` adds the apparent
    gender's label and the likelier label's probability."""
    empty = dict.fromkeys(flat_columns(group_names, gender=gender))
    if not faces:
        return [{**empty, "image": image, "face": 0, "error": error}]
    rows = []
    for number, face in enumerate(faces, 1):
        record = face.to_dict()
        row = {**empty, "image": image, "face": number, "error": error}
        row.update(
            age=record["age"],
            label=record["label"],
            interval_low=record["interval"][0],
            interval_high=record["interval"][1],
            ceiling=record.get("ceiling"),
            group=record["group"]["label"],
            group_probability=record["group"]["probability"],
            age_group=record["group"]["age_group"],
            score=record["score"],
        )
        row.update({f"p_{name}": p for name, p in record["groups"].items()})
        if gender and "gender" in record:
            row["gender"] = record["gender"]["label"]
            row["gender_probability"] = record["gender"]["probability"]
        row.update(zip(("box_x1", "box_y1", "box_x2", "box_y2"), record["box"], strict=True))
        for i, (x, y) in enumerate(record["landmarks"][:5], 1):
            row[f"landmark{i}_x"], row[f"landmark{i}_y"] = x, y
        rows.append(row)
    return rows
