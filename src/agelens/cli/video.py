"""``agelens video``: faces tracked through a clip or a stream, one steady age per person."""

from __future__ import annotations

import io
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer

from agelens import strict_json
from agelens.cli.common import (
    GenderModelOption,
    GenderOption,
    GroupsOption,
    JsonOption,
    ModelOption,
    PrecisionOption,
    fail,
    make_estimator,
    out,
    progress_bar,
    shown,
)
from agelens.cli.files.video_files import VideoWriter, text_file, write_people_csv
from agelens.decisions.gate import GatePolicy
from agelens.errors import AgeLensError
from agelens.models.bundles import DEFAULT_BUNDLE, DEFAULT_GENDER_BUNDLE
from agelens.video import AgeTracker, TrackSummary, read_frames
from agelens.video.frames import STREAM_TIMEOUT_S, LatestFrames
from agelens.video.reads import DEFAULT_READS_PER_SECOND, SETTLING_SECONDS, ReadBudget


def video(
    source: Annotated[
        str,
        typer.Argument(
            metavar="SRC",
            help="A video file (mp4, mov, webm, mkv, avi, GIF), an http(s)/rtsp URL, or - "
            "for standard input.",
        ),
    ],
    model: ModelOption = DEFAULT_BUNDLE,
    groups: GroupsOption = "imfdb",
    over: Annotated[
        float | None, typer.Option(help="Give each person the age gate's answer for this age.")
    ] = None,
    buffer: Annotated[
        float | None,
        typer.Option(help="With --over: the gate's buffer (default: the model's policy)."),
    ] = None,
    every: Annotated[
        int,
        typer.Option(
            min=1, help="Estimate ages on every Nth frame; faces are tracked on every frame."
        ),
    ] = 1,
    reads_per_second: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Reads of each person's face by the age network a second, once their "
            f"track has settled (every frame of its first {SETTLING_SECONDS:g} s).",
        ),
    ] = DEFAULT_READS_PER_SECOND,
    as_json: JsonOption = False,
    frames_file: Annotated[
        Path | None,
        typer.Option("--frames", help="Write one JSON line per face per frame to this file."),
    ] = None,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Also write one row per person to this file.")
    ] = None,
    annotated: Annotated[
        Path | None,
        typer.Option("--out", help="Write the video with boxes, tracks and ages drawn (.mp4)."),
    ] = None,
    live: Annotated[
        bool | None,
        typer.Option(
            "--live/--all-frames",
            help="Live: take the newest frame each time and drop late ones, so the answers "
            "never fall behind; all frames: read every one. Default: live for rtsp, rtmp, "
            "udp and srt URLs and endless standard input, all frames otherwise.",
        ),
    ] = None,
    timeout: Annotated[
        float,
        typer.Option(min=0.1, help="Give up a stream that sends nothing for this many seconds."),
    ] = STREAM_TIMEOUT_S,
    precision: PrecisionOption = None,
    gender: GenderOption = False,
    gender_model: GenderModelOption = DEFAULT_GENDER_BUNDLE,
) -> None:
    """Track every face through a video and give one steady age per person.

    Each person's age pools the reads of their face, weighted by how well each can be
    judged: every frame while their track is new, then --reads-per-second. It settles
    within a couple of seconds and then stays put. Its 90% interval narrows only as far
    as the frames are really different views (docs/video.md).

    At the end, a table (or with --json one JSON object per person per line; from a
    live source, then one line with the frames received and dropped).
    """
    if buffer is not None and over is None:
        raise fail("--buffer needs --over", 2)
    # One frame at a time: each network run gets every core (2.76x real time against
    # 2.13x with one thread, bench/results/video.json).
    estimator = make_estimator(
        model,
        groups,
        None,
        precision,
        gender_model=gender_model if gender else None,
        threads=os.cpu_count() or 1,
    )
    policy: GatePolicy | None = None
    if over is not None:
        try:
            policy = estimator.gate_policy(over, buffer)
        except ValueError as error:
            raise fail(str(error), 2) from error
    tracker = AgeTracker(
        estimator,
        every=every,
        policy=policy,
        budget=ReadBudget(reads_per_second),
        gender=gender,
    )
    try:
        with ExitStack() as stack:
            lines = stack.enter_context(text_file(frames_file)) if frames_file else None
            writer = stack.enter_context(VideoWriter.open(annotated)) if annotated else None
            progress = stack.enter_context(progress_bar(None, unit="frames"))
            task = progress.add_task("Frames", total=None)
            readable = _standard_input() if source == "-" else source
            frames = read_frames(readable, timeout=timeout)
            latest = LatestFrames(frames) if _is_live(readable, live) else None
            for frame in frames if latest is None else latest:
                faces = tracker.update(frame)
                if lines is not None:
                    lines.writelines(strict_json.dumps(f.to_dict()) + "\n" for f in faces)
                if writer is not None:
                    writer.write(frame, faces)
                progress.advance(task)
    except AgeLensError as error:  # VideoError among them
        raise fail(str(error)) from error
    people = tracker.finish()
    if csv_path is not None:
        write_people_csv(csv_path, people, gender)
    if as_json:
        for person in people:
            sys.stdout.write(strict_json.dumps(person.to_dict()) + "\n")
    else:
        _print_people(people, source, gender)
    if latest is not None:
        kept = {"frames_received": latest.received, "frames_dropped": latest.dropped}
        if as_json:
            sys.stdout.write(strict_json.dumps({"live": kept}) + "\n")
        else:
            out.print(f"live: {latest.dropped} of {latest.received} frames dropped to keep up")


#: URL schemes of sources that send frames as they happen.
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "udp", "srt")


def _is_live(source: str | BinaryIO, live: bool | None) -> bool:
    """``--live`` as given, else whether the source is a live stream: an endless pipe,
    or a URL of a live protocol (a file over http is read whole)."""
    if live is not None:
        return live
    if isinstance(source, str):
        return source.partition("://")[0].lower() in LIVE_SCHEMES
    return isinstance(source, _Prefixed)


#: Standard input up to this size is read whole, so that an MP4 whose index comes last
#: (most do) can be read from a pipe; a longer or endless stream is decoded as it comes.
STDIN_WHOLE_BYTES = 64 * 2**20


def _standard_input() -> BinaryIO:
    head = sys.stdin.buffer.read(STDIN_WHOLE_BYTES + 1)
    if len(head) <= STDIN_WHOLE_BYTES:
        return io.BytesIO(head)
    return _Prefixed(head, sys.stdin.buffer)


class _Prefixed(io.RawIOBase):
    """``head``, then the rest of ``stream``: a pipe whose start was read already."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self.head, self.stream = memoryview(head), stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            count = min(len(buffer), len(self.head))
            buffer[:count] = self.head[:count]
            self.head = self.head[count:]
            return count
        data = self.stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _print_people(people: list[TrackSummary], source: str, gender: bool) -> None:
    from rich.table import Table

    table = Table(title=shown(source), title_justify="left")
    columns = ["person", "frames", "age (90% interval)", "group", "decision"]
    for column in columns + (["gender"] if gender else []):
        table.add_column(column)
    for person in people:
        group = person.group or {}
        cells = [
            f"#{person.track}",
            f"{person.first_frame}-{person.last_frame} ({person.frames})",
            person.label or "-",
            f"{group['label']} {group['probability']:.0%}" if group else "-",
            person.decision or "-",
        ]
        if gender:
            cells.append(person.gender.text if person.gender else "-")
        table.add_row(*cells)
    out.print(table)
    if not people:
        out.print("no face found in the video")
