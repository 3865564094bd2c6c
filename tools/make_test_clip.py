"""Test clips whose truth is known: still photos of faces moved across a frame.

Each person is a face cut from a still photo, pasted on a plain background and moved
along a path: two walk towards each other and cross (the one in front hides the other
for a moment), one walks out of the frame and comes back. The light changes slowly and
the clip is compressed (MPEG-4 Part 2). Every frame's true box per person is written
beside the clip, so identity switches can be counted. With ``--turned``, the frames are
stored on their side and the file says how to turn them upright, as a phone's do.

    python tools/make_test_clip.py --out clip.mp4 --seconds 10 --size 960x540 --fps 25 \\
        [--turned 90]

Tests make small clips with :func:`make_clip`; the benchmark makes longer ones. For
interval coverage, :func:`face_frames` makes a labelled face crop into a short clip of
its own.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from agelens.estimator import AgeEstimator
from agelens.pipeline.images import load_image
from agelens.video import AgeTracker, TrackedFace, TrackSummary
from agelens.video.frames import Frame


@dataclass(frozen=True)
class Person:
    """A face and its path: positions (centre x, y as shares of the frame) at times 0-1."""

    face: Image.Image
    path: Sequence[tuple[float, float, float]]  # (time share, x share, y share)
    side: float  # face side as a share of the frame's height


def position(person: Person, share: float) -> tuple[float, float] | None:
    """Where the person's face is at ``share`` of the clip; None while out of the frame."""
    points = person.path
    for (t0, x0, y0), (t1, x1, y1) in itertools.pairwise(points):
        if t0 <= share <= t1:
            k = (share - t0) / (t1 - t0) if t1 > t0 else 0.0
            x, y = x0 + k * (x1 - x0), y0 + k * (y1 - y0)
            return None if x < -0.5 or x > 1.5 else (x, y)
    return None


def default_people(faces: Sequence[Image.Image]) -> list[Person]:
    """Three people: two crossing at the same height, one leaving and coming back."""
    a, b, c = (faces[i % len(faces)] for i in range(3))
    return [
        Person(a, [(0.0, 0.15, 0.35), (1.0, 0.85, 0.35)], 0.34),
        Person(b, [(0.0, 0.85, 0.38), (1.0, 0.15, 0.38)], 0.32),
        Person(
            c,
            [
                (0.0, 0.55, 0.78),
                (0.25, 1.2, 0.78),  # out of the frame for about a sixth of the clip
                (0.35, 1.2, 0.78),
                (0.55, 0.6, 0.78),
                (1.0, 0.6, 0.78),
            ],
            0.28,
        ),
    ]


def make_clip(
    out: Path,
    faces: Sequence[Image.Image],
    *,
    seconds: float = 4.0,
    size: tuple[int, int] = (640, 360),
    fps: int = 25,
    people: list[Person] | None = None,
    turned: int = 0,
) -> list[list[dict]]:
    """Write the clip; returns, per frame, each person in the frame: their number, true
    box (in the upright frame), and the share of it that people in front of them hide.
    ``turned`` (0, 90, 180 or 270; MP4 and MOV only): the frames are stored turned that
    far counter-clockwise, and the file's display matrix turns them back clockwise."""
    import av

    if turned % 90 or (turned and out.suffix.lower() not in {".mp4", ".mov"}):
        raise ValueError("turned must be a multiple of 90, and needs an .mp4 or .mov")
    people = people or default_people(faces)
    width, height = size
    quarter_turns = turned // 90 % 4
    count = round(seconds * fps)
    truth: list[list[dict]] = []
    with av.open(str(out), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = (height, width) if quarter_turns % 2 else (width, height)
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 1_500_000
        for index in range(count):
            share = index / max(count - 1, 1)
            canvas = Image.new("RGB", size, (118, 128, 140))
            boxes = []
            for number, person in enumerate(people, 1):
                where = position(person, share)
                if where is None:
                    continue
                side = round(person.side * height)
                x, y = where[0] * width - side / 2, where[1] * height - side / 2
                canvas.paste(person.face.resize((side, side)), (round(x), round(y)))
                boxes.append({"person": number, "box": [x, y, x + side, y + side]})
            for entry in boxes:  # how much of each face later-drawn faces cover
                entry["hidden"] = round(
                    max(
                        (
                            _covered(entry["box"], other["box"])
                            for other in boxes
                            if other["person"] > entry["person"]
                        ),
                        default=0.0,
                    ),
                    3,
                )
            light = 1.0 + 0.25 * math.sin(2 * math.pi * share)  # the light changes slowly
            canvas = ImageEnhance.Brightness(canvas).enhance(light)
            stored = np.ascontiguousarray(np.rot90(np.asarray(canvas), quarter_turns))
            frame = av.VideoFrame.from_ndarray(stored, format="rgb24")
            container.mux(stream.encode(frame))
            truth.append(boxes)
        container.mux(stream.encode())
    if quarter_turns:
        _set_display_turn(out, 90 * quarter_turns)
    return truth


def _set_display_turn(path: Path, degrees: int) -> None:
    """Write the clockwise turn into the video track's header matrix (ISO 14496-12
    ``tkhd``), where phones record how they were held: FFmpeg's muxer keeps it at identity."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    # After the box type: version and flags (4), then times, track id and duration (20
    # bytes in version 0, 32 in version 1), then layer, group, volume and reserved (16).
    start = at + 8 + (32 if data[at + 4] == 1 else 20) + 16
    cos, sin = round(math.cos(math.radians(degrees))), round(math.sin(math.radians(degrees)))
    matrix = (cos << 16, sin << 16, 0, -sin << 16, cos << 16, 0, 0, 0, 1 << 30)
    data[start : start + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def _covered(box: list[float], other: list[float]) -> float:
    """The share of ``box`` that ``other`` covers."""
    width = min(box[2], other[2]) - max(box[0], other[0])
    height = min(box[3], other[3]) - max(box[1], other[1])
    if width <= 0 or height <= 0:
        return 0.0
    return width * height / ((box[2] - box[0]) * (box[3] - box[1]))


def face_frames(face: Image.Image, rng: random.Random, count: int, fps: int) -> list[Frame]:
    """One face crop as a clip of its own, in memory: on a plain 480x270 background,
    drifting, growing and shrinking a little, its light changing from one level to another,
    each frame JPEG-compressed (quality 60-90)."""
    drift = (rng.uniform(-40, 40), rng.uniform(-15, 15))
    light = (rng.uniform(0.75, 1.25), rng.uniform(0.75, 1.25))
    frames = []
    for index in range(count):
        share = index / max(count - 1, 1)
        side = round(150 * (1 + 0.1 * np.sin(2 * np.pi * share)))
        canvas = Image.new("RGB", (480, 270), (118, 128, 140))
        x = round(165 + drift[0] * share + rng.uniform(-2, 2))
        y = round(60 + drift[1] * share + rng.uniform(-2, 2))
        canvas.paste(face.resize((side, side)), (x, y))
        canvas = ImageEnhance.Brightness(canvas).enhance(light[0] + (light[1] - light[0]) * share)
        buffer = io.BytesIO()
        canvas.save(buffer, "JPEG", quality=rng.randint(60, 90))
        frames.append(Frame(index, index / fps, load_image(buffer.getvalue()), float(fps)))
    return frames


def track_face_clip(
    estimator: AgeEstimator, face: Image.Image, rng: random.Random, seconds: float, fps: int = 25
) -> tuple[TrackSummary | None, list[TrackedFace]]:
    """A face crop's clip (:func:`face_frames`), tracked: the person tracked longest (None
    when no track got an age), and every face whose age was estimated, frame by frame."""
    tracker = AgeTracker(estimator)
    shown: list[TrackedFace] = []
    for frame in face_frames(face, rng, round(seconds * fps), fps):
        shown += [found for found in tracker.update(frame) if found.frame_age is not None]
    people = [person for person in tracker.finish() if person.interval is not None]
    return (max(people, key=lambda person: person.frames) if people else None), shown


def sample_faces() -> list[Image.Image]:
    """Faces from photos that installed packages ship: scikit-image's astronaut, and
    matplotlib's Grace Hopper; the third is the astronaut mirrored."""
    import matplotlib.cbook
    from skimage import data

    astronaut = Image.fromarray(data.astronaut()).crop((150, 30, 330, 210))
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        hopper = Image.open(handle).convert("RGB").crop((90, 60, 430, 400))
    return [astronaut, hopper, astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--size", default="960x540")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument(
        "--turned", type=int, default=0, choices=(0, 90, 180, 270), help="store frames turned"
    )
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    truth = make_clip(
        args.out,
        sample_faces(),
        seconds=args.seconds,
        size=(width, height),
        fps=args.fps,
        turned=args.turned,
    )
    args.out.with_suffix(".truth.json").write_text(json.dumps(truth) + "\n")


if __name__ == "__main__":
    main()
