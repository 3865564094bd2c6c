"""The files ``agelens video`` writes: the annotated video, the CSV of people, and the
frames as JSON lines; one that cannot be written is the command's exit 2."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from agelens.annotate import draw_labels
from agelens.cli.common import fail
from agelens.video import TrackedFace, TrackSummary
from agelens.video.frames import Frame

#: The columns of ``agelens video --csv``: one row per person.
CSV_COLUMNS = [
    "track", "first_frame", "last_frame", "frames", "age", "interval_low", "interval_high",
    "label", "group", "group_probability", "decision",
]  # fmt: skip


@contextmanager
def text_file(path: Path) -> Iterator[TextIO]:
    """``path`` open for writing, or the command's exit 2 with why not."""
    try:
        handle = path.open("w", encoding="utf-8")
    except OSError as error:
        raise fail(f"{path}: cannot write ({error.strerror})", 2) from error
    with handle:
        yield handle


class VideoWriter:
    """The annotated video: each frame with its faces' boxes, tracks and steady ages."""

    def __init__(self, container: Any) -> None:
        self.container = container
        self.stream: Any = None

    @classmethod
    @contextmanager
    def open(cls, path: Path) -> Iterator[VideoWriter]:
        import av

        try:
            container = av.open(str(path), "w")
        except (av.FFmpegError, OSError) as error:
            raise fail(f"--out {path}: cannot write ({error})", 2) from error
        writer = cls(container)
        try:
            yield writer
        finally:
            if writer.stream is not None:
                writer.container.mux(writer.stream.encode())
            container.close()

    def write(self, frame: Frame, faces: list[TrackedFace]) -> None:
        import av

        height, width = frame.image.shape[:2]
        if self.stream is None:
            self.stream = self.container.add_stream("mpeg4", rate=round(frame.rate) or 25)
            self.stream.width, self.stream.height = width - width % 2, height - height % 2
            self.stream.pix_fmt = "yuv420p"
            self.stream.bit_rate = 4_000_000
        labels = [wordings(face) for face in faces]
        picture = draw_labels(frame.image, [face.box for face in faces], labels)
        picture = picture.crop((0, 0, self.stream.width, self.stream.height))
        encoded = av.VideoFrame.from_image(picture)
        self.container.mux(self.stream.encode(encoded))


def wordings(face: TrackedFace) -> list[str]:
    """A face's label, longest first: the drawing takes the longest that lets every label
    find a place."""
    if face.age is None or face.interval is None:
        return [f"#{face.track}"]
    low, high = face.interval
    apparent = f" {face.gender.label}" if face.gender is not None else ""
    return [
        f"#{face.track} {face.age:.0f} ({low:.0f}-{high:.0f}){apparent}",
        f"#{face.track} {face.age:.0f}",
        f"#{face.track}",
    ]


def write_people_csv(path: Path, people: list[TrackSummary], gender: bool) -> None:
    """``--csv``: one row per person, with gender columns when it was asked for."""
    columns = CSV_COLUMNS + (["gender", "gender_probability"] if gender else [])
    try:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            for person in people:
                record = person.to_dict()
                interval = record.pop("interval") or [None, None]
                group = record.pop("group") or {}
                apparent = record.pop("gender", None) or {}
                if gender:
                    record |= {
                        "gender": apparent.get("label"),
                        "gender_probability": apparent.get("probability"),
                    }
                writer.writerow(
                    {
                        **record,
                        "interval_low": interval[0],
                        "interval_high": interval[1],
                        "group": group.get("label"),
                        "group_probability": group.get("probability"),
                    }
                )
    except OSError as error:
        raise fail(f"--csv {path}: cannot write ({error.strerror})", 2) from error
