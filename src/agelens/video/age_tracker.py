"""Frames in, tracked faces with steady ages out: for a video file or a capture loop.

>>> from agelens import AgeEstimator
>>> from agelens.video import AgeTracker, read_frames
>>> tracker = AgeTracker(AgeEstimator())
>>> for frame in read_frames("clip.mp4"):  # doctest: +SKIP
...     for face in tracker.update(frame):
...         print(face.track, face.age, face.interval)
>>> people = tracker.finish()  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from agelens.decisions.gate import GatePolicy
from agelens.estimator import AgeEstimator
from agelens.pipeline.estimates import Face, GenderEstimate
from agelens.pipeline.faces import Detection
from agelens.video.frames import Frame
from agelens.video.reads import ReadBudget
from agelens.video.steady import SteadyAge, SteadyGender
from agelens.video.tracking import Box, FaceTracker, Track


@dataclass(frozen=True, slots=True)
class TrackedFace:
    """One face in one frame: its track, and the steady values shown for that person."""

    frame: int
    time: float
    track: int
    box: Box
    age: float | None
    interval: tuple[float, float] | None
    frame_age: float | None
    #: The person's pooled apparent gender so far, when the tracker was asked for it.
    gender: GenderEstimate | None = None

    def to_dict(self) -> dict[str, Any]:
        """One line of ``agelens video --frames``."""
        found = {
            "frame": self.frame,
            "time": round(self.time, 3),
            "track": self.track,
            "box": [round(v, 1) for v in self.box],
            "age": None if self.age is None else round(self.age, 2),
            "interval": None if self.interval is None else [round(v, 1) for v in self.interval],
            "frame_age": None if self.frame_age is None else round(self.frame_age, 2),
        }
        if self.gender is not None:
            found["gender"] = self.gender.to_dict()
        return found


@dataclass(frozen=True, slots=True)
class TrackSummary:
    """One person over the video: ``agelens video --json`` prints one per line."""

    track: int
    first_frame: int
    last_frame: int
    frames: int
    age: float | None
    interval: tuple[float, float] | None
    label: str | None
    group: dict[str, Any] | None
    decision: str | None = None
    gender: GenderEstimate | None = None

    def to_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "track": self.track,
            "first_frame": self.first_frame,
            "last_frame": self.last_frame,
            "frames": self.frames,
            "age": None if self.age is None else round(self.age, 2),
            "interval": None if self.interval is None else [round(v, 1) for v in self.interval],
            "label": self.label,
            "group": self.group,
        }
        if self.decision is not None:
            found["decision"] = self.decision
        if self.gender is not None:
            found["gender"] = self.gender.to_dict()
        return found


class AgeTracker:
    """Tracks faces across frames and pools each person's age (:mod:`agelens.video.steady`).

    Faces are detected on every frame, so tracks follow them; each track's face is read
    by the age network as ``budget`` says (:mod:`agelens.video.reads`: every frame while
    the track is new, then a few times a second), on every ``every``-th frame. With
    ``policy``, each person gets the gate's decision on their steady age and their
    best-judged face. With ``gender``, each person also gets their apparent gender,
    pooled over the same reads.
    """

    def __init__(
        self,
        estimator: AgeEstimator,
        *,
        every: int = 1,
        policy: GatePolicy | None = None,
        max_missing_s: float = 4.0,
        budget: ReadBudget | None = None,
        gender: bool = False,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be 1 or more, got {every}")
        self.estimator = estimator
        self.every = every
        self.policy = policy
        self.tracker = FaceTracker(max_missing_s)
        self.budget = ReadBudget() if budget is None else budget
        self.gender = gender
        self.ages: dict[int, SteadyAge] = {}
        self.genders: dict[int, SteadyGender] = {}
        self.best_face: dict[int, Face] = {}
        self.seen: dict[int, list[int]] = {}  # track: [first frame, last frame, frames]
        self.finished: list[TrackSummary] = []

    def update(self, frame: Frame) -> list[TrackedFace]:
        """The faces of ``frame``, each with its track and its person's steady age."""
        found = self.estimator.detector.detect(frame.image)
        boxes = [face.box for face in found]
        numbers, ended = self.tracker.update(boxes, frame.time, frame.image)
        self.finished += [self._summary(track) for track in ended]
        read = self._read(frame, found, numbers) if frame.index % self.every == 0 else {}
        shown = []
        for index, (number, box) in enumerate(zip(numbers, boxes, strict=True)):
            seen = self.seen.setdefault(number, [frame.index, frame.index, 0])
            seen[1], seen[2] = frame.index, seen[2] + 1
            face = read.get(index)
            if face is not None:
                self.ages.setdefault(number, SteadyAge(self.estimator)).add(face, frame.time)
                if self.gender:
                    self.genders.setdefault(number, SteadyGender(self.estimator)).add(face)
                self._keep_best(number, face)
            steady = self.ages.get(number)
            age, interval = (steady.summary()[:2]) if steady is not None else (None, None)
            frame_age = None if face is None else face.age
            pooled = self.genders.get(number)
            gender = pooled.summary() if pooled is not None else None
            shown.append(
                TrackedFace(frame.index, frame.time, number, box, age, interval, frame_age, gender)
            )
        return shown

    def _read(self, frame: Frame, found: list[Detection], numbers: list[int]) -> dict[int, Face]:
        """The faces of ``found`` whose tracks are due a read, by index, read by the network
        at their tracks' light levels (one network run per light level)."""
        due: dict[tuple[float, ...], list[int]] = {}
        for index, number in enumerate(numbers):
            if self.budget.due(number, frame.time):
                due.setdefault(self.budget.gains(number), []).append(index)
        read: dict[int, Face] = {}
        for gains, indices in due.items():
            (faces,) = self.estimator.estimate_arrays(
                [frame.image],
                distribution=True,
                gains=gains,
                detections=[[found[index] for index in indices]],
                gender=self.gender,
            )
            read.update(zip(indices, faces, strict=True))
        for index in read:
            self.budget.read(numbers[index], frame.time)
        return read

    def decision(self, face: TrackedFace, policy: GatePolicy) -> str | None:
        """The gate's answer for ``face``'s person so far: their steady age and interval
        (as ``face`` shows them), and their best-judged face for the quality check; None
        before any estimate."""
        best = self.best_face.get(face.track)
        if best is None or face.age is None or face.interval is None:
            return None
        return policy.decide(replace(best, age=face.age, interval=face.interval)).value

    def finish(self) -> list[TrackSummary]:
        """Every person of the video, in the order their tracks started."""
        self.finished += [self._summary(track) for track in self.tracker.finish()]
        return sorted(self.finished, key=lambda s: s.track)

    def _keep_best(self, number: int, face: Face) -> None:
        """The track's face with the most pixels between the eyes: what the quality
        check judges the person by."""
        best = self.best_face.get(number)
        size = face.quality.eye_distance if face.quality else 0.0
        if best is None or size > (best.quality.eye_distance if best.quality else 0.0):
            self.best_face[number] = face

    def _summary(self, track: Track) -> TrackSummary:
        self.budget.forget(track.number)
        first, last, frames = self.seen.pop(track.number)
        steady = self.ages.pop(track.number, None)
        best = self.best_face.pop(track.number, None)
        pooled = self.genders.pop(track.number, None)
        if steady is None or best is None:
            return TrackSummary(track.number, first, last, frames, None, None, None, None)
        age, interval, group, probability = steady.summary()
        person = replace(best, age=age, interval=interval)
        decision = None if self.policy is None else self.policy.decide(person).value
        return TrackSummary(
            track.number,
            first,
            last,
            frames,
            age,
            interval,
            person.label,
            {"label": group, "probability": round(probability, 4)},
            decision,
            None if pooled is None else pooled.summary(),
        )
